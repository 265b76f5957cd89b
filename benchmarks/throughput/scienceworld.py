"""ScienceWorld: our environment against the stock ``ScienceWorldEnv``, same gold actions, same run.

Only the steps are timed (loading a task costs the same either way).  The stock ``step``
enumerates every valid action after each step (and reads the room, the inventory and the
task description); ours does not unless asked.  So the headline row compares ours with
``admissible_actions=True`` (valid actions after every step) to the stock ``step``, and the
second row compares ours without them to the stock simulator's own calls without them
(``server.step``, the score, the completion flag and the move count: the stock ``step``
minus its ``infos``).  Valid actions on both sides or on neither.

Usage::

    .venv/bin/python benchmarks/env_throughput.py --family scienceworld --quick
"""

from __future__ import annotations

import time

import psutil

from benchmarks.throughput.common import Row, cpu_seconds, load_average, side_from_runs

# Tasks whose gold paths are 10-20 steps long and quick to generate; variation 0 of each (train split).
QUICK_TASKS = ("find-animal", "chemistry-mix", "use-thermometer")
FULL_TASKS = QUICK_TASKS + ("test-conductivity", "lifespan-longest-lived", "power-component", "grow-plant")


def _gold_paths(stock, tasks: tuple[str, ...]) -> dict[str, list[str]]:
    paths = {}
    for task in tasks:
        stock.load(task, 0, "", generateGoldPath=True)
        paths[task] = list(stock.get_gold_action_sequence())
    return paths


def _time_ours(env, task: str, actions: list[str]) -> tuple[int, float, float]:
    env.reset(options={"task": f"{task}:0"})
    process = psutil.Process()
    steps, cpu, start = 0, cpu_seconds(process), time.perf_counter()
    for action in actions:
        *_, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            break
    wall = time.perf_counter() - start
    return steps, wall, cpu_seconds(process) - cpu


def _time_stock(stock, task: str, actions: list[str], infos: bool = True) -> tuple[int, float, float]:
    stock.load(task, 0, "")
    stock.reset()
    process = psutil.Process()
    steps, cpu, start = 0, cpu_seconds(process), time.perf_counter()
    for action in actions:
        if infos:
            _, _, done, _ = stock.step(action)
        else:  # the stock step without its infos dict (no valid actions, look, inventory, task description)
            stock.server.step(action)
            score = int(round(100 * stock.server.getScore()))
            done = stock.server.getCompleted() or stock.get_num_moves() > stock.envStepLimit or score < 0
        steps += 1
        if done:
            break
    wall = time.perf_counter() - start
    return steps, wall, cpu_seconds(process) - cpu


def rows(quick: bool) -> list[Row]:
    from scienceworld import ScienceWorldEnv as StockEnv

    from agentgym_envs.families.scienceworld import ScienceWorldEnv

    tasks = QUICK_TASKS if quick else FULL_TASKS
    repeats = 3
    stock = StockEnv("", envStepLimit=1000)
    ours = ScienceWorldEnv(None, split="train", max_steps=1000)
    ours_valid = ScienceWorldEnv(None, split="train", max_steps=1000, admissible_actions=True)
    load = load_average()
    try:
        paths = _gold_paths(stock, tasks)
        sides = {
            "ours": lambda task: _time_ours(ours, task, paths[task]),
            "valid": lambda task: _time_ours(ours_valid, task, paths[task]),
            "stock": lambda task: _time_stock(stock, task, paths[task]),
            "stock_core": lambda task: _time_stock(stock, task, paths[task], infos=False),
        }
        for measure in sides.values():  # warm both JVMs up (JIT) on one episode before measuring
            measure(tasks[0])
        runs: dict[str, list[tuple[int, float, float]]] = {k: [] for k in sides}
        for i in range(repeats):
            totals = {k: [0, 0.0, 0.0] for k in sides}
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for task in tasks:  # interleaved, so machine load drifts hit all four alike
                for key in order:
                    n, wall, cpu = sides[key](task)
                    totals[key][0] += n
                    totals[key][1] += wall
                    totals[key][2] += cpu
            for key, (n, wall, cpu) in totals.items():
                runs[key].append((n, wall, cpu))
    finally:
        stock.close()
        ours.close()
        ours_valid.close()
    measured = {k: side_from_runs(v) for k, v in runs.items()}
    steps = sum(len(p) for p in paths.values())
    note = f"gold paths of {len(tasks)} tasks ({steps} steps), median of {repeats}, steps only (loads untimed)"
    return [
        Row.compared("scienceworld", "step + valid actions every step (like for like)",
                     (measured["valid"], measured["stock"]), note=note, load=load,
                     leaves_out="ours: the room, inventory and task description the stock step also reads"),
        Row.compared("scienceworld", "step, valid actions on neither side", (measured["ours"], measured["stock_core"]),
                     note=note + "; native = stock server.step + score + completion + moves", load=load,
                     leaves_out="native: parsing, the info dict; both: valid actions"),
    ]
