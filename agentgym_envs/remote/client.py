"""``agentgym/Remote-v0``: a Gymnasium environment whose agentgym environment is served elsewhere.

:class:`RemoteEnv` talks to ``agentgym serve`` (an OpenEnv server) over one WebSocket session
and behaves like the local environment: the same observations, rewards (the reward wrappers
run on the server), ``info`` (decoded exactly, tuples and bytes included), splits and seeds;
``task_ids``, ``parser``, ``admissible_actions()`` and ``expert_action()`` are there too, so
``agentgym rollout``, the leaderboard and the trainer take it unchanged.

A dropped connection, a killed server or a reply that does not come within ``timeout_s``
ends the episode as truncated with ``info["truncation_reason"] == "crash"``; the next
``reset`` reconnects (and raises :class:`~agentgym_envs.errors.EnvironmentCrashedError` if
the server cannot be reached).  An error reply of the server is raised as the same exception
type as locally (``gymnasium.error.ResetNeeded``, ``UnknownTaskError``, ...).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/Remote-v0", url="http://127.0.0.1:8000",
    ...                env_id="agentgym/BabyAI-GoToLocal-v0", split="test")   # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                        # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step("turn left")     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentgym_envs.remote.codec import decode, encode
from agentgym_envs.remote.proxy import BackendLost, ProxyTextEnv, RemoteEnvError, raise_remote_error

LOST_CONNECTION_TYPES = ("SessionClosed",)


class RemoteEnv(ProxyTextEnv):
    """An agentgym environment served by ``agentgym serve``, as a Gymnasium env.

    Args:
        url: the server, ``http://host:port``.
        env_id: the environment expected there (the server refuses another one); ``None``: whatever
            the server serves (handy where ``env_id`` is taken, e.g. ``run_episodes("agentgym/Remote-v0", ...)``).
        token: the server's shared token (default: ``$AGENTGYM_SERVE_TOKEN`` if set).
        timeout_s: how long one reply may take before the connection counts as lost.
        connect_timeout_s: how long connecting may take.
        render_mode: ``"ansi"`` or ``"human"``, as locally.
        **env_kwargs: the environment's ``gym.make`` kwargs (``split``, ``reward``, ``seed_range``,
            ``expert_actions``, ...), sent to the server, which builds the environment with them.

    Example:
        >>> env = RemoteEnv("http://127.0.0.1:8000", "agentgym/TextCraft-v0", split="test")  # doctest: +SKIP
        >>> env.task_ids[:2]                                                                # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        env_id: str | None = None,
        token: str | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        import os

        from agentgym_envs.errors import MissingDependencyError

        try:
            import openenv  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("remote", "remote", ["openenv-core"]) from exc
        super().__init__(env_id, env_kwargs, render_mode=render_mode)
        self.url = url
        self.token = token if token is not None else os.environ.get("AGENTGYM_SERVE_TOKEN")
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._client: Any = None
        self._wire_kwargs = encode(self.env_kwargs)

    def _where(self) -> str:
        return self.url

    # ---- backend -------------------------------------------------------------------------------
    def _connect(self) -> None:
        from agentgym_envs.remote.protocol import AgentGymEnvClient

        client = AgentGymEnvClient(
            self.url, token=self.token, connect_timeout_s=self.connect_timeout_s, message_timeout_s=self.timeout_s
        ).sync()
        self._client = client
        try:
            client.connect()
        except ConnectionError as exc:
            status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
            if status in (401, 403):
                raise RemoteEnvError(
                    f"{self.url} refused the connection (HTTP {status}): missing or wrong token"
                ) from exc
            raise BackendLost(str(exc)) from exc

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the connection may be long gone
                pass

    def _request(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        from agentgym_envs.remote.protocol import ServerErrorReply

        if self._client is None:
            raise BackendLost("not connected")
        try:
            result = getattr(self._client, method)(*args, **kwargs)
        except ServerErrorReply as exc:
            if exc.code == "CAPACITY_REACHED":
                self._lose_backend()  # the server closes the connection after this reply
                raise RemoteEnvError(f"{self.url} is at its session limit: {exc.message}") from None
            if exc.type_name in LOST_CONNECTION_TYPES or exc.code == "SESSION_ERROR":
                raise BackendLost(exc.message) from exc
            raise_remote_error(exc.type_name, exc.message)
        except (ConnectionError, ConnectionClosed, OSError, asyncio.TimeoutError, EOFError) as exc:
            raise BackendLost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        return {"observation": result.observation, "reward": result.reward, "done": result.done}

    def _backend_describe(self) -> dict[str, Any]:
        reply = self._request("step", {"query": "describe", "env_id": self.env_id, "env_kwargs": self._wire_kwargs})
        return decode(reply["observation"]["result"])

    def _backend_reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        data: dict[str, Any] = {"env_id": self.env_id, "env_kwargs": self._wire_kwargs}
        if seed is not None:
            data["seed"] = int(seed)
        if options:
            data["options"] = encode(options)
        reply = self._request("reset", **data)
        obs = reply["observation"]
        return _text(obs), decode(obs["info"])

    def _backend_step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        limit = self.parser.max_chars
        if len(action) > limit:  # invalid however long: send its start and its length, not megabytes
            message: dict[str, Any] = {"text": action[: limit + 1], "text_length": len(action)}
        else:
            message = {"text": action}
        reply = self._request("step", message)
        obs = reply["observation"]
        reward = reply["reward"]
        return _text(obs), float(reward if reward is not None else 0.0), obs["terminated"], obs["truncated"], decode(
            obs["info"]
        )

    def _backend_query(self, name: str) -> Any:
        reply = self._request("step", {"query": name})
        return decode(reply["observation"]["result"])


def _text(observation: dict[str, Any]) -> str:
    encoded = observation.get("encoded_text")
    return decode(encoded) if encoded is not None else observation["text"]
