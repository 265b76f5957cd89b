"""A worker process's stdout and stderr stay out of the trainer's terminal: captured, bounded, and kept for the
report of a crash or a time limit (the end of ``info["error"]``).  Real worker processes; one run in a fresh interpreter whose own output is read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym

import agentgym_envs  # noqa: F401 - registers the agentgym/ ids
from agentgym_envs.workers import make_workers, reset_many, step_many
from agentgym_envs.workers.process import CRASH_OUTPUT_CHARS, OUTPUT_LIMIT_BYTES

TEXTCRAFT = "agentgym/TextCraft-v0"
REPO = Path(__file__).resolve().parents[1]


class NoisyTextCraft(gym.Wrapper):
    """TextCraft that writes to stdout and stderr: a line per step, 1 MiB on ``"flood"``, and a last word before
    dying on ``"die"`` (a simulator's log and its crash)."""

    def __init__(self, **kwargs: Any):
        super().__init__(gym.make(TEXTCRAFT, **kwargs))

    def step(self, action: str) -> Any:
        print(f"stdout: stepping {action!r}", flush=True)
        print(f"stderr: stepping {action!r}", file=sys.stderr, flush=True)
        if action == "flood":
            for i in range(16 * 1024):
                print(f"flood line {i:06d} " + "x" * 48)
            print("flood: the end", flush=True)
        if action == "die":
            os.write(2, b"fatal: the simulator gave up\n")
            os._exit(3)
        return self.env.step(action)


NOISY = f"{__name__}:NoisyTextCraft-v0"
if "NoisyTextCraft-v0" not in gym.registry:
    gym.register("NoisyTextCraft-v0", entry_point=f"{__name__}:NoisyTextCraft", disable_env_checker=True)


def test_worker_output_never_reaches_the_parents_terminal():
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_worker_output import NOISY
        from agentgym_envs.workers import make_workers, reset_many, step_many

        if __name__ == "__main__":
            with make_workers(NOISY, 2, kind="process", max_processes=2, split="test") as workers:
                reset_many(workers, seeds=[0, 1])
                step_many(workers, ["inventory", "look"])
                print("PARENT-DONE", repr(workers[0].output()), repr(workers[1].output()))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stepping" not in done.stderr
    (report,) = [line for line in done.stdout.splitlines() if "stepping" in line]  # only the parent's own print
    assert report.startswith("PARENT-DONE")
    for action in ("inventory", "look"):
        assert f"stdout: stepping '{action}'" in report and f"stderr: stepping '{action}'" in report


def test_output_is_bounded_and_a_crash_or_a_time_limit_carries_its_tail():
    with make_workers(NOISY, 2, kind="process", max_processes=2, timeout_s=2.0, split="test") as (noisy, stopped):
        reset_many([noisy, stopped], seeds=[0, 1])
        noisy.step_async("flood")
        assert not noisy.step_wait()[3]
        kept = noisy.output()
        assert kept.startswith("[earlier output dropped]\n") and kept.endswith("flood: the end\n")
        assert len(kept.encode()) <= OUTPUT_LIMIT_BYTES + 64 and "flood line 000000" not in kept

        noisy.step_async("die")
        *_, truncated, info = noisy.step_wait()
        assert truncated and info["truncation_reason"] == "crash" and set(agentgym_envs.INFO_KEYS) <= set(info)
        died, last_words = info["error"].split("\n--- the worker process's last output ---\n")
        assert "exit code 3" in died and last_words.endswith("fatal: the simulator gave up\n")
        assert len(last_words) <= CRASH_OUTPUT_CHARS + len("[earlier output dropped]\n")

        stopped.step_async("inventory")
        assert stopped.step_wait()[4]["truncation_reason"] is None
        pid = stopped.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped.step_async("inventory")
            *_, truncated, info = stopped.step_wait()
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert truncated and info["truncation_reason"] == "time_limit" and info["error"].startswith("TimeoutError")
        assert "stdout: stepping 'inventory'" in info["error"]


def test_capture_output_false_leaves_the_output_alone():
    with make_workers(NOISY, 1, kind="process", capture_output=False, split="test") as (worker,):
        reset_many([worker], seeds=[0])
        assert not step_many([worker], ["inventory"])[0][3]
        assert worker.output() == ""
