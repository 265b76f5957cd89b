"""Environment workers on real environments: same episodes as in-process, crashes, hangs, no leaked processes."""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import Any

import gymnasium as gym
import psutil
import pytest
from process_checks import descendants

import agentgym_envs  # noqa: F401 - registers the agentgym/ ids
from agentgym_envs.errors import UnknownTaskError
from agentgym_envs.workers import (
    EnvWorker,
    InProcessWorker,
    ProcessWorker,
    make_workers,
    reset_many,
    step_many,
)

TEXTCRAFT = "agentgym/TextCraft-v0"


class FaultyTextCraft(gym.Wrapper):
    """TextCraft whose step raises on ``"explode"`` and never returns on ``"hang"`` (fault injection)."""

    def __init__(self, **kwargs: Any):
        super().__init__(gym.make(TEXTCRAFT, **kwargs))

    def step(self, action: str) -> Any:
        if action == "explode":
            raise RuntimeError("the simulator exploded")
        if action == "hang":
            time.sleep(3600)
        return self.env.step(action)


# Worker processes build it with gym.make("test_workers:FaultyTextCraft-v0"), which imports this module there.
FAULTY = f"{__name__}:FaultyTextCraft-v0"
if "FaultyTextCraft-v0" not in gym.registry:
    gym.register("FaultyTextCraft-v0", entry_point=f"{__name__}:FaultyTextCraft", disable_env_checker=True)


def _running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(before: set[int], also: set[int] = frozenset(), timeout: float = 10.0) -> set[int]:
    """What is still running, after up to ``timeout`` s, of our new descendants and of ``also``."""
    deadline = time.monotonic() + timeout
    while (left := (descendants() - before) | _running(set(also))) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _play(worker: EnvWorker, seed: int, steps: int, options: dict | None = None) -> list[Any]:
    """One seeded episode following the expert: everything the worker returned."""
    worker.reset_async(seed=seed, options=options)
    obs, info = worker.reset_wait()
    trace: list[Any] = [(obs, info)]
    for _ in range(steps):
        worker.step_async(info["expert_action"] or "look")
        obs, reward, terminated, truncated, info = worker.step_wait()
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return trace


@pytest.mark.parametrize(
    ("env_id", "kwargs", "steps"),
    [
        (TEXTCRAFT, {}, 30),
        ("agentgym/TextWorld-w2-o3-q4-v0", {"tasks": [10001]}, 30),
        ("agentgym/ScienceWorld-find-non-living-thing-v0", {}, 12),
    ],
    ids=["textcraft", "textworld", "scienceworld"],
)
def test_process_worker_plays_the_same_episode_as_in_process(env_id: str, kwargs: dict, steps: int) -> None:
    kwargs = {"split": "test", "expert_actions": True, **kwargs}
    local = InProcessWorker(gym.make(env_id, **kwargs))
    remote = ProcessWorker(env_id, **kwargs)
    try:
        assert isinstance(remote, EnvWorker) and isinstance(local, EnvWorker)
        assert remote.pid != os.getpid()
        expected, got = _play(local, 3, steps), _play(remote, 3, steps)
        assert len(expected) > 3
        assert got == expected
    finally:
        local.close()
        remote.close()


def test_killed_worker_truncates_the_episode_and_is_replaced() -> None:
    expected = _play(InProcessWorker(gym.make(TEXTCRAFT, split="test", expert_actions=True)), 5, 6)
    before = descendants()
    with make_workers(TEXTCRAFT, 1, kind="process", split="test", expert_actions=True) as (worker,):
        worker.reset_async(seed=5)
        _, info = worker.reset_wait()
        worker.step_async(info["expert_action"])
        assert worker.step_wait()[4]["step"] == 1
        dead_pid = worker.pid
        os.kill(dead_pid, signal.SIGKILL)
        worker.step_async("inventory")
        obs, reward, terminated, truncated, info = worker.step_wait()
        assert (reward, terminated, truncated) == (0.0, False, True)
        assert info["truncation_reason"] == "crash"
        assert "died" in info["error"] and "SIGKILL" in info["error"]
        assert info["raw_action"] == "inventory" and info["step"] == 2 and info["task_id"] == expected[0][1]["task_id"]
        assert "stopped working" in obs
        with pytest.raises(gym.error.ResetNeeded):
            worker.step_async("inventory")
        # The next reset starts a fresh process, which plays the episode exactly as in-process.
        assert _play(worker, 5, 6) == expected
        assert worker.pid != dead_pid and psutil.pid_exists(worker.pid)
    assert _wait_gone(before) == set()


def test_processes_shared_by_several_environments() -> None:
    """Three environments in one process: a kill ends all three episodes; each then resets and plays again."""
    with make_workers(TEXTCRAFT, 3, kind="process", max_processes=1, split="test") as workers:
        assert len({w.pid for w in workers}) == 1
        firsts = reset_many(workers, seeds=[0, 1, 2])
        assert len({info["task_id"] for _, info in firsts}) == 3
        assert [r[4]["step"] for r in step_many(workers, ["inventory"] * 3)] == [1, 1, 1]
        os.kill(workers[0].pid, signal.SIGKILL)
        results = step_many(workers, ["inventory"] * 3)
        assert [r[4]["truncation_reason"] for r in results] == ["crash"] * 3
        again = reset_many(workers, seeds=[0, 1, 2])
        assert [info["task_id"] for _, info in again] == [info["task_id"] for _, info in firsts]
        assert [r[4]["step"] for r in step_many(workers, ["inventory"] * 3)] == [1, 1, 1]


@pytest.mark.parametrize("kind", ["inprocess", "process"])
def test_an_exception_in_step_is_a_crash_truncation(kind: str) -> None:
    with make_workers(FAULTY, 2, kind=kind, max_processes=1, split="test") as (worker, sibling):
        reset_many([worker, sibling], seeds=[0, 1])
        (obs, reward, terminated, truncated, info), sibling_step = step_many(
            [worker, sibling], ["explode", "inventory"]
        )
        assert truncated and not terminated and reward == 0.0
        assert info["truncation_reason"] == "crash"
        assert info["error"] == "RuntimeError: the simulator exploded"
        assert sorted(info) == sorted(agentgym_envs.INFO_KEYS)
        # Only that environment's episode ended; the other one in the same process goes on.
        assert sibling_step[4]["truncation_reason"] is None
        assert sibling_step[4]["step"] == 1
        worker.reset_async(seed=0)
        _, info = worker.reset_wait()
        assert info["truncation_reason"] is None and info["step"] == 0
        worker.step_async("inventory")
        assert worker.step_wait()[4]["step"] == 1


def test_a_hung_step_is_cut_by_the_timeout() -> None:
    with make_workers(FAULTY, 1, kind="process", timeout_s=3.0, split="test") as (worker,):
        worker.reset_async(seed=0)
        worker.reset_wait()
        hung_pid = worker.pid
        started = time.monotonic()
        worker.step_async("hang")
        *_, truncated, info = worker.step_wait()
        assert time.monotonic() - started < 30
        assert truncated and info["truncation_reason"] == "time_limit" and "TimeoutError" in info["error"]
        assert not psutil.pid_exists(hung_pid) or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE
        worker.reset_async(seed=0)
        _, info = worker.reset_wait()
        assert info["truncation_reason"] is None and worker.pid != hung_pid


def test_caller_errors_are_raised_with_their_type() -> None:
    with pytest.raises(UnknownTaskError):  # building the environment fails in the worker process
        make_workers("agentgym/ScienceWorld-v0", 1, kind="process", task="no-such-task")
    with make_workers(TEXTCRAFT, 1, kind="process", split="test") as (worker,):
        worker.reset_async(options={"task": "no such item"})
        with pytest.raises(UnknownTaskError):
            worker.reset_wait()
        with pytest.raises(TypeError):
            worker.step_async(42)  # type: ignore[arg-type]
        local = gym.make(TEXTCRAFT, split="test")
        assert worker.call("parser.instructions") == local.unwrapped.parser.instructions()
    with pytest.raises(ValueError, match="unknown worker kind"):
        make_workers(TEXTCRAFT, 1, kind="threads")


def test_no_process_left_after_close_or_drop() -> None:
    """ScienceWorld starts a JVM in the worker process: close() and a dropped worker leave neither behind."""
    before = descendants()
    worker = ProcessWorker("agentgym/ScienceWorld-find-non-living-thing-v0", split="test")
    worker.reset_async(seed=0)
    worker.reset_wait()
    started = descendants() - before
    assert len(started) >= 2  # the worker process and its JVM
    worker.close()
    worker.close()  # idempotent
    assert _wait_gone(before, started) == set()

    dropped = ProcessWorker("agentgym/ScienceWorld-find-non-living-thing-v0", split="test")
    dropped.reset_async(seed=0)
    dropped.reset_wait()
    started = descendants() - before
    assert len(started) >= 2
    del dropped
    gc.collect()
    assert _wait_gone(before, started) == set()


def test_killed_worker_leaves_no_jvm_behind() -> None:
    before = descendants()
    with make_workers("agentgym/ScienceWorld-find-non-living-thing-v0", 1, kind="process", split="test") as (worker,):
        worker.reset_async(seed=0)
        worker.reset_wait()
        jvms = {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
        assert jvms
        os.kill(worker.pid, signal.SIGKILL)  # the JVM is orphaned: only the worker's process group still holds it
        worker.step_async("look around")
        assert worker.step_wait()[4]["truncation_reason"] == "crash"
    assert _wait_gone(before, jvms) == set()


class RecordingWorker:
    """A worker that logs when each step is sent and collected, around a real worker (the engine sees a worker)."""

    def __init__(self, inner: Any, index: int, events: list[tuple[str, int]]):
        self.inner, self.index, self.events = inner, index, events
        self.steps_in_background = inner.steps_in_background

    def reset_async(self, seed: int | None = None, options: dict | None = None) -> None:
        self.inner.reset_async(seed=seed, options=options)

    def reset_wait(self) -> Any:
        return self.inner.reset_wait()

    def step_async(self, action: str) -> None:
        self.events.append(("send", self.index))
        self.inner.step_async(action)

    def step_wait(self) -> Any:
        self.events.append(("collect", self.index))
        return self.inner.step_wait()

    def poll(self, timeout: float = 0.0) -> bool:
        return self.inner.poll(timeout)

    def call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self.inner.call(path, *args, **kwargs)

    def close(self) -> None:
        self.inner.close()


class SlowFirstTaskTextCraft(gym.Wrapper):
    """TextCraft whose every step takes 0.4 s more on the first test task (a straggler, as a slow web page is)."""

    def __init__(self, **kwargs: Any):
        super().__init__(gym.make(TEXTCRAFT, **kwargs))
        self.slow = False

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        self.slow = info["task_id"] == self.env.unwrapped.task_ids[0]
        return obs, info

    def step(self, action: str) -> Any:
        if self.slow:
            time.sleep(0.4)
        return self.env.step(action)


SLOW = f"{__name__}:SlowFirstTaskTextCraft-v0"
if "SlowFirstTaskTextCraft-v0" not in gym.registry:
    gym.register("SlowFirstTaskTextCraft-v0", entry_point=f"{__name__}:SlowFirstTaskTextCraft", disable_env_checker=True)


@pytest.mark.parametrize("kind", ["process", "inprocess"])
def test_a_slow_step_does_not_hold_up_the_batch(kind: str) -> None:
    """Out-of-process environments: the others generate on while a straggler's step runs; the episodes are the same."""
    from agentgym_envs.engine import ChatFormat, RolloutConfig, RolloutStats, run_episodes
    from trl_plugins.models import tiny_tokenizer

    tok = tiny_tokenizer()
    fmt = ChatFormat(tok, stop_ids=(tok.eos_token_id,))
    plan = ["inventory", "get 1 oak log", "craft 4 oak planks using 1 oak log", "inventory"]
    events: list[tuple[str, Any]] = []

    def generate(contexts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        # The action depends on the context's length only, so both schedules play the same episodes.
        sent = [i for kind_, i in events if kind_ == "send"]
        collected = [i for kind_, i in events if kind_ == "collect"]
        events.append(("generate", (len(contexts), {i for i in sent if sent.count(i) > collected.count(i)})))
        return [fmt.encode(plan[len(c) % len(plan)]) + [tok.eos_token_id] for c in contexts]

    probe = gym.make(TEXTCRAFT, split="test")
    tasks = [(t, s, s) for s, t in enumerate(list(probe.unwrapped.task_ids)[:4])]
    probe.close()
    played = {}
    for overlap in (None, False):
        events.clear()
        with make_workers(SLOW, 4, kind=kind, max_processes=4, split="test") as inner:
            workers = [RecordingWorker(w, i, events) for i, w in enumerate(inner)]
            stats = RolloutStats()
            episodes = run_episodes(workers, tasks, generate, fmt,
                                    RolloutConfig(max_turns=3, max_new_tokens=16, overlap=overlap), stats)
        played[overlap] = [[(t.text, t.observation) for t in ep.turns] for ep in episodes]
        batches = [e[1] for e in events if e[0] == "generate"]
        if overlap is None and kind == "process":
            # the three fast episodes generate while the straggler (episode 0) is still stepping
            assert stats.overlapped_batches >= 2
            assert any(size == 3 and busy == {0} for size, busy in batches)
            assert sum(size for size, _ in batches) == 12  # every reply generated once
        else:  # lockstep: one batch of four per turn, nothing running during generation
            assert stats.overlapped_batches == 0
            assert batches == [(4, set())] * 3
    assert played[None] == played[False]
    assert all(len(turns) == 3 for turns in played[None])
