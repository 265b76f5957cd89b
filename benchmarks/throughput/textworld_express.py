"""TextWorld-Express: our environment against the stock ``TextWorldExpressEnv.step``, same gold actions, same run.

Only the steps are timed.  Each game's gold paths for a few train seeds are replayed by
both, alternately (reset outside the timed part).

Usage::

    .venv/bin/python benchmarks/env_throughput.py --family textworld_express --quick
"""

from __future__ import annotations

import statistics
import time

from benchmarks.throughput.common import Row

QUICK_GAMES = ("cookingworld", "coin", "twc")
FULL_GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")


def _time_ours(env, seeds: list[int], paths: dict[int, list[str]]) -> tuple[int, float]:
    steps, elapsed = 0, 0.0
    for seed in seeds:
        env.reset(options={"task": seed})
        start = time.perf_counter()
        for action in paths[seed]:
            *_, terminated, truncated, _ = env.step(action)
            steps += 1
            if terminated or truncated:
                break
        elapsed += time.perf_counter() - start
    return steps, elapsed


def _time_stock(stock, game: str, seeds: list[int], paths: dict[int, list[str]]) -> tuple[int, float]:
    steps, elapsed = 0, 0.0
    for seed in seeds:
        stock.reset(seed=seed, gameFold="train", gameName=game, gameParams="")
        start = time.perf_counter()
        for action in paths[seed]:
            _, _, done, _ = stock.step(action)
            steps += 1
            if done:
                break
        elapsed += time.perf_counter() - start
    return steps, elapsed


def rows(quick: bool) -> list[Row]:
    from textworld_express import TextWorldExpressEnv as StockEnv

    from agentgym_envs.families.textworld_express import TextWorldExpressEnv

    games = QUICK_GAMES if quick else FULL_GAMES
    seeds = list(range(10 if quick else 30))
    repeats = 7
    out = []
    for game in games:
        # A fresh JVM for each side and game, warmed up alike: the JIT makes a used JVM faster.
        stock = StockEnv(envStepLimit=1000)
        ours = TextWorldExpressEnv(game, split="train", max_steps=1000)
        try:
            paths = {}
            for seed in seeds:
                stock.reset(seed=seed, gameFold="train", gameName=game, gameParams="", generateGoldPath=True)
                paths[seed] = list(stock.getGoldActionSequence())
            for _ in range(3):  # warm-up
                _time_ours(ours, seeds, paths)
                _time_stock(stock, game, seeds, paths)
            ours_rates, stock_rates = [], []
            for _ in range(repeats):
                # Alternate episode by episode, so that load from other processes hits both sides alike.
                totals = [0, 0.0, 0, 0.0]
                for seed in seeds:
                    n, dt = _time_ours(ours, [seed], paths)
                    totals[0] += n
                    totals[1] += dt
                    n, dt = _time_stock(stock, game, [seed], paths)
                    totals[2] += n
                    totals[3] += dt
                ours_rates.append(totals[0] / totals[1])
                stock_rates.append(totals[2] / totals[3])
        finally:
            ours.close()
            stock.close()
        steps = sum(len(p) for p in paths.values())
        out.append(
            Row(
                "textworld_express",
                f"{game} step",
                statistics.median(ours_rates),
                statistics.median(stock_rates),
                note=f"gold paths of {len(seeds)} seeds ({steps} steps), median of {repeats}",
            )
        )
    return out
