"""An episode's folder: the buggy repository, its sandbox, its test runs, its diff and its grade.

Example:
    >>> from agentgym_envs.families.swe.tasks import load_instances, MANIFEST
    >>> ws = Workspace.create(load_instances(MANIFEST)[0])   # doctest: +SKIP
    >>> ws.grade().resolved                                   # doctest: +SKIP
    False
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentgym_envs.errors import DataNotFoundError, GenerationError
from agentgym_envs.families.swe.sandbox import CommandResult, Sandbox, SandboxLimits
from agentgym_envs.families.swe.tasks import (
    Grade,
    Instance,
    PackageSpec,
    apply_patch,
    fetch_source,
    file_diff,
    grade,
    package_of,
    parse_test_log,
    runner_site,
)

#: The pytest options of every graded run: ``-rA`` lists every test's outcome (what swebench's parser reads).
PYTEST_OPTIONS = "-rA -p no:cacheprovider -o addopts= --tb=short -q"


def python_executable() -> str:
    """The interpreter that runs tests in the sandbox (this one's base interpreter; site-packages stay hidden)."""
    return os.path.realpath(sys.executable)


def pytest_command(test_paths: Sequence[str], options: str = "", isolated: bool = True) -> str:
    """The shell command that runs ``test_paths`` with pytest in a sandbox prepared by :class:`Workspace`.

    ``isolated`` runs ``python -S`` (the embedded packages: site-packages hidden); a user's repository runs
    with its environment's ``python``.

    Example:
        >>> pytest_command(["tests/test_a.py"])
        'python -S -m pytest -rA -p no:cacheprovider -o addopts= --tb=short -q tests/test_a.py'
    """
    python = "python -S" if isolated else "python"
    return " ".join([f"{python} -m pytest", PYTEST_OPTIONS, options, *(shlex.quote(p) for p in test_paths)]).replace(
        "  ", " "
    )


@dataclass
class TestRun:
    """A test run's log, exit code, status map (swebench's parser) and why it was stopped, if it was."""

    log: str
    exit_code: int | None
    statuses: dict[str, str]
    stopped: str | None = None


class Workspace:
    """One episode's copy of a repository under a sandbox; :meth:`close` deletes it.

    The folder holds ``repo/`` (what the agent sees and edits).  Grading copies the agent's edits of
    the package's source files onto a fresh pristine tree (so edited tests or an added ``conftest.py``
    do not count) and runs the instance's tests there.
    """

    def __init__(
        self,
        instance: Instance,
        spec: PackageSpec | None,
        folder: Path,
        repo: Path,
        limits: SandboxLimits,
        source: Path | None = None,
    ):
        self.instance = instance
        self.source = source
        self.spec = spec
        self.folder = folder
        self.repo = repo
        self.limits = limits
        self.sandbox = self._sandbox(folder)

    # ---- creation --------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        instance: Instance,
        limits: SandboxLimits | None = None,
        spec: PackageSpec | None = None,
        source: Path | None = None,
    ) -> Workspace:
        """Copy the instance's repository into a new episode folder and make the bug.

        ``spec`` and ``source`` override the recipe's package and its downloaded source tree (the build's tests).
        """
        limits = limits or SandboxLimits()
        spec = spec or package_of(instance)
        folder = Path(tempfile.mkdtemp(prefix="agentgym-swe-"))
        repo = folder / "repo"
        try:
            if spec is not None:
                shutil.copytree(source or fetch_source(spec), repo, symlinks=True)
                apply_patch(repo, instance.bug_patch)
            else:
                _copy_user_repo(instance, repo)
            workspace = cls(instance, spec, folder, repo, limits, source)
            workspace._snapshot_sources()
            workspace.sandbox.own(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return workspace

    def _sandbox(self, folder: Path) -> Sandbox:
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        read_only: list[Path] = []
        if self.spec is not None:
            runner = runner_site()
            read_only.append(runner)
            bin_dir = runner.parent / f"{runner.name}-bin"
            _python_shims(bin_dir)
            read_only.append(bin_dir)
            env["PATH"] = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
            env["PYTHONPATH"] = f"{folder / 'repo' / self.spec.pythonpath}:{runner}"
        else:  # a user's repository runs in the user's environment (default: this one), shown read-only
            python = Path(self.instance.python or sys.executable)
            read_only.append(python.parent.parent)
            env["PATH"] = f"{python.parent}:/usr/local/bin:/usr/bin:/bin"
        return Sandbox(folder, self.limits, read_only, env)

    # ---- the agent's side ------------------------------------------------------------------------
    def run(self, command: str) -> CommandResult:
        """Run one of the agent's shell commands in ``repo/``."""
        return self.sandbox.run(command, cwd=self.repo)

    def diff(self) -> str:
        """The agent's changes to the repository's source files, as a ``git diff``-style patch."""
        return "".join(
            file_diff(path, before, _read(self.repo / path)) for path, before in sorted(self._original.items())
        )

    def has_patch(self, patch: str) -> bool:
        """Whether the repository's source files are what ``patch`` makes of the buggy ones (the expert's check)."""
        with tempfile.TemporaryDirectory(prefix="agentgym-swe-patch-") as tmp:
            for path, text in self._original.items():
                (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / path).write_text(text)
            try:
                apply_patch(Path(tmp), patch)
            except (GenerationError, OSError):
                return False
            return all(_read(Path(tmp) / path) == _read(self.repo / path) for path in self._original)

    # ---- tests and grading -----------------------------------------------------------------------
    def run_tests(
        self, test_paths: Sequence[str] | None = None, tree: Path | None = None, prefix: str = "", options: str = ""
    ) -> TestRun:
        """Run the instance's test files (or ``test_paths``, files or test ids) in ``tree`` (default: ``repo/``).

        ``prefix`` goes before the command (environment assignments), ``options`` after pytest's own.
        """
        tree = tree or self.repo
        paths = list(test_paths or self.instance.test_files or self._default_test_paths())
        command = prefix + (self.instance.test_cmd or pytest_command(paths, options, isolated=self.spec is not None))
        if self.spec is not None and tree != self.repo:  # the grading copy has its own PYTHONPATH
            command = f"PYTHONPATH={shlex.quote(str(tree / self.spec.pythonpath))}:$PYTHONPATH {command}"
        test_limits = SandboxLimits(**{**self.limits.__dict__, "wall_time_s": max(self.limits.wall_time_s, 120.0)})
        result = Sandbox(self.folder, test_limits, self.sandbox.read_only, self.sandbox.env).run(command, cwd=tree)
        return TestRun(result.output, result.exit_code, parse_test_log(result.output), result.stopped)

    def grade(self) -> tuple[Grade, TestRun]:
        """Grade the agent's source edits: on a fresh tree, with the instance's pristine tests and test patch."""
        tree = self.folder / "grading"
        shutil.rmtree(tree, ignore_errors=True)
        try:
            self._fresh_tree(tree)
            for path in self._original:
                target, edited = tree / path, self.repo / path
                if edited.is_file():
                    shutil.copyfile(edited, target)
                elif target.exists():
                    target.unlink()
            if self.instance.test_patch:
                apply_patch(tree, self.instance.test_patch)
            self.sandbox.own(tree)
            run = self.run_tests(tree=tree)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        return grade(self.instance, run.statuses), run

    def close(self) -> None:
        """Delete the episode folder (whatever the sandbox's processes left there is gone with it)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---- internals -------------------------------------------------------------------------------
    def _default_test_paths(self) -> list[str]:
        return sorted({t.split("::")[0] for t in (*self.instance.fail_to_pass, *self.instance.pass_to_pass)})

    def _source_paths(self) -> list[str]:
        """The files whose edits count: the recipe's sources (tests excluded), or the gold patch's files."""
        if self.spec is None:
            from unidiff import PatchSet

            return sorted({p.path for p in PatchSet(self.instance.patch)})
        files = []
        for source in self.spec.sources:
            path = self.repo / source
            found = [path] if path.is_file() else sorted(path.rglob("*.py"))
            files += [str(f.relative_to(self.repo)) for f in found if "tests" not in f.relative_to(self.repo).parts]
        return files

    def _snapshot_sources(self) -> None:
        self._original = {path: _read(self.repo / path) for path in self._source_paths()}

    def _fresh_tree(self, tree: Path) -> None:
        if self.spec is not None:
            shutil.copytree(self.source or fetch_source(self.spec), tree, symlinks=True)
        else:
            _copy_user_repo(self.instance, tree)


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _python_shims(bin_dir: Path) -> None:
    """``python`` / ``python3`` / ``pytest`` in the sandbox: this interpreter with ``-S`` (site-packages hidden)."""
    if (bin_dir / "pytest").exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=".shims-", dir=bin_dir.parent))
    python = python_executable()
    for name, line in (
        ("python", f'exec {python} -S "$@"'),
        ("python3", f'exec {python} -S "$@"'),
        ("pytest", f'exec {python} -S -m pytest "$@"'),
    ):
        (tmp / name).write_text(f"#!/bin/sh\n{line}\n")
        (tmp / name).chmod(0o755)
    tmp.chmod(0o755)
    try:
        tmp.rename(bin_dir)
    except OSError:  # another process made them first
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_user_repo(instance: Instance, target: Path) -> None:
    """A user's instance: its local repository (``repo_path``) at ``base_commit``, with the bug in place."""
    if not instance.repo_path or not Path(instance.repo_path).is_dir():
        raise DataNotFoundError(
            f"instance {instance.instance_id}: no local repository at repo_path={instance.repo_path!r}"
        )
    source = Path(instance.repo_path)
    if (source / ".git").exists() and instance.base_commit:
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(source), str(target)], check=True, timeout=600)
        result = subprocess.run(
            ["git", "-C", str(target), "checkout", "--quiet", instance.base_commit],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise GenerationError(
                f"instance {instance.instance_id}: cannot check out {instance.base_commit}: {result.stderr.strip()}"
            )
    else:
        shutil.copytree(source, target, symlinks=True)
    if instance.bug_patch:
        apply_patch(target, instance.bug_patch)
