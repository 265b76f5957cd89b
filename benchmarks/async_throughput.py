"""Training samples/s of the synchronous trainer against ``async_rollouts=True`` on a slow and a fast family.

Each row trains :class:`trl_plugins.trainer.AgentGRPOTrainer` for ``--steps`` optimizer steps on the same tiny random
Llama (``--hidden``, ``--layers``; the SmolLM2 tokenizer), the same tasks, seeds, batch and limits, with the
environments in worker processes (``env_workers="process"``):

* ``sync``: ``async_rollouts=False``: each step plays its batch, then trains on it;
* ``async``: ``async_rollouts=True, max_staleness=--staleness`` (default 1): the next batch plays in the background
  while the optimizer steps.

Samples/s is episodes trained per second of wall time between the end of the first optimizer step and the end of
the last (the first step's environment start-up, JVMs included, is left out).  Each row runs in its own process
(``--child``) with ``--threads`` torch threads (default 1), and prints the machine's 1-minute load average before
and after it and ``cpu``: the CPU seconds the row's process (learner and producer threads, not the environments'
worker processes) got per second of wall time in that window.  The machine may be shared, so run it under ``nice``
and read the load and the CPU share with the numbers: a ``nice -n 19`` row beside a higher-priority job gets
almost no CPU and looks hung.  A row that runs past ``--row-timeout`` seconds is stopped and reported with the CPU
time it got.

Usage::

    nice -n 19 .venv/bin/python benchmarks/async_throughput.py                 # ScienceWorld and TextWorld
    nice -n 19 .venv/bin/python benchmarks/async_throughput.py --family textworld --steps 4
    nice -n 19 .venv/bin/python benchmarks/async_throughput.py --json /tmp/async.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The benchmark's families: ``(env_id, env_kwargs)``; ScienceWorld steps a JVM, TextWorld is pure Python.
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "scienceworld": ("agentgym/ScienceWorld-find-non-living-thing-v0", {}),
    "textworld": ("agentgym/TextWorld-w2-o3-q4-v0", {"seed_range": [30001, 30100]}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per row (the first is a warm-up)")
    parser.add_argument("--staleness", type=int, default=1, help="max_staleness of the async rows")
    parser.add_argument("--batch", type=int, default=4, help="episodes per step (per_device_train_batch_size)")
    parser.add_argument("--generations", type=int, default=2, help="num_generations (episodes per task)")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the tiny Llama")
    parser.add_argument("--layers", type=int, default=4, help="layers of the tiny Llama")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per row")
    parser.add_argument("--row-timeout", type=float, default=1800.0, help="seconds a row may run before it is stopped")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_row(args: argparse.Namespace, family: str, mode: str) -> dict[str, Any]:
    """Train one row in this process and measure it."""
    import tempfile

    import torch
    from transformers import TrainerCallback

    from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
    from trl_plugins.models import smollm2_tokenizer, tiny_model

    torch.set_num_threads(args.threads)
    env_id, env_kwargs = FAMILIES[family]
    step_ends: list[float] = []
    step_cpu: list[float] = []  # this process's CPU seconds (every thread) at each step's end

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            step_ends.append(time.perf_counter())
            step_cpu.append(time.process_time())

    tok = smollm2_tokenizer()
    with tempfile.TemporaryDirectory() as out:
        config = AgentGRPOConfig(
            output_dir=out, env_id=env_id, env_kwargs=env_kwargs, env_workers="process",
            num_generations=args.generations, per_device_train_batch_size=args.batch, max_steps=args.steps,
            max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens, max_context_tokens=2048,
            learning_rate=1e-5, logging_steps=1, report_to="none", save_strategy="no", seed=0, disable_tqdm=True,
            async_rollouts=mode == "async", max_staleness=args.staleness,
        )
        model = tiny_model(tok, hidden_size=args.hidden, layers=args.layers)
        trainer = AgentGRPOTrainer(model, args=config, processing_class=tok, callbacks=[StepClock()])
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    measured = len(step_ends) - 1
    seconds = step_ends[-1] - step_ends[0]
    return {
        "family": family,
        "mode": mode if mode == "sync" else f"async (max_staleness={args.staleness})",
        "samples_per_s": measured * args.batch / seconds,
        "measured_steps": measured,
        "seconds": seconds,
        "cpu_share": (step_cpu[-1] - step_cpu[0]) / seconds,
        "rollout_seconds_per_step": sum(h.get("rollout/seconds", 0.0) for h in logs[1:]) / max(1, measured),
        "learner_wait_seconds_per_step": sum(h.get("async/wait_seconds", 0.0) for h in logs[1:]) / max(1, measured),
        "staleness_mean": sum(h.get("async/staleness", 0.0) for h in logs) / max(1, len(logs)),
        "turns_per_episode": sum(h["env/turns_per_episode"] for h in logs) / max(1, len(logs)),
    }


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running process so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14 and 15)


def run_child(child_args: list[str], timeout_s: float) -> tuple[str, str, int]:
    """Run one row in a process of its own: its stdout, stderr and exit status; past ``timeout_s`` it is stopped
    and the status is 124, with the CPU time it got in that time in stderr (a starved row, not a hung one, got
    almost none)."""
    child = subprocess.Popen(
        [sys.executable, __file__, *child_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        cpu = process_cpu_seconds(child.pid)
        child.kill()
        stdout, stderr = child.communicate()
        note = f"stopped after {timeout_s:.0f} s, in which its process got {cpu:.1f} s of CPU"
        return stdout, f"{stderr}\n{note} (load average {os.getloadavg()[0]:.2f})", 124
    return stdout, stderr, child.returncode


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        family, mode = args.child.split(":")
        print(json.dumps(run_row(args, family, mode)))
        return
    families = list(FAMILIES) if args.family == "all" else [args.family]
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--json")]
    if args.json is not None and str(args.json) in passthrough:
        passthrough.remove(str(args.json))
    rows = []
    for family in families:
        for mode in ("sync", "async"):
            load_before = os.getloadavg()[0]
            stdout, stderr, returncode = run_child([*passthrough, "--child", f"{family}:{mode}"], args.row_timeout)
            if returncode != 0:
                sys.exit(f"{family} {mode} failed:\n{stderr[-3000:]}")
            row = json.loads(stdout.strip().splitlines()[-1])
            row["load_1min"] = (load_before, os.getloadavg()[0])
            rows.append(row)
            print(
                f"{family:13s} {row['mode']:26s} {row['samples_per_s']:6.2f} samples/s  "
                f"rollout {row['rollout_seconds_per_step']:5.2f} s/step  learner waited "
                f"{row['learner_wait_seconds_per_step']:5.2f} s/step  staleness {row['staleness_mean']:.2f}  "
                f"load {row['load_1min'][0]:.2f}->{row['load_1min'][1]:.2f}  cpu {row['cpu_share']:.2f}",
                flush=True,
            )
        sync, asynchronous = rows[-2], rows[-1]
        print(f"{family:13s} speed-up async/sync: {asynchronous['samples_per_s'] / sync['samples_per_s']:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
