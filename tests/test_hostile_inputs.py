"""Hostile model text against every family x every action format, with a deadline per step.

Each family runs in a child process (``hostile_driver.py``) so that a hang, a stdout flood or a
segfault of a simulator fails the test with the input that caused it instead of stalling CI.
The web families (MiniWoB, the shop) type each input into a text box of the page.
The inputs are the attacks of issue 16: control characters written as escapes (NUL, CR, ESC,
lone surrogates, line separators), backslash commands, interpreter meta-commands and their
abbreviations (also chained behind another command), and long multi-byte text.

For every step: ``step`` returns within the deadline and raises nothing; the observation and the
executed command are valid Unicode without control characters or surrogates; no crash is reported;
nothing is written to the working directory; the simulator prints (almost) nothing.  Decoded control
characters are never executed, and TextWorld refuses backslash and meta-commands in the episode.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from agentgym_envs.parsing import FORMATS

DRIVER = Path(__file__).with_name("hostile_driver.py")
REPO = DRIVER.parent.parent
STEP_DEADLINE_S = 30.0
START_DEADLINE_S = 240.0  # JVM start, first-time split caches, ALFWorld extraction
MAX_STDOUT_BYTES = 100_000

CONTROL = [
    "look\x00around",
    "look\rlook\rlook\rlook",
    "look\x1b[2J",
    "look\ud800",
    "\udfffinventory",
    "look\x07",
    "look\u2028look",
    "look\x85look",
    "look\x0bx",
]
BACKSLASH = ["\\help", "\\q", "\\x", "\\nopen chest", "look \\x"]
META = [
    "save", "restore", "script", "unscript", "transcript", "script off", "quit", "q", "restart", "undo",
    "SAVE", "save game", "look. save", "look then script", "look, restore",
]
LONG = ["\U0001f600" * 50, "\u00e9" * 200, "\u5317\u4eac" * 100, "x" * 3000, "\U0001f3f3\ufe0f\u200d\U0001f308" * 20]
INPUTS = [("control", t) for t in CONTROL] + [("backslash", t) for t in BACKSLASH] + [("meta", t) for t in META]
INPUTS += [("long", t) for t in LONG]

#: A harmless command per family, stepped last: the environment must still work.
BENIGN = {"textworld": "look", "alfworld": "look", "scienceworld": "look around", "textworld_express": "look around",
          "babyai": "turn left", "textcraft": "inventory", "deepsearch": "apple", "miniwob": "hello",
          "webshop": "hiking boots", "swe": "ls", "webarena": "hiking boots"}
#: Families whose simulator is a story-file interpreter: backslash and meta-commands are refused.
INTERPRETERS = {"textworld"}


def encode(
    fmt: str, tool: str, parameter: str, single: bool, text: str, fixed: dict[str, str] | None = None,
    parameters: list[str] | None = None,
) -> str:
    """``text`` as the tool's ``parameter``, written the way a model writes ``fmt``.

    ``fixed`` gives the tool's other arguments (``parameters`` is their order in a call expression).
    JSON formats carry control characters as JSON escapes, call expressions as Python string
    escapes: both reach the environment only after decoding.
    """
    fixed = fixed or {}
    values = [fixed.get(p, text) for p in (parameters or [parameter])]
    payload = text if single else f"{tool}({', '.join(json.dumps(v) for v in values)})"
    if fmt == "plain":
        return payload
    if fmt == "tags":
        return f"<think>try it</think><action>{payload}</action>"
    if fmt == "react":
        return f"Thought: try it\nAction: {payload}"
    if fmt == "hermes":
        return "<tool_call>" + json.dumps({"name": tool, "arguments": {**fixed, parameter: text}}) + "</tool_call>"
    return json.dumps({"name": tool, "arguments": json.dumps({**fixed, parameter: text})})


def _bad_characters(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t"})


class Child:
    """The driver process, with a deadline on every answer and a byte count of its stdout."""

    def __init__(self, family: str, cwd: Path):
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "AGENTGYM_REPO": str(REPO), "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), family, str(write_fd)], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(write_fd,),
        )
        os.close(write_fd)
        self.answers = read_fd
        self.buffer = b""
        self.stdout_bytes = 0
        self._drain = threading.Thread(target=self._count_stdout, daemon=True)
        self._drain.start()

    def _count_stdout(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(1 << 16):
            self.stdout_bytes += len(chunk)

    def receive(self, deadline_s: float, what: str) -> dict[str, Any]:
        end = time.monotonic() + deadline_s
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            ready, _, _ = select.select([self.answers], [], [], max(0.0, left))
            if not ready:
                self.kill()
                pytest.fail(f"no answer within {deadline_s:.0f} s to {what} (the environment hangs)")
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                code = self.proc.wait()
                pytest.fail(f"the environment process died (exit code {code}) on {what}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def step(self, fmt: str, text: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"format": fmt, "text": text}) + "\n").encode())
        self.proc.stdin.flush()
        return self.receive(STEP_DEADLINE_S, f"{fmt} step {text[:60]!r}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        os.close(self.answers)


def check_step(family: str, fmt: str, group: str, text: str, answer: dict[str, Any]) -> list[str]:
    """What is wrong with one step's answer (empty when it is all right)."""
    where = f"{family}/{fmt}/{text[:40]!r}"
    if "exception" in answer:
        return [f"{where}: step raised\n{answer['exception']}"]
    problems = []
    obs, info = answer["obs"], answer["info"]
    if not isinstance(obs, str) or _bad_characters(obs):
        problems.append(f"{where}: observation holds {_bad_characters(obs)}: {obs[:120]!r}")
    if info["action"] is not None and _bad_characters(info["action"]):
        problems.append(f"{where}: executed command holds {_bad_characters(info['action'])}")
    if info["truncation_reason"] == "crash":
        problems.append(f"{where}: the simulator crashed: {info['error']}")
    refused = group == "control" or (family in INTERPRETERS and group in ("backslash", "meta"))
    if family in INTERPRETERS and group == "long" and not text.isascii():
        refused = True
    if refused and (info["action"] is not None or not info["parse_error"]):
        problems.append(f"{where}: executed as {info['action']!r} instead of being refused")
    return problems


FAMILIES = ["textworld", "alfworld", "scienceworld", "textworld_express", "babyai", "textcraft", "deepsearch",
            "miniwob", "webshop", "swe", "webarena"]


@pytest.mark.parametrize("family", FAMILIES)
def test_hostile_text_never_hangs_crashes_or_escapes(family: str, tmp_path: Path) -> None:
    child = Child(family, tmp_path)
    try:
        hello = child.receive(START_DEADLINE_S, "start-up and the first reset")
        if "skip" in hello:
            pytest.skip(hello["skip"])
        (tool, parameters), *others = hello["tools"]
        single = not others and len(parameters) == 1
        parameter, fixed = parameters[0], None
        if "call" in hello:  # web: type(element_id, text) into a text box of the page
            tool, parameter, fixed = hello["call"]["tool"], hello["call"]["parameter"], hello["call"]["fixed"]
            parameters = dict(hello["tools"])[tool]

        def request(fmt: str, text: str) -> str:
            return encode(fmt, tool, parameter, single, text, fixed, parameters)

        problems: list[str] = []
        for fmt in FORMATS:
            for group, text in INPUTS:
                answer = child.step(fmt, request(fmt, text))
                problems += check_step(family, fmt, group, text, answer)
            benign = child.step(fmt, request(fmt, BENIGN[family]))
            if "exception" in benign or benign["info"]["parse_error"] or benign["info"]["truncation_reason"]:
                problems.append(f"{family}/{fmt}: a harmless command failed afterwards: {benign}")
    finally:
        child.close()
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems)"
    assert child.stdout_bytes < MAX_STDOUT_BYTES, f"the simulator printed {child.stdout_bytes} bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "the environment wrote into the working directory"
