"""Gymnasium vector environments over agentgym: sync and async (shared memory) give the same episodes."""

from __future__ import annotations

import copy
import multiprocessing as mp

import gymnasium as gym
import pytest
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

import agentgym_envs  # noqa: F401  (registers the ids)
from agentgym_envs import DataNotFoundError, MissingDependencyError, TextSpace
from agentgym_envs.registry import registration

# One id per family; a family whose extra or data is missing is skipped.
FAMILY_IDS = [
    "agentgym/TextCraft-v0",
    "agentgym/DeepSearch-h1-v0",
    "agentgym/TextWorld-w2-o3-q4-v0",
    "agentgym/BabyAI-GoToRedBall-v0",
    "agentgym/ALFWorld-PickAndPlace-v0",
    "agentgym/TWX-coin-v0",
    "agentgym/ScienceWorld-boil-v0",
    "agentgym/MiniWoB-click-test-v0",
    "agentgym/WebShop-v0",
    "agentgym/WebArena-v0",
]


def _available(env_id: str) -> str:
    if env_id not in gym.registry:
        pytest.skip(f"{env_id} is not registered here")
    missing = registration(env_id).family.missing()
    if missing:
        pytest.skip(f"{env_id} needs {missing}")
    return env_id


def _play(env_id: str, mode: str) -> list:
    """Reset with seed 0 and take two steps in a 2-env vector env; what each call returned."""
    try:
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, split="test")
    except (MissingDependencyError, DataNotFoundError) as exc:
        pytest.skip(str(exc))
    try:
        obs, info = envs.reset(seed=0)
        record = [(obs, tuple(info["task_id"]))]
        for action in ("look", "inventory"):
            obs, reward, terminated, truncated, info = envs.step(("look", action))
            record.append((obs, tuple(reward), tuple(terminated), tuple(truncated)))
        return record
    finally:
        envs.close()


@pytest.mark.parametrize("env_id", FAMILY_IDS)
def test_async_vector_env_matches_sync(env_id: str) -> None:
    _available(env_id)
    sync = _play(env_id, "sync")
    async_ = _play(env_id, "async")  # gymnasium's default: shared memory
    for (obs_sync, *rest_sync), (obs_async, *rest_async) in zip(sync, async_, strict=True):
        assert isinstance(obs_async, tuple) and all(isinstance(o, str) for o in obs_async)
        assert all(o.strip() for o in obs_async), "an observation came back empty"
        assert obs_async == obs_sync
        assert rest_async == rest_sync


def test_async_observations_follow_every_step_without_copy() -> None:
    # copy=False hands out the shared buffer's live view: it must show the latest step, like numpy views do.
    envs = gym.make_vec("agentgym/TextCraft-v0", num_envs=2, vectorization_mode="async",
                        vector_kwargs={"copy": False})
    try:
        first, _ = envs.reset(seed=0)
        before = tuple(first)
        after, *_ = envs.step(("inventory", "inventory"))
        assert tuple(after) != before
        assert all(o.startswith("Inventory") for o in after)
        assert copy.deepcopy(after) == tuple(after) and type(copy.deepcopy(after)) is tuple
    finally:
        envs.close()


@pytest.mark.parametrize("text", ["", "plain ascii", "héllo wörld ✓ 漢字 🙂", "tab\tnew\nline", "lone \ud800 surrogate"])
def test_text_space_shared_memory_round_trip(text: str) -> None:
    space = TextSpace(40)
    buffer = create_shared_memory(space, n=3, ctx=mp.get_context("fork"))
    batch = read_from_shared_memory(space, buffer, n=3)
    write_to_shared_memory(space, 1, text, buffer)
    write_to_shared_memory(space, 2, "x" * 40, buffer)
    assert tuple(batch) == ("", text, "x" * 40)
    write_to_shared_memory(space, 1, "short", buffer)  # a shorter text replaces a longer one entirely
    assert batch[1] == "short" and batch[-1] == "x" * 40 and len(batch) == 3


def test_text_space_shared_memory_rejects_oversized_text() -> None:
    space = TextSpace(4)
    buffer = create_shared_memory(space, n=1, ctx=mp.get_context("fork"))
    with pytest.raises(ValueError, match="does not fit"):
        write_to_shared_memory(space, 0, "🙂" * 5, buffer)
