"""Reward wrappers, composable with each other and with Gymnasium's wrappers.

The raw reward of a :class:`~agentgym_envs.core.TextEnv` is the change of the
family's score (``info["score"]``) on that step.  These wrappers replace or adjust it:

* :class:`SparseReward` pays 1 on the step that wins the task, 0 otherwise.
* :class:`DenseReward` pays the score delta divided by ``info["max_score"]``, so a
  whole winning episode sums to 1 for families whose score ends at its maximum.
* :class:`StepPenalty` subtracts a constant on every step.
* :class:`FormatPenalty` subtracts a constant whenever the action text could not
  be parsed (``info["parse_error"]`` is set).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> from gymnasium.wrappers import RecordEpisodeStatistics
    >>> env = gym.make("agentgym/TextWorld-w2-o3-q4-v0", reward="native")  # doctest: +SKIP
    >>> env = RecordEpisodeStatistics(FormatPenalty(DenseReward(env), 0.1))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

REWARD_MODES = ("sparse", "dense", "native")


class SparseReward(gym.Wrapper):
    """Reward 1.0 on the step where ``info["won"]`` becomes true, else 0.0.

    Example:
        >>> env = SparseReward(gym.make("agentgym/TextWorld-w2-o3-q4-v0", reward="native"))  # doctest: +SKIP
    """

    def step(self, action: Any):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(bool(terminated and info.get("won"))), terminated, truncated, info


class DenseReward(gym.Wrapper):
    """Reward ``(score_t - score_{t-1}) / max_score``: progress, normalized.

    Example:
        >>> env = DenseReward(gym.make("agentgym/TextWorld-w2-o3-q4-v0", reward="native"))  # doctest: +SKIP
    """

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        max_score = info.get("max_score") or 1.0
        return obs, float(reward) / float(max_score), terminated, truncated, info


class _Penalty(gym.Wrapper):
    """Subtract ``penalty`` on the steps where :meth:`applies` says so."""

    def __init__(self, env: gym.Env, penalty: float):
        super().__init__(env)
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0 (it is subtracted), got {penalty}")
        self.penalty = float(penalty)

    def applies(self, info: dict[str, Any]) -> bool:
        raise NotImplementedError

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.applies(info):
            reward = float(reward) - self.penalty
        return obs, float(reward), terminated, truncated, info


class StepPenalty(_Penalty):
    """Subtract ``penalty`` on every step (a cost of time).

    Example:
        >>> env = StepPenalty(gym.make("agentgym/TextWorld-w2-o3-q4-v0"), 0.01)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, penalty: float = 0.01):
        super().__init__(env, penalty)

    def applies(self, info: dict[str, Any]) -> bool:
        return True


class FormatPenalty(_Penalty):
    """Subtract ``penalty`` when the action text could not be parsed into an action.

    Example:
        >>> env = FormatPenalty(gym.make("agentgym/TextWorld-w2-o3-q4-v0"), 0.1)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, penalty: float = 0.1):
        super().__init__(env, penalty)

    def applies(self, info: dict[str, Any]) -> bool:
        return bool(info.get("parse_error"))


def apply_reward_wrappers(
    env: gym.Env, reward: str = "sparse", step_penalty: float = 0.0, format_penalty: float = 0.0
) -> gym.Env:
    """Wrap ``env`` with the reward wrappers that the keywords select (what ``gym.make`` uses)."""
    if reward not in REWARD_MODES:
        raise ValueError(f"reward must be one of {', '.join(REWARD_MODES)}, not {reward!r}")
    if reward == "sparse":
        env = SparseReward(env)
    elif reward == "dense":
        env = DenseReward(env)
    if step_penalty:
        env = StepPenalty(env, step_penalty)
    if format_penalty:
        env = FormatPenalty(env, format_penalty)
    return env
