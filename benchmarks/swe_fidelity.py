"""Fidelity and speed of the software-engineering family (agentgym/SWE-v0) over the committed manifest.

Fidelity: for every instance, the buggy repository must not be resolved (every FAIL_TO_PASS test fails)
and the gold patch must resolve it; each test log is also graded by swebench's harness path
(``get_logs_eval`` on the log file with its markers, then ``get_eval_tests_report`` /
``get_resolution_status``), which must agree with the environment's grade.

Speed: expert episodes per second in this process and through process workers, the cost of one graded
test run per package, and the sandbox's overhead against the same test command run unsandboxed.

Run: ``nice -n 10 python benchmarks/swe_fidelity.py [--limit N] [--speed-only] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agentgym_envs.families.swe.tasks import MANIFEST, Instance, apply_patch, load_instances
from agentgym_envs.families.swe.workspace import TestRun, Workspace, pytest_command


def swebench_resolved(instance: Instance, run: TestRun) -> str:
    """swebench's verdict on a log: the harness's log evaluation (markers, exit code), then its report."""
    from swebench.harness.constants import END_TEST_OUTPUT, FAIL_TO_PASS, PASS_TO_PASS, START_TEST_OUTPUT
    from swebench.harness.grading import get_eval_tests_report, get_logs_eval, get_resolution_status
    from swebench.types import TestSpec

    spec = TestSpec(
        instance.instance_id,
        "",
        [],
        instance.repo,
        instance.base_commit,
        list(instance.fail_to_pass),
        list(instance.pass_to_pass),
        log_parser="parse_log_pytest",
    )
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as handle:
        handle.write(f"{START_TEST_OUTPUT}\n{run.log}\n{END_TEST_OUTPUT}\n")
        path = handle.name
    try:
        statuses, ok = get_logs_eval(spec, path)
    finally:
        os.unlink(path)
    if not ok:
        return "LOG_INVALID"
    gold = {FAIL_TO_PASS: list(instance.fail_to_pass), PASS_TO_PASS: list(instance.pass_to_pass)}
    return get_resolution_status(get_eval_tests_report(statuses, gold))


def fidelity(instances: list[Instance]) -> dict[str, Any]:
    rows = []
    for instance in instances:
        workspace = Workspace.create(instance)
        try:
            buggy, buggy_run = workspace.grade()
            apply_patch(workspace.repo, instance.patch)
            fixed, fixed_run = workspace.grade()
        finally:
            workspace.close()
        rows.append(
            {
                "instance_id": instance.instance_id,
                "buggy_resolved": buggy.resolved,
                "buggy_f2p_all_fail": not set(instance.fail_to_pass) & set(buggy.passed),
                "gold_resolved": fixed.resolved,
                "agree_buggy": buggy.status == swebench_resolved(instance, buggy_run),
                "agree_gold": fixed.status == swebench_resolved(instance, fixed_run),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    n = len(rows)
    return {
        "instances": n,
        "packages": dict(Counter(i.repo for i in instances)),
        "gold_resolved": sum(r["gold_resolved"] for r in rows) / n,
        "buggy_resolved": sum(r["buggy_resolved"] for r in rows) / n,
        "buggy_f2p_all_fail": sum(r["buggy_f2p_all_fail"] for r in rows) / n,
        "agrees_with_swebench": sum(r["agree_buggy"] and r["agree_gold"] for r in rows) / n,
        "failures": [
            r
            for r in rows
            if not (r["gold_resolved"] and not r["buggy_resolved"] and r["agree_buggy"] and r["agree_gold"])
        ],
    }


def test_run_cost(instances: list[Instance], repeats: int = 3) -> dict[str, Any]:
    """Seconds per test run of each package's first instance, sandboxed and not (the same command and tree)."""
    out = {}
    for repo in sorted({i.repo for i in instances}):
        instance = next(i for i in instances if i.repo == repo)
        workspace = Workspace.create(instance)
        try:
            sandboxed, plain = [], []
            env = {
                **os.environ,
                **workspace.sandbox.env,
                "PATH": workspace.sandbox.env["PATH"] + ":" + os.environ["PATH"],
            }
            command = pytest_command(instance.test_files)
            for _ in range(repeats):
                start = time.perf_counter()
                workspace.run_tests()
                sandboxed.append(time.perf_counter() - start)
                start = time.perf_counter()
                subprocess.run(["bash", "-c", command], cwd=workspace.repo, env=env, capture_output=True, timeout=600)
                plain.append(time.perf_counter() - start)
        finally:
            workspace.close()
        s, p = statistics.median(sandboxed), statistics.median(plain)
        out[repo] = {"sandboxed_s": round(s, 3), "unsandboxed_s": round(p, 3), "overhead": round(s / p - 1, 3)}
        print(repo, out[repo], flush=True)
    return out


def episodes_per_second(episodes: int, workers: int) -> dict[str, float]:
    """Expert episodes (reset, apply the gold patch, submit) per second, in-process and in process workers."""
    import agentgym_envs
    from agentgym_envs.engine import make_workers, reset_many, step_many

    env = agentgym_envs.make("agentgym/SWE-v0", split="test")
    start = time.perf_counter()
    for seed in range(episodes):
        env.reset(seed=seed)
        done = False
        while not done:
            *_, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
            done = terminated or truncated
    inprocess = episodes / (time.perf_counter() - start)
    env.close()
    start = time.perf_counter()
    with make_workers("agentgym/SWE-v0", workers, kind="process", split="test", expert_actions=True) as pool:
        played = 0
        while played < episodes:
            infos = [info for _, info in reset_many(pool, seeds=range(played, played + workers))]
            live = list(range(workers))
            while live:
                results = step_many([pool[i] for i in live], [infos[i]["expert_action"] for i in live])
                still = []
                for i, (_, _, terminated, truncated, info) in zip(live, results, strict=True):
                    infos[i] = info
                    if not (terminated or truncated):
                        still.append(i)
                live = still
            played += workers
        process = played / (time.perf_counter() - start)
    return {"inprocess_episodes_per_s": round(inprocess, 3), f"process_x{workers}_episodes_per_s": round(process, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N instances of each package")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    instances = load_instances(MANIFEST)
    if args.limit:
        seen: Counter[str] = Counter()
        chosen = []
        for instance in instances:
            seen[instance.repo] += 1
            if seen[instance.repo] <= args.limit:
                chosen.append(instance)
        instances = chosen
    result: dict[str, Any] = {}
    if not args.speed_only:
        result["fidelity"] = fidelity(instances)
    result["test_run_cost"] = test_run_cost(instances)
    result["speed"] = episodes_per_second(args.episodes, args.workers)
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    shutil.rmtree(Path(tempfile.gettempdir()) / "agentgym-swe-bench", ignore_errors=True)


if __name__ == "__main__":
    main()
