"""Environment workers: a batch of episodes stepped in-process against worker processes.

For each family a batch of ``--batch`` episodes (one environment each, the way the rollout engine
drives them: ``reset_async``/``step_async`` on all, then ``*_wait`` on each) plays ``--steps`` steps of a
fixed action cycle.  Modes: ``inprocess`` (the batch in this process, one environment after another),
``process x1`` / ``process x2`` (the batch spread over 1 or 2 worker processes) and, with ``--per-env``,
one process per environment.  Rows: episodes/s and steps/s of the timed batches (worker start-up is
reported separately, not timed in), with the load average of the machine before and after each row.

Usage::

    .venv/bin/python benchmarks/env_workers.py                         # every family below
    .venv/bin/python benchmarks/env_workers.py --family scienceworld --batch 16 --steps 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentgym_envs.workers import make_workers, reset_many, step_many  # noqa: E402


@dataclass(frozen=True)
class Family:
    env_id: str
    kwargs: dict[str, Any]
    actions: tuple[str, ...]  # cycled through; commands that do nothing still cost a simulator step


FAMILIES = {
    "scienceworld": Family(
        "agentgym/ScienceWorld-find-non-living-thing-v0",
        {"split": "test"},
        ("look around", "inventory", "go to hallway", "look around", "open door to kitchen", "go to kitchen"),
    ),
    "alfworld": Family(
        "agentgym/ALFWorld-v0",
        {"split": "test"},
        ("look", "inventory", "go to countertop 1", "examine countertop 1", "go to cabinet 1", "open cabinet 1"),
    ),
    "textworld": Family(
        "agentgym/TextWorld-w2-o3-q4-v0",
        {"split": "test"},
        ("look", "inventory", "go north", "go east", "go south", "go west"),
    ),
    "textcraft": Family(
        "agentgym/TextCraft-v0",
        {"split": "test"},
        ("inventory", "get 1 oak log", "craft 4 oak planks using 1 oak log", "inventory"),
    ),
    "babyai": Family(
        "agentgym/BabyAI-GoToLocal-v0",
        {"split": "test"},
        ("turn left", "go forward", "turn right", "go forward", "go forward"),
    ),
}

SLOW = ("scienceworld", "alfworld")


def play_batch(workers: Any, actions: tuple[str, ...], steps: int, seed: int) -> tuple[int, int]:
    """One batch: every worker resets, then all step together ``steps`` times.  Returns (episodes, steps)."""
    n = len(workers)
    reset_many(workers, seeds=[seed + i for i in range(n)])
    live = list(range(n))
    done_steps = 0
    for t in range(steps):
        if not live:
            break
        chosen = [actions[(t + i) % len(actions)] for i in live]
        results = step_many([workers[i] for i in live], chosen)
        done_steps += len(live)
        live = [
            i for i, (*_, terminated, truncated, _) in zip(live, results, strict=True) if not (terminated or truncated)
        ]
    return n, done_steps


def measure(family: Family, mode: str, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    kind, processes = ("inprocess", None) if mode == "inprocess" else ("process", int(mode.split("x")[1]))
    started = time.perf_counter()
    workers = make_workers(family.env_id, batch, kind=kind, max_processes=processes, **family.kwargs)
    start_s = time.perf_counter() - started
    try:
        # Warm-up on the same tasks: games generated or unpacked into the cache on first use are not timed.
        play_batch(workers, family.actions, steps, seed=0)
        eps, stp = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            episodes, steps_done = play_batch(workers, family.actions, steps, seed=0)
            elapsed = time.perf_counter() - t0
            eps.append(episodes / elapsed)
            stp.append(steps_done / elapsed)
    finally:
        workers.close()
    return {
        "mode": mode,
        "start_s": start_s,
        "episodes_s": statistics.median(eps),
        "steps_s": statistics.median(stp),
        "load": (load_before, os.getloadavg()[0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="only these (repeatable)")
    parser.add_argument("--batch", type=int, default=16, help="episodes per batch (one environment each)")
    parser.add_argument("--steps", type=int, default=10, help="steps per episode")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per row (median)")
    parser.add_argument("--per-env", action="store_true", help="also one process per environment")
    args = parser.parse_args(argv)

    print(f"cores {os.cpu_count()}, load average at start {os.getloadavg()}, batch {args.batch}, steps {args.steps}")
    table = []
    for name in args.family or ["scienceworld", "alfworld", "textworld", "textcraft", "babyai"]:
        modes = ["inprocess", "process x1", "process x2"] + ([f"process x{args.batch}"] if args.per_env else [])
        for mode in modes:
            try:
                row = measure(FAMILIES[name], mode.replace(" ", ""), args.batch, args.steps, args.repeats)
            except Exception as exc:  # noqa: BLE001 - one family failing must not hide the others
                print(f"[{name}] {mode}: failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            row["family"], row["mode"] = name, mode
            table.append(row)
            print(
                f"[{name}] {mode}: {row['episodes_s']:.2f} episodes/s, {row['steps_s']:.1f} steps/s, "
                f"start {row['start_s']:.1f} s, load {row['load'][0]:.1f}->{row['load'][1]:.1f}",
                flush=True,
            )
    print()
    print("| family | mode | episodes/s | steps/s | vs in-process | worker start | load 1-min (before->after) |")
    print("|---|---|---|---|---|---|---|")
    base = {r["family"]: r["steps_s"] for r in table if r["mode"] == "inprocess"}
    for r in table:
        ratio = f"{r['steps_s'] / base[r['family']]:.2f}x" if r["family"] in base else "-"
        print(
            f"| {r['family']} | {r['mode']} | {r['episodes_s']:.2f} | {r['steps_s']:.1f} | {ratio} | "
            f"{r['start_s']:.1f} s | {r['load'][0]:.1f} -> {r['load'][1]:.1f} |"
        )
    print(f"\nload average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
