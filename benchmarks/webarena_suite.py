"""The embedded WebArena suite: expert and random success rates, actions/s and reset time.

The expert (each task's scripted solution) must solve 100 % of the tasks and a uniform random policy
(random clicks, typing, scrolling, going back, stopping) at most 5 %.  Speed is measured on the same
episodes: actions/s over all steps, and reset time (restoring the sites' databases, signing in and
opening the start page).  ``--workers N`` plays the tasks in N processes, each with its own sites and
browser context, and reports the aggregate rate.  Usage::

    .venv/bin/python benchmarks/webarena_suite.py                    # every task, in this process
    .venv/bin/python benchmarks/webarena_suite.py --split test --workers 2
    .venv/bin/python benchmarks/webarena_suite.py --json results/webarena.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentgym_envs.errors import AgentGymError, ExpertUnavailableError  # noqa: E402

RANDOM_WORDS = ("shoes", "books", "hello", "42", "admin", "red")


def random_action(env: Any, rng: random.Random) -> str:
    """One action of the uniform random policy over the current listing."""
    ids = [n.id for n in env.nodes] or [1]
    boxes = [n.id for n in env.nodes if n.role == "textbox"]
    kind = rng.choices(["click", "type", "scroll", "go_back", "stop"], weights=[10, 3, 2, 1, 1])[0]
    if kind == "click":
        return f"click({rng.choice(ids)})"
    if kind == "type" and boxes:
        return f"type_enter({rng.choice(boxes)}, {rng.choice(RANDOM_WORDS)!r})"
    if kind == "scroll":
        return f"scroll({rng.choice(['up', 'down'])!r})"
    if kind == "go_back":
        return "go_back()"
    return f"stop({rng.choice(RANDOM_WORDS)!r})"


def play(job: tuple[str, list[int], str, int]) -> dict[str, Any]:
    """Play ``tasks`` of ``split`` with ``policy``; counts and timings."""
    from agentgym_envs.families.web.webarena.env import WebArenaEnv

    split, tasks, policy, max_steps = job
    env = WebArenaEnv(split=split, max_steps=max_steps)
    rng = random.Random(0)
    wins, steps, step_s, resets, failures = 0, 0, 0.0, [], []
    try:
        env.reset(options={"task": tasks[0]})  # starts the sites and the browser: not counted as a reset
        for task in tasks:
            start = time.perf_counter()
            env.reset(options={"task": task})
            resets.append(time.perf_counter() - start)
            while True:
                try:
                    action = env.expert_action() if policy == "expert" else random_action(env, rng)
                except ExpertUnavailableError as exc:
                    info = {"won": False, "expert_error": str(exc)}
                    break
                start = time.perf_counter()
                *_, terminated, truncated, info = env.step(action)
                step_s += time.perf_counter() - start
                steps += 1
                if terminated or truncated:
                    break
            wins += bool(info.get("won"))
            if policy == "expert" and not info.get("won"):
                failures.append((task, info.get("expert_error") or info.get("action_error")))
    finally:
        env.close()
    return {"episodes": len(tasks), "wins": wins, "steps": steps, "step_s": step_s, "resets": resets,
            "failures": failures}


def run(split: str | None, policy: str, workers: int, max_steps: int, limit: int | None) -> dict[str, Any]:
    from agentgym_envs.families.web.webarena.env import load_task_configs

    configs = load_task_configs("embedded")
    splits = [split] if split else ["train", "valid", "test"]
    jobs = []
    for name in splits:
        tasks = [int(c["task_id"]) for c in configs if c["agentgym_split"] == name][:limit]
        jobs += [(name, tasks[i::workers], policy, max_steps) for i in range(workers) if tasks[i::workers]]
    wall = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(play, jobs)
    else:
        parts = [play(job) for job in jobs]
    wall = time.perf_counter() - wall
    resets = sorted(r for p in parts for r in p["resets"])
    episodes = sum(p["episodes"] for p in parts)
    steps = sum(p["steps"] for p in parts)
    return {
        "policy": policy, "workers": workers, "episodes": episodes,
        "success_rate": sum(p["wins"] for p in parts) / max(1, episodes),
        "failed_tasks": sorted(t for p in parts for t in p["failures"]),
        "steps": steps,
        "actions_per_s_per_env": steps / max(1e-9, sum(p["step_s"] for p in parts)),
        "actions_per_s_total": steps / max(1e-9, wall),
        "reset_s_median": resets[len(resets) // 2] if resets else None,
        "reset_s_p90": resets[int(len(resets) * 0.9)] if resets else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["train", "valid", "test"], help="only this split (default: all)")
    parser.add_argument("--policy", choices=["expert", "random", "both"], default="both")
    parser.add_argument("--workers", type=int, default=1, help="processes playing the tasks")
    parser.add_argument("--max-steps", type=int, default=15, help="step limit of the random policy's episodes")
    parser.add_argument("--limit", type=int, help="at most this many tasks per split")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    results = []
    try:
        for policy in (["expert", "random"] if args.policy == "both" else [args.policy]):
            row = run(args.split, policy, args.workers, 30 if policy == "expert" else args.max_steps, args.limit)
            results.append(row)
            print(re.sub(r"\s+", " ", json.dumps(row)))
    except AgentGymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    expert = next((r for r in results if r["policy"] == "expert"), None)
    rand = next((r for r in results if r["policy"] == "random"), None)
    ok = (expert is None or expert["success_rate"] == 1.0) and (rand is None or rand["success_rate"] <= 0.05)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
