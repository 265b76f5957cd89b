"""The environment contract as a check: what every agentgym family promises, tested on one environment.

:func:`check_text_env` is what ``tests/test_contract.py`` runs on every installed family, and what a
third-party family (``docs/environments.md``) runs in its own tests.  It raises ``AssertionError`` naming
the broken promise, as Gymnasium's ``check_env`` does.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> from agentgym_envs.checker import check_text_env
    >>> env = gym.make("agentgym/TextCraft-d1-v0", split="test")
    >>> check_text_env(env)
    >>> env.close()
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

from agentgym_envs.core import INFO_KEYS, SPLITS, TRUNCATION_REASONS, as_text_env
from agentgym_envs.errors import ExpertUnavailableError

__all__ = [
    "check_close_leaves_no_child_process",
    "check_gym_api",
    "check_same_seed_same_episode",
    "check_splits_disjoint",
    "check_text_env",
]


def check_text_env(env: gym.Env, *, seed: int = 3, steps: int = 4) -> None:
    """Check the agentgym environment contract on ``env`` (built by ``gym.make``); raise ``AssertionError`` if broken.

    The checks, each also a function of its own:

    * :func:`check_gym_api`: Gymnasium's ``check_env`` on the unwrapped environment;
    * :func:`check_same_seed_same_episode`: the same seed plays the same episode, on ``env`` and on a fresh
      instance, every ``info`` carrying :data:`~agentgym_envs.core.INFO_KEYS`;
    * :func:`check_splits_disjoint`: the train, valid and test tasks of this configuration do not overlap;
    * :func:`check_close_leaves_no_child_process`: a fresh instance leaves no child process behind after
      ``close()`` (called twice: closing twice is allowed).

    The fresh instances are built from ``env.spec`` (so ``env`` must come from ``gym.make``); ``env`` itself is
    reset and stepped but not closed.

    Args:
        env: the environment to check, e.g. ``gym.make("agentgym/TextCraft-v0", split="test")``.
        seed: the seed of the replayed episode.
        steps: how many steps of the episode to replay.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> env = gym.make("agentgym/TextCraft-d1-v0", split="test")
        >>> check_text_env(env)
        >>> env.close()
    """
    _spec_of(env)
    check_gym_api(env)
    check_same_seed_same_episode(env, seed=seed, steps=steps)
    check_splits_disjoint(env)
    check_close_leaves_no_child_process(env)


def check_gym_api(env: gym.Env) -> None:
    """Gymnasium's ``check_env`` on ``env.unwrapped``, with its random actions seeded (the same every run).

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> check_gym_api(gym.make("agentgym/TextCraft-d1-v0", split="test"))
    """
    as_text_env(env).action_space.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)


def check_same_seed_same_episode(env: gym.Env, *, seed: int = 3, steps: int = 4) -> None:
    """The same seed plays the same episode twice on ``env``, and once more on a fresh instance.

    The episode is played by a policy that depends on the state only: the admissible actions in sorted order,
    else the expert's action (families without admissible actions), else the text ``look``.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> check_same_seed_same_episode(gym.make("agentgym/TextCraft-d1-v0", split="test"))
    """
    first = _episode(env, seed, steps)
    again = _episode(env, seed, steps)
    assert again == first, f"{_name(env)}: the same seed played a different episode the second time"
    fresh = gym.make(_spec_of(env))
    try:
        assert _episode(fresh, seed, steps) == first, f"{_name(env)}: a fresh instance played a different episode"
    finally:
        fresh.close()


def check_splits_disjoint(env: gym.Env) -> None:
    """The tasks of the ``train``, ``valid`` and ``test`` splits of ``env``'s configuration do not overlap.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> check_splits_disjoint(gym.make("agentgym/TextCraft-d1-v0", split="test"))
    """
    spec = _spec_of(env)
    tasks = {}
    for split in SPLITS:
        other = gym.make(spec, split=split)
        try:
            tasks[split] = set(as_text_env(other).task_ids)
        finally:
            other.close()
    assert tasks["train"] and tasks["test"], f"{_name(env)}: the train or the test split has no task"
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            shared = tasks[a] & tasks[b]
            assert not shared, f"{_name(env)}: {a} and {b} share tasks, e.g. {sorted(map(str, shared))[:3]}"


def check_close_leaves_no_child_process(env: gym.Env, *, wait_s: float = 10.0) -> None:
    """A fresh instance of ``env`` that was reset and stepped leaves no child process after ``close()`` (twice).

    Child processes (a JVM, a browser) that are still exiting get ``wait_s`` seconds to go.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> check_close_leaves_no_child_process(gym.make("agentgym/TextCraft-d1-v0", split="test"))
    """
    before = _children()
    fresh = gym.make(_spec_of(env))
    fresh.reset(seed=0)
    fresh.step("look")  # a command, or a parse error in the tool-call families
    fresh.close()
    fresh.close()  # closing twice is allowed
    deadline = time.monotonic() + wait_s
    left = _children() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _children() - before
    assert not left, f"{_name(env)}: close() left child processes behind: {sorted(left)}"


# ---- helpers ---------------------------------------------------------------------------------------------------
def _spec_of(env: gym.Env) -> gym.envs.registration.EnvSpec:
    if env.spec is None:
        raise TypeError(
            "check_text_env needs an environment built by gym.make (env.spec is None): it builds "
            "fresh instances from the spec"
        )
    return env.spec


def _name(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def _episode(env: gym.Env, seed: int, steps: int) -> list[tuple[Any, ...]]:
    """Reset with ``seed``, then up to ``steps`` steps of a policy that depends on the state only.

    Admissible actions come before the expert because TextWorld-Express's gold path differs between runs.
    """
    inner = as_text_env(env)
    obs, info = env.reset(seed=seed)
    _check_info(env, info)
    trace: list[tuple[Any, ...]] = [(obs, info)]
    for step in range(steps):
        admissible = sorted(inner.admissible_actions())
        if admissible:
            command = admissible[step % len(admissible)]
        else:
            try:
                command = inner.expert_action()
            except ExpertUnavailableError:
                command = None
        action = "look" if command is None else inner.parser.format_command(command)
        obs, reward, terminated, truncated, info = env.step(action)
        _check_info(env, info)
        trace.append((obs, reward, terminated, truncated, info))
        if truncated:
            reason = info["truncation_reason"]
            assert reason in TRUNCATION_REASONS, f"{_name(env)}: unknown truncation_reason {reason!r}"
        if terminated or truncated:
            break
    return trace


def _check_info(env: gym.Env, info: dict[str, Any]) -> None:
    missing = [key for key in INFO_KEYS if key not in info]
    assert not missing, f"{_name(env)}: info lacks {missing}"


def _children() -> set[int]:
    """The ids of this process's living descendants (zombies, already exited, are not counted)."""
    try:
        import psutil
    except ImportError:
        return _children_from_proc()
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def _children_from_proc() -> set[int]:
    """:func:`_children` from ``/proc`` (Linux without psutil; elsewhere nothing is found)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # state, then the parent's id
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found
