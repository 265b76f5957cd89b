"""Task instances (the SWE-bench / SWE-Gym schema), the pinned package recipe, sources and grading.

An :class:`Instance` is one line of a SWE-bench-style JSON lines file: ``instance_id``, ``repo``,
``base_commit``, ``problem_statement``, ``patch`` (the gold fix), ``test_patch``, ``FAIL_TO_PASS`` and
``PASS_TO_PASS`` (lists, or JSON-encoded lists as on the Hugging Face hub), plus this project's
optional fields: ``split``, ``bug_patch`` (applied to a pristine source to make the buggy repository),
``test_files``, ``test_cmd``, ``repo_path`` and ``python``.

Grading uses ``swebench``'s own pieces: its pytest log parser (``parse_log_pytest``) and its report
(``get_eval_tests_report`` / ``get_resolution_status``).

Example:
    >>> [p.name for p in load_recipe()][:2]
    ['inflection', 'six']
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym_envs.cache import build_once, cache_dir
from agentgym_envs.errors import DataNotFoundError, GenerationError

DATA = Path(__file__).resolve().parents[2] / "data" / "swe"
MANIFEST = DATA / "manifest.jsonl"
RECIPE = DATA / "recipe.json"
#: What the test runner needs besides the standard library (copied from this interpreter's installation).
RUNNER_DISTRIBUTIONS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")


# ---- instances ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    """One task: a repository with a bug, its problem statement, the gold patch and the tests that grade it.

    Example:
        >>> inst = Instance.from_record({"instance_id": "x__y-1", "repo": "x/y", "base_commit": "abc",
        ...     "problem_statement": "p", "patch": "", "FAIL_TO_PASS": '["t::a"]', "PASS_TO_PASS": []})
        >>> inst.fail_to_pass, inst.split
        (('t::a',), 'test')
    """

    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    test_patch: str = ""
    split: str = "test"
    bug_patch: str = ""
    test_files: tuple[str, ...] = ()
    test_cmd: str | None = None
    repo_path: str | None = None
    python: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Instance:
        """Read a SWE-bench / SWE-Gym record (test lists as lists or JSON strings); a missing field is a clear error."""
        missing = [k for k in ("instance_id", "repo", "problem_statement", "patch", "FAIL_TO_PASS") if k not in record]
        if missing:
            raise GenerationError(f"instance {record.get('instance_id', '?')!r} lacks {', '.join(missing)}")
        known = {
            "instance_id",
            "repo",
            "base_commit",
            "problem_statement",
            "patch",
            "test_patch",
            "FAIL_TO_PASS",
            "PASS_TO_PASS",
            "split",
            "bug_patch",
            "test_files",
            "test_cmd",
            "repo_path",
            "python",
        }
        return cls(
            instance_id=str(record["instance_id"]),
            repo=str(record["repo"]),
            base_commit=str(record.get("base_commit", "")),
            problem_statement=str(record["problem_statement"]),
            patch=str(record["patch"]),
            fail_to_pass=_test_list(record["FAIL_TO_PASS"]),
            pass_to_pass=_test_list(record.get("PASS_TO_PASS", [])),
            test_patch=str(record.get("test_patch") or ""),
            split=str(record.get("split") or _hash_split(str(record["instance_id"]))),
            bug_patch=str(record.get("bug_patch") or ""),
            test_files=tuple(record.get("test_files") or ()),
            test_cmd=record.get("test_cmd"),
            repo_path=record.get("repo_path"),
            python=record.get("python"),
            extra={k: v for k, v in record.items() if k not in known},
        )

    def to_record(self) -> dict[str, Any]:
        """The JSON lines record (test lists as lists)."""
        record = {
            "instance_id": self.instance_id,
            "repo": self.repo,
            "base_commit": self.base_commit,
            "problem_statement": self.problem_statement,
            "patch": self.patch,
            "test_patch": self.test_patch,
            "FAIL_TO_PASS": list(self.fail_to_pass),
            "PASS_TO_PASS": list(self.pass_to_pass),
            "split": self.split,
            "bug_patch": self.bug_patch,
            "test_files": list(self.test_files),
        }
        for key in ("test_cmd", "repo_path", "python"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        return {**record, **dict(self.extra)}


def _test_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return tuple(str(v) for v in value)


def _hash_split(instance_id: str) -> str:
    """80 % train, 10 % valid, 10 % test, by a hash of the id (stable across runs and machines)."""
    bucket = int(hashlib.sha256(instance_id.encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def load_instances(path: str | Path) -> list[Instance]:
    """Read a JSON lines file of instances; a malformed line is a :class:`GenerationError` naming the line.

    Example:
        >>> len(load_instances(MANIFEST)) >= 100
        True
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"no instance file at {path}")
    instances = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GenerationError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise GenerationError(f"{path}:{number}: not a JSON object")
        instances.append(Instance.from_record(record))
    return instances


def write_instances(path: Path, instances: Iterable[Instance]) -> None:
    """Write instances as JSON lines (the manifest's format)."""
    path.write_text("".join(json.dumps(i.to_record(), sort_keys=True) + "\n" for i in instances))


# ---- the recipe: pinned packages --------------------------------------------------------------------------
@dataclass(frozen=True)
class PackageSpec:
    """A package of the embedded default, pinned by version and the sha256 of its source distribution.

    ``pythonpath`` is the folder that goes on ``PYTHONPATH`` (``"."`` or ``"src"``), ``sources`` the files
    and folders that may be mutated (and that an agent's fix is taken from), ``tests`` the test files and
    folders that the build runs.

    Example:
        >>> PackageSpec("six", "1.17.0", "0" * 64, sources=("six.py",), tests=("test_six.py",)).repo
        'pypi/six'
    """

    name: str
    version: str
    sha256: str
    sources: tuple[str, ...]
    tests: tuple[str, ...]
    pythonpath: str = "."

    @property
    def repo(self) -> str:
        return f"pypi/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def load_recipe(path: Path = RECIPE) -> list[PackageSpec]:
    """The pinned packages of ``recipe.json``."""
    raw = json.loads(Path(path).read_text())
    return [
        PackageSpec(
            p["name"], p["version"], p["sha256"], tuple(p["sources"]), tuple(p["tests"]), p.get("pythonpath", ".")
        )
        for p in raw["packages"]
    ]


def package_of(instance: Instance, recipe: Sequence[PackageSpec] | None = None) -> PackageSpec | None:
    """The recipe's package an instance was built from (``repo`` ``pypi/<name>`` at ``base_commit`` ``<version>``)."""
    for spec in recipe if recipe is not None else load_recipe():
        if spec.repo == instance.repo and spec.version == instance.base_commit:
            return spec
    return None


def fetch_source(spec: PackageSpec) -> Path:
    """The package's pristine source tree in the cache, downloaded with pip and checked against the pinned sha256.

    Example:
        >>> fetch_source(load_recipe()[0]).name  # doctest: +SKIP
        'inflection-0.5.1'
    """
    return build_once(cache_dir("swe", "sources") / spec.key, lambda tmp: _download(spec, tmp))


def _download(spec: PackageSpec, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="agentgym-swe-dl-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            tmp,
            f"{spec.name}=={spec.version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise DataNotFoundError(f"could not download the source of {spec.key}: {result.stderr.strip()[-300:]}")
        digest = hashlib.sha256(archives[0].read_bytes()).hexdigest()
        if digest != spec.sha256:
            raise DataNotFoundError(f"{archives[0].name} has sha256 {digest}, the recipe pins {spec.sha256}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(tmp, filter="data")
        (top,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        shutil.copytree(top, target)


def runner_site() -> Path:
    """A folder holding pytest and its dependencies (copied from this installation) for ``python -S`` test runs.

    The sandbox hides site-packages, so that tests import the repository under repair and nothing else.
    """
    version = importlib.metadata.version("pytest")
    return build_once(
        cache_dir("swe", "runner") / f"pytest-{version}-py{sys.version_info[0]}{sys.version_info[1]}", _copy_runner
    )


def _copy_runner(target: Path) -> None:
    for name in RUNNER_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or ():
            parts = Path(file).parts
            if not parts or ".." in parts or "__pycache__" in parts or parts[0].endswith(".dist-info"):
                continue
            source = Path(dist.locate_file(file))
            if source.is_file():
                (target / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / file)


# ---- patches ------------------------------------------------------------------------------------------
def file_diff(path: str, before: str, after: str) -> str:
    """A ``git diff``-style unified diff of one file (``a/`` and ``b/`` prefixes, 3 lines of context).

    Example:
        >>> print(file_diff("m.py", "x = 1\\n", "x = 2\\n"), end="")
        diff --git a/m.py b/m.py
        --- a/m.py
        +++ b/m.py
        @@ -1 +1 @@
        -x = 1
        +x = 2
    """
    import difflib

    if before == after:
        return ""
    lines = difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}")
    body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return f"diff --git a/{path} b/{path}\n{body}"


def apply_patch(root: Path, patch: str) -> None:
    """Apply a unified diff (paths with ``a/`` / ``b/`` prefixes) to the tree at ``root``; context must match exactly.

    Raises :class:`GenerationError` when a hunk does not apply.
    """
    from unidiff import PatchSet

    for patched in PatchSet(patch):
        path = root / patched.path
        lines = path.read_text().splitlines(True) if path.exists() else []
        offset = 0
        for hunk in patched:
            start = hunk.source_start - 1 + offset if hunk.source_length else hunk.source_start + offset
            expected = [line.value for line in hunk if line.is_context or line.is_removed]
            if lines[start : start + len(expected)] != expected:
                raise GenerationError(
                    f"a hunk of the patch does not apply to {patched.path} at line {hunk.source_start}"
                )
            replacement = [line.value for line in hunk if line.is_context or line.is_added]
            lines[start : start + len(expected)] = replacement
            offset += len(replacement) - len(expected)
        path.write_text("".join(lines))


# ---- grading --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grade:
    """The outcome of one graded test run (the same decision as swebench's ``get_resolution_status``)."""

    resolved: bool
    status: str
    passed: tuple[str, ...]
    failed: tuple[str, ...]

    @property
    def fraction(self) -> float:
        """The fraction of FAIL_TO_PASS and PASS_TO_PASS tests that pass (the dense reward)."""
        total = len(self.passed) + len(self.failed)
        return len(self.passed) / total if total else 1.0


def parse_test_log(log: str) -> dict[str, str]:
    """Test id -> status (``PASSED``, ``FAILED``, ...) from a ``pytest -rA`` log, with swebench's parser.

    Example:
        >>> parse_test_log("PASSED t.py::test_a\\nFAILED t.py::test_b - assert 0")
        {'t.py::test_a': 'PASSED', 't.py::test_b': 'FAILED'}
    """
    from swebench.harness.log_parsers.python import parse_log_pytest

    return parse_log_pytest(log, None)


def grade(instance: Instance, status_map: Mapping[str, str]) -> Grade:
    """Grade a status map against the instance's FAIL_TO_PASS and PASS_TO_PASS with swebench's report.

    Example:
        >>> inst = Instance("i", "r", "c", "p", "", ("t::a",), ("t::b",))
        >>> grade(inst, {"t::a": "PASSED", "t::b": "PASSED"}).resolved
        True
        >>> grade(inst, {"t::a": "FAILED", "t::b": "PASSED"}).fraction
        0.5
    """
    from swebench.harness.constants import FAIL_TO_PASS, PASS_TO_PASS, ResolvedStatus
    from swebench.harness.grading import get_eval_tests_report, get_resolution_status

    gold = {FAIL_TO_PASS: list(instance.fail_to_pass), PASS_TO_PASS: list(instance.pass_to_pass)}
    report = get_eval_tests_report(dict(status_map), gold)
    status = get_resolution_status(report)
    passed = tuple(report[FAIL_TO_PASS]["success"] + report[PASS_TO_PASS]["success"])
    counted = set(passed)
    failed = tuple(t for t in (*instance.fail_to_pass, *instance.pass_to_pass) if t not in counted)
    return Grade(status == ResolvedStatus.FULL.value, status, passed, failed)
