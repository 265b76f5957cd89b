"""``agentgym swe build``: make task instances by injecting bugs into the recipe's packages (SWE-smith's method).

For each pinned package: download its source distribution (checked against the recipe's sha256),
run its test suite in the sandbox (a package whose tests do not all pass is refused), then try one
procedural mutation at a time (:mod:`.mutations`, in a seeded order) and keep those after which at
least one test fails and the other tests still pass.  Each kept mutation becomes an :class:`Instance`:
``bug_patch`` makes the bug, ``patch`` (the gold patch) undoes it, FAIL_TO_PASS are the tests it
breaks, PASS_TO_PASS the other tests of their files, and the problem statement is written from the
failing tests and the first failure's traceback.

Example:
    >>> config = BuildConfig(packages=("inflection",), instances_per_package=2)  # doctest: +SKIP
    >>> instances = build_instances(config)                                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentgym_envs.errors import AgentGymError, GenerationError
from agentgym_envs.families.swe.mutations import Mutation, candidate_mutations
from agentgym_envs.families.swe.sandbox import SandboxLimits
from agentgym_envs.families.swe.tasks import (
    RECIPE,
    Instance,
    PackageSpec,
    _hash_split,
    file_diff,
    load_recipe,
    write_instances,
)
from agentgym_envs.families.swe.workspace import TestRun, Workspace

PASSING = ("PASSED", "XFAIL")


class BuildError(AgentGymError, RuntimeError):
    """A package cannot be used to make instances (its tests fail before any mutation, say)."""


@dataclass(frozen=True)
class BuildConfig:
    """What ``agentgym swe build`` makes.

    Example:
        >>> BuildConfig(packages=("six",)).instances_per_package
        24
    """

    recipe: Path = RECIPE
    #: Only these packages of the recipe (all when empty).
    packages: tuple[str, ...] = ()
    instances_per_package: int = 24
    #: Mutations tried per package at most (each costs one run of its test suite).
    attempts_per_package: int = 60
    seed: int = 0
    #: A kept mutation breaks at most this many tests (a bug that breaks everything says little).
    max_failing_tests: int = 25
    limits: SandboxLimits = field(default_factory=lambda: SandboxLimits(wall_time_s=120, cpu_time_s=120))


def build_instances(config: BuildConfig, log: Callable[[str], None] = lambda _: None) -> list[Instance]:
    """Make instances from every (chosen) package of the recipe."""
    specs = [s for s in load_recipe(config.recipe) if not config.packages or s.name in config.packages]
    unknown = set(config.packages) - {s.name for s in specs}
    if unknown:
        raise BuildError(f"not in the recipe: {', '.join(sorted(unknown))}")
    instances: list[Instance] = []
    for spec in specs:
        instances += build_package(spec, config, log)
    return instances


def baseline(workspace: Workspace, spec: PackageSpec) -> TestRun:
    """Run the package's whole test suite before any mutation; raise :class:`BuildError` unless it passes."""
    run = workspace.run_tests(spec.tests)
    failing = sorted(t for t, s in run.statuses.items() if s not in PASSING + ("SKIPPED",))
    if run.exit_code != 0 or failing or not run.statuses:
        detail = (
            f"{len(failing)} failing, e.g. {failing[:3]}"
            if failing
            else f"exit code {run.exit_code}, {run.stopped or ''}"
        )
        raise BuildError(
            f"{spec.key}: its tests do not pass before mutation ({detail}); refusing to build from it. "
            f"Log tail: {run.log.strip()[-300:]}"
        )
    return run


def build_package(
    spec: PackageSpec, config: BuildConfig, log: Callable[[str], None] = lambda _: None
) -> list[Instance]:
    """The instances of one package (see the module docstring)."""
    probe = Instance(f"{spec.name}__baseline", spec.repo, spec.version, "", "", (), ())
    workspace = Workspace.create(probe, config.limits)
    try:
        before = baseline(workspace, spec)
        passing = {t for t, s in before.statuses.items() if s in PASSING}
        log(f"{spec.key}: {len(passing)} tests pass before mutation")
        candidates = [(path, m) for path in workspace._original for m in candidate_mutations(workspace._original[path])]
        random.Random(f"{config.seed}-{spec.key}").shuffle(candidates)
        kept: list[Instance] = []
        for attempt, (path, mutation) in enumerate(candidates[: config.attempts_per_package]):
            if len(kept) >= config.instances_per_package:
                break
            instance = _try(workspace, spec, path, mutation, passing, config)
            log(f"{spec.key} [{attempt + 1}] {path}: {mutation.describe()} -> {'kept' if instance else 'dropped'}")
            if instance is not None:
                kept.append(instance)
        return kept
    finally:
        workspace.close()


def _try(
    workspace: Workspace, spec: PackageSpec, path: str, mutation: Mutation, passing: set[str], config: BuildConfig
) -> Instance | None:
    original = workspace._original[path]
    buggy = mutation.apply(original)
    if buggy.count(mutation.after.strip()) != 1:  # the structured expert's replace() needs a unique line
        return None
    target = workspace.repo / path
    target.write_text(buggy)
    try:
        run = workspace.run_tests(spec.tests)
    finally:
        target.write_text(original)
    if run.stopped is not None:
        return None
    broken = sorted(t for t in passing if run.statuses.get(t) not in PASSING)
    if not broken or len(broken) > config.max_failing_tests:
        return None
    files = sorted({t.split("::")[0] for t in broken})
    still = sorted(t for t in passing if t.split("::")[0] in files and t not in broken)
    if not still:
        return None
    bug_patch = file_diff(path, original, buggy)
    digest = hashlib.sha256(bug_patch.encode()).hexdigest()[:8]
    return Instance(
        instance_id=f"{spec.name}__{spec.version}-{digest}",
        repo=spec.repo,
        base_commit=spec.version,
        problem_statement=problem_statement(spec, broken, run.log),
        patch=file_diff(path, buggy, original),
        fail_to_pass=tuple(broken),
        pass_to_pass=tuple(still),
        split=_hash_split(f"{spec.name}__{spec.version}-{digest}"),
        bug_patch=bug_patch,
        test_files=tuple(files),
        extra={"mutation": mutation.kind},
    )


_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$", re.M)


def problem_statement(spec: PackageSpec, failing: Sequence[str], log: str, max_chars: int = 1500) -> str:
    """An issue written from the failing tests: which tests fail and the first failure's traceback.

    Example:
        >>> spec = PackageSpec("six", "1.17.0", "0" * 64, ("six.py",), ("test_six.py",))
        >>> print(problem_statement(spec, ["test_six.py::test_a"], "").splitlines()[0])
        six 1.17.0: 1 test fails
    """
    names = "\n".join(f"  - {t}" for t in failing[:10]) + (
        f"\n  - ... and {len(failing) - 10} more" if len(failing) > 10 else ""
    )
    text = (
        f"{spec.name} {spec.version}: {len(failing)} test{'s' if len(failing) != 1 else ''} "
        f"fail{'s' if len(failing) == 1 else ''}\n\nThese tests of the package's own suite fail:\n{names}\n"
    )
    traceback = _first_failure(failing[0].split("::")[-1], log)
    if traceback:
        text += f"\nThe first failure:\n{traceback[:max_chars]}\n"
    return (
        text
        + "\nFix the library's source code (not the tests) so that these tests pass and every other test still passes.\n"
    )


def _first_failure(name: str, log: str) -> str:
    headers = list(_SECTION.finditer(log))
    for i, header in enumerate(headers):
        if header.group(1).split(".")[-1] == name or header.group(1).endswith(name):
            end = headers[i + 1].start() if i + 1 < len(headers) else len(log)
            section = log[header.end() : end]
            section = section.split("=" * 10)[0]
            return section.strip("\n")
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """``agentgym swe build``: build instances and write them as JSON lines (default: the cache)."""
    import argparse

    from agentgym_envs.cache import cache_dir

    parser = argparse.ArgumentParser(prog="agentgym swe build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", nargs="*", default=[], help="only these packages of the recipe")
    parser.add_argument("--instances-per-package", type=int, default=None)
    parser.add_argument("--attempts-per-package", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file (default: <cache>/swe/built.jsonl)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    recipe = json.loads(RECIPE.read_text())
    config = BuildConfig(
        packages=tuple(args.packages),
        instances_per_package=args.instances_per_package or recipe["instances_per_package"],
        attempts_per_package=args.attempts_per_package or recipe["attempts_per_package"],
        seed=recipe["seed"] if args.seed is None else args.seed,
    )
    out = args.out or cache_dir("swe") / "built.jsonl"
    try:
        instances = build_instances(config, log=(lambda _: None) if args.quiet else (lambda m: print(m, flush=True)))
    except (BuildError, GenerationError) as exc:
        print(f"agentgym swe build: {exc}", file=sys.stderr)
        return 1
    tmp = out.with_suffix(".tmp")
    write_instances(tmp, instances)
    shutil.move(tmp, out)
    print(f"{len(instances)} instances -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
