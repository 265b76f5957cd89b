"""Remote environments: load on one ``agentgym serve``, and the overhead of serving and of Ray.

* **load**: ``--sessions`` (default 32) concurrent OpenEnv sessions of BabyAI on one loopback
  server, each taking ``--steps`` expert steps (resetting after each episode), bounded by
  ``--time-limit``: steps/s, p50/p99 step latency, the server's peak memory (RSS of the server
  and its children), and whether every finished episode was won by the expert with a consistent
  ``info`` (step counts, no parse errors, no crash).
* **overhead**: steps/s of the same seeded expert episodes of TextWorld and BabyAI locally,
  through the server on loopback (``agentgym/Remote-v0``) and in a Ray actor (``RayEnv``).

Usage::

    .venv/bin/python benchmarks/remote_throughput.py                       # both parts
    .venv/bin/python benchmarks/remote_throughput.py --part load --sessions 32 --steps 100
    .venv/bin/python benchmarks/remote_throughput.py --json results/remote_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym  # noqa: E402

import agentgym_envs  # noqa: E402,F401
from agentgym_envs.remote.codec import decode  # noqa: E402
from agentgym_envs.remote.launch import ServerProcess  # noqa: E402

BABYAI = "agentgym/BabyAI-GoToLocal-v0"
TEXTWORLD = "agentgym/TextWorld-w2-o3-q4-v0"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class _PeakRSS:
    """Samples the RSS of a process tree in a thread; ``peak`` in MiB."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        import psutil

        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = 0.0
        self.idle = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        import psutil

        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


async def _session(url: str, index: int, steps: int, deadline: float, latencies: list[float]) -> dict[str, Any]:
    from agentgym_envs.remote.protocol import AgentGymEnvClient

    kwargs = {"split": "test", "expert_actions": True}
    finished: list[dict[str, Any]] = []
    problems: list[str] = []
    taken = 0
    async with AgentGymEnvClient(url, message_timeout_s=120) as client:
        episode = 0
        while taken < steps and time.monotonic() < deadline:
            result = await client.reset(seed=1000 * index + episode, env_id=BABYAI, env_kwargs=kwargs)
            info = decode(result.observation["info"])
            episode_steps, episode_return = 0, 0.0
            while taken < steps and time.monotonic() < deadline:
                start = time.perf_counter()
                result = await client.step(info["expert_action"])
                latencies.append(time.perf_counter() - start)
                taken += 1
                episode_steps += 1
                episode_return += float(result.reward or 0.0)
                obs = result.observation
                info = decode(obs["info"])
                if info["step"] != episode_steps or info["parse_error"] or info["error"]:
                    problems.append(f"session {index} episode {episode}: inconsistent info {info}")
                if result.done:
                    ok = obs["terminated"] and info["won"] and abs(episode_return - 1.0) < 1e-9
                    if not ok:
                        problems.append(f"session {index} episode {episode}: ended without a win: {info}")
                    finished.append({"steps": episode_steps, "won": bool(info["won"])})
                    break
            episode += 1
    return {"steps": taken, "finished": finished, "problems": problems}


def load_test(sessions: int, steps: int, time_limit_s: float) -> dict[str, Any]:
    """``sessions`` concurrent sessions x ``steps`` expert steps on one loopback server."""
    fixed = {"split": "test", "expert_actions": True}  # what each session sends: clients may only repeat it
    with ServerProcess(BABYAI, fixed, args=["--max-sessions", str(sessions), "--idle-timeout", "0"]) as server:
        latencies: list[float] = []

        async def run_all() -> list[dict[str, Any]]:
            deadline = time.monotonic() + time_limit_s
            return await asyncio.gather(*(_session(server.url, i, steps, deadline, latencies) for i in range(sessions)))

        with _PeakRSS(server.pid) as rss:
            start = time.perf_counter()
            results = asyncio.run(run_all())
            seconds = time.perf_counter() - start
    total = sum(r["steps"] for r in results)
    finished = [e for r in results for e in r["finished"]]
    problems = [p for r in results for p in r["problems"]]
    return {
        "environment": BABYAI,
        "sessions": sessions,
        "steps_per_session": steps,
        "steps": total,
        "seconds": round(seconds, 2),
        "steps_per_s": round(total / seconds, 1),
        "step_latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "step_latency_p99_ms": round(1000 * _percentile(latencies, 99), 2),
        "server_rss_idle_mib": round(rss.idle, 1),
        "server_rss_peak_mib": round(rss.peak, 1),
        "episodes_finished": len(finished),
        "episodes_won": sum(e["won"] for e in finished),
        "all_sessions_complete": all(r["steps"] == steps for r in results),
        "problems": problems[:10],
        "every_episode_correct": not problems,
    }


def _play(env: gym.Env, steps: int) -> tuple[int, float]:
    """Seeded expert episodes until ``steps`` steps; returns (steps, seconds spent in reset + step)."""
    taken, seconds, episode = 0, 0.0, 0
    while taken < steps:
        start = time.perf_counter()
        obs, info = env.reset(seed=episode)
        seconds += time.perf_counter() - start
        done = False
        while not done and taken < steps:
            start = time.perf_counter()
            obs, reward, terminated, truncated, info = env.step(info["expert_action"] or "look")
            seconds += time.perf_counter() - start
            taken += 1
            done = terminated or truncated
        episode += 1
    return taken, seconds


def overhead(steps: dict[str, int]) -> list[dict[str, Any]]:
    """Steps/s locally, through the server on loopback and in a Ray actor, for each environment."""
    import ray

    from agentgym_envs.workers.ray import RayEnv

    rows = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for env_id, n in steps.items():
            kwargs = {"split": "test", "expert_actions": True}
            with ServerProcess(env_id, kwargs) as server:  # the client may only repeat what the server fixes
                makers = {
                    "local": lambda env_id=env_id, kwargs=kwargs: gym.make(env_id, **kwargs),
                    "server (loopback)": lambda env_id=env_id, kwargs=kwargs, url=server.url: gym.make(
                        "agentgym/Remote-v0", url=url, env_id=env_id, **kwargs),
                    "ray actor": lambda env_id=env_id, kwargs=kwargs: RayEnv(env_id, **kwargs),
                }
                local_rate = None
                for backend, make in makers.items():
                    env = make()
                    try:
                        # Warm-up on the very episodes measured: game generation and loading (cached on disk
                        # and in the process), the actor's start, the connection.
                        _play(env, n)
                        taken, seconds = _play(env, n)
                    finally:
                        env.close()
                    rate = taken / seconds
                    local_rate = local_rate or rate
                    rows.append({
                        "environment": env_id,
                        "backend": backend,
                        "steps": taken,
                        "steps_per_s": round(rate, 1),
                        "ms_per_step": round(1000 / rate, 2),
                        "relative_to_local": round(rate / local_rate, 3),
                    })
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["load", "overhead", "both"], default="both")
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="steps per session in the load test")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds; the load test stops there")
    parser.add_argument("--overhead-steps", type=int, default=300, help="steps per backend (TextWorld: a third)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {}
    if args.part in ("load", "both"):
        report["load"] = load_test(args.sessions, args.steps, args.time_limit)
        print(json.dumps(report["load"], indent=2), flush=True)
    if args.part in ("overhead", "both"):
        report["overhead"] = overhead({BABYAI: args.overhead_steps, TEXTWORLD: max(30, args.overhead_steps // 3)})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if "load" in report and not report["load"]["every_episode_correct"]:
        print("load test: some episodes did not finish correctly", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
