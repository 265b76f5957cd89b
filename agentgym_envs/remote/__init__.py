"""Environments past one machine: the transport that serves an environment and talks to it over the network.

* ``agentgym serve ENV_ID`` (:mod:`agentgym_envs.remote.server`) exposes any registered
  environment as an OpenEnv server; needs ``pip install 'agentgym-envs[remote]'``.
* ``gym.make("agentgym/Remote-v0", url=..., env_id=..., **kwargs)``
  (:class:`~agentgym_envs.remote.client.RemoteEnv`) is its Gymnasium client.
* :mod:`~agentgym_envs.remote.proxy` (a Gymnasium env whose environment lives elsewhere),
  :mod:`~agentgym_envs.remote.host` (the serving side of one environment), the message codec and protocol,
  and ``agentgym serve``'s launcher are shared by the server and by the Ray workers
  (:mod:`agentgym_envs.workers.ray`, which uses this package: ``RayEnv`` moved there).

Nothing here imports ``openenv`` until it is used.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/Remote-v0", url="http://127.0.0.1:8000",
    ...                env_id="agentgym/TextCraft-v0", split="test")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["RemoteEnv", "RemoteEnvError"]


def __getattr__(name: str) -> Any:
    if name == "RemoteEnv":
        from agentgym_envs.remote.client import RemoteEnv

        return RemoteEnv
    if name == "RayEnv":  # an environment worker, not transport: it lives with the other workers now
        raise AttributeError("RayEnv moved: from agentgym_envs.workers.ray import RayEnv")
    if name == "RemoteEnvError":
        from agentgym_envs.remote.proxy import RemoteEnvError

        return RemoteEnvError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
