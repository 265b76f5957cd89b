"""Playing episodes: one policy in one environment, and the statistics of what it did.

Any :class:`~agentgym_envs.eval.policies.Policy` plays here (scripted or model); the
leaderboard (:mod:`agentgym_envs.eval.runner`) and ``agentgym rollout`` both use
:func:`play_episode`.

Example:
    >>> from agentgym_envs.eval.policies import ExpertPolicy
    >>> results = play_episodes("agentgym/TextWorld-w2-o3-q4-v0", ExpertPolicy(), episodes=2)  # doctest: +SKIP
    >>> summarize(results)["success_rate"]                                                      # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agentgym_envs.eval.policies import Policy
from agentgym_envs.registry import make
from agentgym_envs.stats import wilson_interval


@dataclass
class EpisodeResult:
    """The outcome of one episode."""

    env_id: str
    policy: str
    task_id: Any
    seed: int
    won: bool
    episode_return: float
    steps: int
    invalid_actions: int
    truncated: bool
    truncation_reason: str | None
    seconds: float
    step_seconds: float
    transcript: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def transcript_turn(text: str, observation: str, reward: float, info: dict[str, Any]) -> dict[str, Any]:
    """One turn of a transcript: what the agent wrote, what was executed, and what came back.

    ``text`` is the raw text of the agent (a model's reply, or a scripted policy's formatted command);
    ``action`` the command executed after parsing (``None`` if the text could not be parsed, then
    ``parse_error`` says why); ``observation`` and ``reward`` are what ``step`` returned.

    Example:
        >>> transcript_turn("go north", "You are in the hall.", 0.0, {"action": "go north", "parse_error": None})
        {'text': 'go north', 'action': 'go north', 'parse_error': None, 'reward': 0.0, 'observation': 'You are in the hall.'}
    """
    return {
        "text": str(text),
        "action": info.get("action"),
        "parse_error": info.get("parse_error"),
        "reward": float(reward),
        "observation": str(observation),
    }


def transcript_record(instruction: str, first_observation: str, turns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The transcript of one episode (what ``episodes.jsonl`` and ``agentgym rollout --json`` store).

    Any playing loop (scripted, batched model rollouts) builds its transcript with this function and
    :func:`transcript_turn`, so every transcript has the same keys: ``instruction``, ``first_observation``
    (what ``reset`` returned) and ``turns`` (one :func:`transcript_turn` per ``step``).

    Example:
        >>> transcript_record("Win.", "You are in a room.", [])
        {'instruction': 'Win.', 'first_observation': 'You are in a room.', 'turns': []}
    """
    return {"instruction": str(instruction), "first_observation": str(first_observation), "turns": list(turns)}


def play_episode(env: gym.Env, policy: Policy, seed: int, env_id: str = "") -> EpisodeResult:
    """Play one episode of ``policy`` in ``env`` from ``reset(seed=seed)``, with its transcript."""
    start = time.perf_counter()
    policy.reset(seed)
    obs, info = env.reset(seed=seed)
    task_id = info.get("task_id")
    instruction, first_observation = info.get("instruction") or "", obs
    turns: list[dict[str, Any]] = []
    total, steps, invalid = 0.0, 0, 0
    terminated = truncated = False
    stepping_started = time.perf_counter()
    while not (terminated or truncated):
        action = policy.act(obs, info, env)
        obs, reward, terminated, truncated, info = env.step(action)
        turns.append(transcript_turn(action, obs, reward, info))
        total += float(reward)
        steps += 1
        invalid += info.get("parse_error") is not None
    return EpisodeResult(
        env_id=env_id,
        policy=policy.name,
        task_id=task_id,
        seed=seed,
        won=bool(info.get("won")),
        episode_return=total,
        steps=steps,
        invalid_actions=invalid,
        truncated=bool(truncated),
        truncation_reason=info.get("truncation_reason"),
        seconds=time.perf_counter() - start,
        step_seconds=time.perf_counter() - stepping_started,
        transcript=transcript_record(instruction, first_observation, turns),
    )


def play_episodes(
    env_id: str,
    policy: Policy,
    episodes: int,
    seed: int = 0,
    progress: bool = True,
    **env_kwargs: Any,
) -> list[EpisodeResult]:
    """Play ``episodes`` episodes with seeds ``seed, seed+1, ...`` (test split by default).

    Example:
        >>> from agentgym_envs.eval.policies import RandomPolicy
        >>> play_episodes("agentgym/TextWorld-w2-o3-q4-v0", RandomPolicy(seed=0), 5, progress=False)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env_kwargs = {"split": "test", **policy.env_kwargs, **env_kwargs}
    env = make(env_id, **env_kwargs)
    results: list[EpisodeResult] = []
    try:
        bar = tqdm(range(episodes), desc=f"{policy.name} on {env_id}", disable=not progress, unit="ep")
        for i in bar:
            results.append(play_episode(env, policy, seed + i, env_id))
            bar.set_postfix(success=f"{np.mean([r.won for r in results]):.2f}")
    finally:
        env.close()
    return results


def summarize(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Success rate (with a 95 % Wilson interval), mean return, mean steps, invalid-action rate, steps/s.

    Steps/s counts the time spent choosing and executing actions (policy and ``step``),
    not resets, which for some families include generating or loading the game.
    """
    n = len(results)
    if n == 0:
        raise ValueError("no episodes to summarize")
    wins = sum(r.won for r in results)
    steps = sum(r.steps for r in results)
    low, high = wilson_interval(wins, n)
    return {
        "episodes": n,
        "success_rate": wins / n,
        "success_ci_low": low,
        "success_ci_high": high,
        "mean_return": float(np.mean([r.episode_return for r in results])),
        "mean_steps": steps / n,
        "invalid_action_rate": sum(r.invalid_actions for r in results) / max(1, steps),
        "steps_per_second": steps / max(1e-9, sum(r.step_seconds for r in results)),
    }
