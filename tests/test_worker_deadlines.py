"""Every worker process and Ray actor has a step deadline (by default its family's): a stopped simulator ends its
episode with ``truncation_reason="time_limit"`` instead of blocking the batch, and a Ray actor takes its deadline
once.  Real worker processes and actors, stopped with SIGSTOP."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

import agentgym_envs  # noqa: F401 - registers the agentgym/ ids
from agentgym_envs.registry import DEFAULT_STEP_TIMEOUT_S, Family, registration
from agentgym_envs.workers import make_workers, reset_many, step_deadline_s, step_many

TEXTCRAFT = "agentgym/TextCraft-v0"
REPO = Path(__file__).resolve().parents[1]


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def _resume(pid: int) -> None:
    """Let a stopped process go on if it is still there (so a failing test leaves nothing stopped behind)."""
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def test_a_familys_deadline_follows_where_it_steps_unless_it_names_one():
    assert registration(TEXTCRAFT).family.step_timeout_s == DEFAULT_STEP_TIMEOUT_S["inprocess"] == 60.0
    assert registration("agentgym/ScienceWorld-v0").family.step_timeout_s == DEFAULT_STEP_TIMEOUT_S["process"]
    assert Family("slow", extra="slow", step_timeout_s=900).step_timeout_s == 900.0
    for bad in (0, -1.0, float("nan"), "60"):
        with pytest.raises(ValueError, match="step_timeout_s must be a number of seconds > 0"):
            Family("bad", extra="bad", step_timeout_s=bad)
        with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0"):
            step_deadline_s(TEXTCRAFT, bad)


def test_process_workers_get_their_familys_deadline_unless_told_otherwise():
    with make_workers(TEXTCRAFT, 2, kind="process", max_processes=1, split="test") as workers:
        assert [w.timeout_s for w in workers] == [60.0, 60.0]  # what the leaderboard and the trainer get
    with make_workers(TEXTCRAFT, 1, kind="process", timeout_s=5, split="test") as (worker,):
        assert worker.timeout_s == 5.0
    with make_workers(TEXTCRAFT, 1, kind="process", timeout_s=math.inf, split="test") as (worker,):
        assert worker.timeout_s is None


def test_a_stopped_worker_process_ends_its_episode_with_time_limit_and_the_batch_goes_on():
    with make_workers(TEXTCRAFT, 2, kind="process", max_processes=2, timeout_s=2.0, split="test") as workers:
        reset_many(workers, seeds=[0, 1])
        stopped = workers[0].pid
        assert stopped is not None and stopped != workers[1].pid
        os.kill(stopped, signal.SIGSTOP)
        try:
            started = time.monotonic()
            (*_, truncated, info), (*_, other_truncated, other_info) = step_many(workers, ["inventory"] * 2)
            elapsed = time.monotonic() - started
        finally:
            _resume(stopped)
        assert truncated and info["truncation_reason"] == "time_limit" and "TimeoutError" in info["error"]
        assert not other_truncated and other_info["truncation_reason"] is None and other_info["step"] == 1
        assert 2.0 <= elapsed < 10.0
        assert _gone(stopped), "the stopped worker process was not killed"
        _, info = reset_many(workers[:1], seeds=[0])[0]
        assert info["truncation_reason"] is None and workers[0].pid != stopped


def test_the_leaderboard_refuses_a_deadline_that_is_not_one(tmp_path):
    from agentgym_envs.eval.runner import run_leaderboard
    from agentgym_envs.eval.suite import load_suite

    with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0"):
        run_leaderboard(load_suite("quick"), ["random"], tmp_path, env_step_timeout_s=0)
    assert not list(tmp_path.iterdir())


@pytest.mark.timeout(240)
def test_a_stopped_ray_actor_takes_its_deadline_once():
    ray = pytest.importorskip("ray")
    from agentgym_envs.workers.ray import RayEnv

    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}
    )
    try:
        assert RayEnv(TEXTCRAFT, split="test").timeout_s == 60.0  # the family's, without an actor started
        env = RayEnv(TEXTCRAFT, split="test", timeout_s=4.0)
        try:
            first, _ = env.reset(seed=0)
            pid = env.worker_pid()
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                *_, truncated, info = env.step("inventory")
                elapsed = time.monotonic() - started
            finally:
                _resume(pid)
            assert truncated and info["truncation_reason"] == "time_limit" and "4 s" in info["error"]
            assert 4.0 <= elapsed < 7.5  # once: the graceful close of a stopped actor is not waited for
            assert _gone(pid, timeout=60), "the stopped actor was not killed"
            assert env.reset(seed=0)[0] == first and env.worker_pid() != pid
        finally:
            env.close()
    finally:
        ray.shutdown()


def test_the_trainers_workers_get_the_familys_deadline_or_the_configured_one(tmp_path):
    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.envs import EnvPool
    from trl_plugins.errors import TrainerConfigError

    with pytest.raises(TrainerConfigError, match="env_step_timeout_s"):
        AgentGRPOConfig(output_dir=str(tmp_path), env_id=TEXTCRAFT, env_step_timeout_s=-1)
    for configured, expected in ((None, 60.0), (7.0, 7.0)):
        args = AgentGRPOConfig(output_dir=str(tmp_path), env_id=TEXTCRAFT, env_step_timeout_s=configured)
        pool = EnvPool(
            lambda: None, "process", TEXTCRAFT, {"split": "test"}, max_processes=1, timeout_s=args.env_step_timeout_s
        )
        try:
            assert [w.timeout_s for w in pool.take(2)] == [expected, expected]
        finally:
            pool.close()
