"""The software-engineering environment: repair a repository in a sandbox, graded by its own tests.

Example:
    >>> format_output("x" * 30, exit_code=0, stopped=None, max_chars=20).splitlines()[2]
    '<output_head>'
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.errors import ExpertUnavailableError, UnknownTaskError
from agentgym_envs.families.swe.sandbox import SandboxLimits, check_sandbox
from agentgym_envs.families.swe.tasks import MANIFEST, Instance, load_instances
from agentgym_envs.families.swe.workspace import Workspace
from agentgym_envs.parsing import ToolCall, ToolSpec

BASH_TOOL = ToolSpec("bash", ("command",), "Run one shell command (a single line) in the repository.")
VIEW_TOOL = ToolSpec("view", ("path",), "Show a file of the repository with line numbers.")
SEARCH_TOOL = ToolSpec(
    "search", ("pattern",), "Search the repository's Python files for a regular expression (grep -rn)."
)
REPLACE_TOOL = ToolSpec(
    "replace", ("path", "old", "new"), "Replace the only occurrence of the text old by new in a file."
)
RUN_TESTS_TOOL = ToolSpec("run_tests", (), "Run the test files of the failing tests.")
SUBMIT_TOOL = ToolSpec("submit", (), "Submit the repository as it is for grading; ends the episode.")
SHELL_TOOLS = (BASH_TOOL,)
STRUCTURED_TOOLS = (VIEW_TOOL, SEARCH_TOOL, REPLACE_TOOL, RUN_TESTS_TOOL, SUBMIT_TOOL)
#: Shell commands that submit (the second is mini-swe-agent's).
SUBMIT_COMMANDS = ("submit", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")
DEFAULT_MAX_STEPS = 40
DEFAULT_MAX_OUTPUT_CHARS = 10_000


def format_output(
    output: str, exit_code: int | None, stopped: str | None, max_chars: int, limits: SandboxLimits | None = None
) -> str:
    """A command's observation (mini-swe-agent's layout): exit code, then the output, its middle cut past ``max_chars``.

    Example:
        >>> print(format_output("hi\\n", exit_code=0, stopped=None, max_chars=100))
        <returncode>0</returncode>
        <output>
        hi
        </output>
    """
    limits = limits or SandboxLimits()
    output = printable(output)
    if len(output) > max_chars:
        half = max_chars // 2
        output = (
            f"<output_head>\n{output[:half]}\n</output_head>\n<elided_chars>{len(output) - 2 * half} characters "
            f"elided</elided_chars>\n<output_tail>\n{output[-half:]}\n</output_tail>\n"
        )
    if stopped == "time_limit":
        head = (
            f"<stopped>the command ran longer than {limits.wall_time_s:g} s and was killed, with every process "
            "it started</stopped>"
        )
    elif stopped == "output_limit":
        head = (
            f"<stopped>the command printed more than {limits.output_bytes} bytes and was killed, with every process "
            "it started</stopped>"
        )
    else:
        head = f"<returncode>{exit_code}</returncode>"
    return f"{head}\n<output>\n{output.rstrip(chr(10))}\n</output>" if output else f"{head}\n<output>\n</output>"


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    r"""Command output as observation text: line breaks normalised, other control characters written as ``\xNN``.

    Example:
        >>> printable("a\r\nb\x1b[1m")
        'a\nb\\x1b[1m'
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class SWEEnv(TextEnv):
    """Repair a Python repository: one shell command per turn (or structured tools), graded by the repository's tests.

    Args:
        instances: a JSON lines file of SWE-bench-style instances (default: the embedded manifest).
        actions: ``"shell"`` (one ``bash`` command per turn, the default) or ``"tools"`` (view, search,
            replace, run_tests, submit).
        max_output_chars: a command's output is cut in the middle past this many characters.
        time_limit_s: the episode's wall-clock limit; past it the episode is truncated (``"time_limit"``).
        limits: the sandbox's per-command :class:`SandboxLimits` (or a mapping of its fields).
        **kwargs: see :class:`~agentgym_envs.core.TextEnv` (``max_steps`` defaults to 40).

    Example:
        >>> env = SWEEnv(split="test", expert_actions=True)            # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)                              # doctest: +SKIP
        >>> _ = env.step(info["expert_action"])                        # doctest: +SKIP
        >>> env.step("submit")[1]                                      # doctest: +SKIP
        1.0
    """

    family = "swe"
    tools = SHELL_TOOLS
    default_max_steps = DEFAULT_MAX_STEPS

    def __init__(
        self,
        instances: str | Path | None = None,
        actions: str = "shell",
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        time_limit_s: float = 1800.0,
        limits: SandboxLimits | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        if actions not in ("shell", "tools"):
            raise ValueError(f"actions must be 'shell' or 'tools', not {actions!r}")
        if max_output_chars < 100:
            raise ValueError(f"max_output_chars must be >= 100, got {max_output_chars}")
        check_sandbox()  # never run an agent's commands unsandboxed
        self.actions = actions
        self.tools = SHELL_TOOLS if actions == "shell" else STRUCTURED_TOOLS
        self.max_output_chars = int(max_output_chars)
        self.time_limit_s = float(time_limit_s)
        self.limits = limits if isinstance(limits, SandboxLimits) else SandboxLimits(**dict(limits or {}))
        self.instances = {i.instance_id: i for i in load_instances(instances or MANIFEST)}
        self.workspace: Workspace | None = None
        self._started = 0.0
        super().__init__(**kwargs)

    # ---- hooks ---------------------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        def pick(split: str) -> list[str]:
            return sorted(i for i, inst in self.instances.items() if inst.split == split)

        return TaskSplits(train=pick("train"), valid=pick("valid"), test=pick("test"))

    def _start(self, task_id: Hashable) -> TaskStart:
        instance = self.instances.get(str(task_id))
        if instance is None:
            raise UnknownTaskError(f"no instance {task_id!r}")
        self.close()
        self.workspace = Workspace.create(instance, self.limits)
        self._started = time.monotonic()
        if self.actions == "shell":
            usage = (
                "Act with one shell command per turn (a single line; chain with && if needed); you are in the "
                "repository's root, `python` and `pytest` run its code and tests. When the fix is done, send "
                "`submit` as the command."
            )
        else:
            usage = (
                "Act with one tool call per turn: view(path), search(pattern), replace(path, old, new), "
                "run_tests(), and submit() when the fix is done."
            )
        observation = f"{instance.problem_statement.rstrip()}\n\n{usage}"
        return TaskStart(observation=observation, instruction=instance.problem_statement.strip())

    def _execute(self, command: str) -> Transition:
        if command.strip() in SUBMIT_COMMANDS:
            return self._submit()
        return self._shell(command)

    def _execute_call(self, call: ToolCall) -> Transition:
        if self.actions == "shell":
            return self._execute(self.parser.command_text(call))
        args = dict(call.arguments)
        if call.name == "submit":
            return self._submit()
        if call.name == "view":
            return self._shell(f"cat -n -- {shlex.quote(args['path'])}")
        if call.name == "search":
            return self._shell(f"grep -rnE --include='*.py' -e {shlex.quote(args['pattern'])} . | head -n 200")
        if call.name == "run_tests":
            assert self.workspace is not None
            run = self.workspace.run_tests()
            return self._observe(run.log, run.exit_code, run.stopped, extra={"exit_code": run.exit_code})
        return self._replace(args["path"], args["old"], args["new"])

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if not (terminated or truncated) and time.monotonic() - self._started > self.time_limit_s:
            self._done = True
            truncated = True
            info["truncation_reason"] = "time_limit"
        return obs, reward, terminated, truncated, info

    # ---- actions -------------------------------------------------------------------------------
    def _shell(self, command: str) -> Transition:
        assert self.workspace is not None
        result = self.workspace.run(command)
        return self._observe(
            result.output,
            result.exit_code,
            result.stopped,
            extra={"exit_code": result.exit_code, "stopped": result.stopped},
        )

    def _observe(self, output: str, exit_code: int | None, stopped: str | None, extra: dict[str, Any]) -> Transition:
        text = format_output(output, exit_code, stopped, self.max_output_chars, self.limits)
        assert self.workspace is not None
        return Transition(text, self._score, extra={**extra, "diff": self.workspace.diff()})

    def _replace(self, path: str, old: str, new: str) -> Transition:
        assert self.workspace is not None
        repo = self.workspace.repo.resolve()
        target = (repo / path).resolve()
        if repo not in target.parents or not target.is_file():
            return Transition(
                f"There is no file {path!r} in the repository.", self._score, extra={"tool_error": "no such file"}
            )
        text = target.read_text(errors="replace")
        count = text.count(old) if old else 0
        if count != 1:
            why = "old is empty" if not old else f"old occurs {count} times in {path}; it must occur exactly once"
            return Transition(f"Nothing replaced: {why}.", self._score, extra={"tool_error": why})
        target.write_text(text.replace(old, new, 1))
        return Transition(
            f"Replaced 1 occurrence in {path}.", self._score, extra={"tool_error": None, "diff": self.workspace.diff()}
        )

    def _submit(self) -> Transition:
        assert self.workspace is not None
        result, run = self.workspace.grade()
        diff = self.workspace.diff()
        verdict = (
            "resolved: every FAIL_TO_PASS test passes and every PASS_TO_PASS test still passes"
            if result.resolved
            else f"not resolved ({len(result.failed)} of {len(result.passed) + len(result.failed)} tests fail)"
        )
        extra = {
            "resolution": result.status,
            "tests": {"passed": list(result.passed), "failed": list(result.failed)},
            "diff": diff,
            "test_exit_code": run.exit_code,
        }
        return Transition(
            f"Submitted. The repository is {verdict}.",
            result.fraction,
            won=result.resolved,
            lost=not result.resolved,
            extra=extra,
        )

    # ---- expert --------------------------------------------------------------------------------
    def _expert(self) -> str | None:
        """Apply the gold patch (one command or one replace call), then submit."""
        if self.workspace is None or self._done:
            raise ExpertUnavailableError("reset() the environment before asking for the expert")
        instance = self.workspace.instance
        if self.workspace.has_patch(instance.patch):
            return "submit" if self.actions == "shell" else "submit()"
        if self.actions == "shell":
            encoded = base64.b64encode(instance.patch.encode()).decode()
            tool = "patch -p1 --batch --quiet" if shutil.which("patch") else "git apply"
            return f"echo {encoded} | base64 -d | {tool}"
        path, old, new = _one_line_change(instance)
        return ToolCall("replace", {"path": path, "old": old, "new": new}).expression()

    def close(self) -> None:
        if self.workspace is not None:
            self.workspace.close()
            self.workspace = None
        super().close()


def _one_line_change(instance: Instance) -> tuple[str, str, str]:
    from unidiff import PatchSet

    patch = PatchSet(instance.patch)
    removed = [(f.path, line.value) for f in patch for h in f for line in h if line.is_removed]
    added = [line.value for f in patch for h in f for line in h if line.is_added]
    if len(removed) != 1 or len(added) != 1:
        raise ExpertUnavailableError(
            f"{instance.instance_id}: the gold patch is not a one-line change; use actions='shell'"
        )
    ((path, old),), (new,) = removed, added
    return path, old.strip(), new.strip()
