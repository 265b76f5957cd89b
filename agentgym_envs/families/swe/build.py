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

import argparse
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        22
    """

    recipe: Path = RECIPE
    #: Only these packages of the recipe (all when empty).
    packages: tuple[str, ...] = ()
    instances_per_package: int = 22
    #: Mutations tried per package at most (each costs one run of its test suite).
    attempts_per_package: int = 40
    seed: int = 0
    #: A kept mutation breaks at most this many tests (a bug that breaks everything says little).
    max_failing_tests: int = 25
    limits: SandboxLimits = field(default_factory=lambda: SandboxLimits(wall_time_s=120, cpu_time_s=120))


def build_instances(
    config: BuildConfig,
    log: Callable[[str], None] = lambda _: None,
    on_package: Callable[[list[Instance]], None] = lambda _: None,
) -> list[Instance]:
    """Make instances from every (chosen) package of the recipe; ``on_package`` receives each package's as it is done."""
    specs = [s for s in load_recipe(config.recipe) if not config.packages or s.name in config.packages]
    unknown = set(config.packages) - {s.name for s in specs}
    if unknown:
        raise BuildError(f"not in the recipe: {', '.join(sorted(unknown))}")
    instances: list[Instance] = []
    for spec in specs:
        made = build_package(spec, config, log)
        on_package(made)
        instances += made
    return instances


@dataclass
class Baseline:
    """The package's test suite before any mutation: statuses, and which tests run which source line."""

    run: TestRun
    passing: set[str]
    #: (file relative to the repository, line) -> the passing tests that execute it.
    tests_of_line: dict[tuple[str, int], list[str]]
    #: Lines executed outside tests (imports, collection): a bug there breaks every test.
    import_lines: set[tuple[str, int]]


def baseline(workspace: Workspace, spec: PackageSpec) -> Baseline:
    """Run the package's whole test suite (tracing lines) before any mutation; raise :class:`BuildError` unless it passes."""
    trace_dir = workspace.folder / "trace"
    trace_dir.mkdir(exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("linetrace.py"), trace_dir / "agentgym_swe_linetrace.py")
    out = trace_dir / "lines.json"
    files = {str(workspace.repo / path): path for path in workspace._original}
    workspace.sandbox.own(trace_dir)
    prefix = (
        f"AGENTGYM_SWE_TRACE_FILES={shlex.quote(os.pathsep.join(files))} AGENTGYM_SWE_TRACE_OUT={out} "
        f"PYTHONPATH={trace_dir}:$PYTHONPATH "
    )
    run = workspace.run_tests(spec.tests, prefix=prefix, options="-p agentgym_swe_linetrace")
    failing = sorted(t for t, s in run.statuses.items() if s not in PASSING + ("SKIPPED",))
    if run.exit_code != 0 or failing or not run.statuses or not out.exists():
        detail = (
            f"{len(failing)} failing, e.g. {failing[:3]}"
            if failing
            else f"exit code {run.exit_code}, {run.stopped or ''}"
        )
        raise BuildError(
            f"{spec.key}: its tests do not pass before mutation ({detail}); refusing to build from it. "
            f"Log tail: {run.log.strip()[-300:]}"
        )
    trace = json.loads(out.read_text())
    passing = {t for t, s in run.statuses.items() if s in PASSING}
    tests_of_line: dict[tuple[str, int], list[str]] = {}
    for test, lines in trace["tests"].items():
        if test in passing:
            for file, line in lines:
                if file in files:
                    tests_of_line.setdefault((files[file], line), []).append(test)
    import_lines = {(files[f], n) for f, n in trace["import"] if f in files}
    return Baseline(run, passing, tests_of_line, import_lines)


def build_package(
    spec: PackageSpec,
    config: BuildConfig,
    log: Callable[[str], None] = lambda _: None,
    source: Path | None = None,
) -> list[Instance]:
    """The instances of one package (see the module docstring); ``source`` replaces the downloaded source tree.

    Only lines that some passing test executes (and that do not run at import) are mutated, and a mutation
    runs only the tests that execute its line: the others run the same code as before, so they still pass.
    """
    probe = Instance(f"{spec.name}__baseline", spec.repo, spec.version, "", "", (), ())
    workspace = Workspace.create(probe, config.limits, spec=spec, source=source)
    try:
        before = baseline(workspace, spec)
        log(f"{spec.key}: {len(before.passing)} tests pass before mutation")
        candidates = [
            (path, m)
            for path in workspace._original
            for m in candidate_mutations(workspace._original[path])
            if (path, m.line) in before.tests_of_line and (path, m.line) not in before.import_lines
        ]
        random.Random(f"{config.seed}-{spec.key}").shuffle(candidates)
        kept: list[Instance] = []
        for attempt, (path, mutation) in enumerate(candidates[: config.attempts_per_package]):
            if len(kept) >= config.instances_per_package:
                break
            instance = _try(workspace, spec, path, mutation, before, config)
            log(f"{spec.key} [{attempt + 1}] {path}: {mutation.describe()} -> {'kept' if instance else 'dropped'}")
            if instance is not None:
                kept.append(instance)
        return kept
    finally:
        workspace.close()


def _try(
    workspace: Workspace, spec: PackageSpec, path: str, mutation: Mutation, before: Baseline, config: BuildConfig
) -> Instance | None:
    original = workspace._original[path]
    buggy = mutation.apply(original)
    if buggy.count(mutation.after.strip()) != 1:  # the structured expert's replace() needs a unique line
        return None
    covering = sorted(before.tests_of_line[(path, mutation.line)])
    if len(covering) > 400:  # a line that everything runs: too costly to select, and the bug would break too much
        return None
    target = workspace.repo / path
    target.write_text(buggy)
    try:
        run = workspace.run_tests(covering)
    finally:
        target.write_text(original)
    if run.stopped is not None:
        return None
    broken = sorted(t for t in covering if run.statuses.get(t) not in PASSING)
    if not broken or len(broken) > config.max_failing_tests:
        return None
    files = sorted({t.split("::")[0] for t in broken})
    still = sorted(t for t in before.passing if t.split("::")[0] in files and t not in broken)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``agentgym swe build``."""
    parser.add_argument("--packages", nargs="*", default=[], help="only these packages of the recipe (default: all)")
    parser.add_argument("--instances-per-package", type=int, help="default: the recipe's")
    parser.add_argument("--attempts-per-package", type=int, help="default: the recipe's")
    parser.add_argument("--seed", type=int, help="default: the recipe's")
    parser.add_argument("--out", type=Path, help="JSON lines file (default: <cache>/swe/built.jsonl)")
    parser.add_argument("--quiet", action="store_true", help="no line per mutation")


def run(args: argparse.Namespace) -> int:
    """Build instances as ``args`` say and write them as JSON lines, a package at a time."""
    from agentgym_envs.cache import cache_dir

    recipe = json.loads(RECIPE.read_text())
    config = BuildConfig(
        packages=tuple(args.packages),
        instances_per_package=args.instances_per_package or recipe["instances_per_package"],
        attempts_per_package=args.attempts_per_package or recipe["attempts_per_package"],
        seed=recipe["seed"] if args.seed is None else args.seed,
    )
    out = args.out or cache_dir("swe") / "built.jsonl"
    out.write_text("")

    def save(made: list[Instance]) -> None:  # a package at a time, so that a long build keeps what it made
        with out.open("a") as handle:
            handle.writelines(json.dumps(i.to_record(), sort_keys=True) + "\n" for i in made)

    try:
        instances = build_instances(
            config, log=(lambda _: None) if args.quiet else (lambda m: print(m, flush=True)), on_package=save
        )
    except (BuildError, GenerationError) as exc:
        print(f"agentgym swe build: {exc}", file=sys.stderr)
        return 1
    print(f"{len(instances)} instances -> {out}")
    return 0


def add_subcommand(sub: Any) -> None:
    """``agentgym swe build`` on the ``agentgym`` command line."""
    swe = sub.add_parser("swe", help="the software-engineering family's tasks")
    swe_sub = swe.add_subparsers(dest="swe_command", required=True)
    build = swe_sub.add_parser(
        "build",
        help="inject bugs into the recipe's packages and write the instances",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(build)
    build.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agentgym_envs.families.swe.build``: the same as ``agentgym swe build``."""
    parser = argparse.ArgumentParser(prog="agentgym swe build", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
