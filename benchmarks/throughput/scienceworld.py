"""ScienceWorld: our environment against the stock ``ScienceWorldEnv.step``, same gold actions, same run.

Only the steps are timed (loading a task costs the same either way).  The stock step
enumerates every valid action after each step; ours does not unless asked, which the
third row measures (``admissible_actions=True``: valid actions after every step).

Usage::

    .venv/bin/python benchmarks/env_throughput.py --family scienceworld --quick
"""

from __future__ import annotations

import statistics
import time

from benchmarks.throughput.common import Row

# Tasks whose gold paths are 10-20 steps long and quick to generate; variation 0 of each (train split).
QUICK_TASKS = ("find-animal", "chemistry-mix", "use-thermometer")
FULL_TASKS = QUICK_TASKS + ("test-conductivity", "lifespan-longest-lived", "power-component", "grow-plant")


def _gold_paths(stock, tasks: tuple[str, ...]) -> dict[str, list[str]]:
    paths = {}
    for task in tasks:
        stock.load(task, 0, "", generateGoldPath=True)
        paths[task] = list(stock.get_gold_action_sequence())
    return paths


def _time_ours(env, task: str, actions: list[str]) -> tuple[int, float]:
    env.reset(options={"task": f"{task}:0"})
    steps, start = 0, time.perf_counter()
    for action in actions:
        *_, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            break
    return steps, time.perf_counter() - start


def _time_stock(stock, task: str, actions: list[str]) -> tuple[int, float]:
    stock.load(task, 0, "")
    stock.reset()
    steps, start = 0, time.perf_counter()
    for action in actions:
        _, _, done, _ = stock.step(action)
        steps += 1
        if done:
            break
    return steps, time.perf_counter() - start


def rows(quick: bool) -> list[Row]:
    from scienceworld import ScienceWorldEnv as StockEnv

    from agentgym_envs.families.scienceworld import ScienceWorldEnv

    tasks = QUICK_TASKS if quick else FULL_TASKS
    repeats = 2 if quick else 3
    stock = StockEnv("", envStepLimit=1000)
    ours = ScienceWorldEnv(None, split="train", max_steps=1000)
    ours_valid = ScienceWorldEnv(None, split="train", max_steps=1000, admissible_actions=True)
    try:
        paths = _gold_paths(stock, tasks)
        # Warm both JVMs up (JIT) on one episode before measuring.
        _time_ours(ours, tasks[0], paths[tasks[0]])
        _time_ours(ours_valid, tasks[0], paths[tasks[0]])
        _time_stock(stock, tasks[0], paths[tasks[0]])
        rates: dict[str, list[float]] = {"ours": [], "valid": [], "stock": []}
        for _ in range(repeats):
            totals = {k: [0, 0.0] for k in rates}
            for task in tasks:  # interleaved, so machine load drifts hit all three alike
                for key, (n, dt) in (
                    ("ours", _time_ours(ours, task, paths[task])),
                    ("stock", _time_stock(stock, task, paths[task])),
                    ("valid", _time_ours(ours_valid, task, paths[task])),
                ):
                    totals[key][0] += n
                    totals[key][1] += dt
            for key, (n, dt) in totals.items():
                rates[key].append(n / dt)
    finally:
        stock.close()
        ours.close()
        ours_valid.close()
    ours_rate, stock_rate, valid_rate = (statistics.median(rates[k]) for k in ("ours", "stock", "valid"))
    steps = sum(len(p) for p in paths.values())
    note = f"gold paths of {len(tasks)} tasks ({steps} steps), median of {repeats}"
    return [
        Row("scienceworld", "step (valid actions on demand)", ours_rate, stock_rate, note=note),
        Row("scienceworld", "step + valid actions every step", valid_rate, stock_rate, note=note),
    ]
