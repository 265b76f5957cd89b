"""The serving side of a remote environment: one environment, driven by messages.

:class:`EnvHost` is what an OpenEnv session (:mod:`agentgym_envs.remote.server`) and a Ray
actor (:mod:`agentgym_envs.workers.ray`) hold.  It builds the environment with
:func:`~agentgym_envs.registry.make_env` (reward wrappers included, so rewards are computed
where the environment runs), and answers ``reset``, ``step``, ``describe`` and on-demand
queries (admissible actions, the expert's action).

Example:
    >>> host = EnvHost("agentgym/BabyAI-GoToLocal-v0", {"split": "test"})  # doctest: +SKIP
    >>> host.describe()["family"]                                          # doctest: +SKIP
    'babyai'
    >>> obs, info = host.reset(seed=0)                                     # doctest: +SKIP
    >>> host.close()                                                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from agentgym_envs.core import as_text_env
from agentgym_envs.registry import make_env, registration

QUERIES = ("admissible_actions", "expert_action")


def describe(env: gym.Env) -> dict[str, Any]:
    """What a client needs to present ``env`` as if it were local (tasks, parser, limits).

    Example:
        >>> describe(gym.make("agentgym/BabyAI-GoToLocal-v0"))["parser"]["format"]  # doctest: +SKIP
        'plain'
    """
    inner = as_text_env(env)
    parser = inner.parser
    return {
        "env_id": env.spec.id if env.spec is not None else None,
        "family": inner.family,
        "split": inner.split,
        "task_ids": list(inner.task_ids),
        "max_steps": inner.max_steps,
        "max_observation_chars": inner.observation_space.max_length,
        "parser": {
            "format": parser.format,
            "max_chars": parser.max_chars,
            "tools": [[t.name, list(t.parameters), t.description] for t in parser.tools.values()],
        },
    }


class EnvHost:
    """One environment on the serving side.

    Args:
        env_id: a registered ``agentgym/`` id (an unknown id raises ``gymnasium.error.UnregisteredEnv``).
        env_kwargs: keyword arguments of :func:`~agentgym_envs.registry.make_env` (``split``,
            ``reward``, ``seed_range``, ``admissible_actions``, ...).

    Example:
        >>> host = EnvHost("agentgym/TextCraft-v0", {"split": "test"})  # doctest: +SKIP
        >>> host.step("craft 1 stick")                                 # doctest: +SKIP
        Traceback (most recent call last):
        gymnasium.error.ResetNeeded: ...
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any] | None = None):
        registration(env_id)
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        if isinstance(self.env_kwargs.get("seed_range"), list):
            self.env_kwargs["seed_range"] = tuple(self.env_kwargs["seed_range"])
        self.env: gym.Env | None = make_env(env_id, **self.env_kwargs)
        self.started = False

    def _live_env(self) -> gym.Env:
        if self.env is None:
            raise gym.error.ClosedEnvironmentError("this environment was closed")
        return self.env

    def describe(self) -> dict[str, Any]:
        return {**describe(self._live_env()), "env_id": self.env_id}

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = self._live_env().reset(seed=seed, options=dict(options) if options else None)
        self.started = True
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            raise TypeError(f"an action is a str, not {type(action).__name__}")
        if not self.started:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, reward, terminated, truncated, info = self._live_env().step(action)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def query(self, name: str) -> Any:
        """``"admissible_actions"`` or ``"expert_action"``, computed now."""
        if name not in QUERIES:
            raise ValueError(f"unknown query {name!r}; choose one of {', '.join(QUERIES)}")
        if not self.started:
            raise gym.error.ResetNeeded("call reset() before asking for actions")
        return getattr(as_text_env(self._live_env()), name)()

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            env.close()
