"""The OpenEnv message types of a served agentgym environment, and the client of the protocol.

An agentgym server is a stock OpenEnv server (``openenv-core``): sessions over the
``/ws`` WebSocket, ``/health``, ``/schema`` and ``/metadata``.  Its types:

* :class:`AgentGymAction` ``{"text": ...}``: the agent's action text, parsed by the environment
  exactly as locally (a text over the parser's limit is sent cut, with ``text_length``: it is an
  invalid action either way, and the server's message limit does not turn it into an error).  With ``query`` set it asks instead of acting (``"describe"``,
  ``"admissible_actions"``, ``"expert_action"``) and the environment does not move.
* :class:`AgentGymObservation`: ``text`` (the observation), ``reward``, ``done``,
  ``terminated`` / ``truncated`` (Gymnasium's pair) and ``info`` (the whole ``info`` dict,
  JSON-safe via :mod:`agentgym_envs.remote.codec`; OpenEnv leaves ``metadata`` out of the wire
  format, so ``info`` is a field of its own).
* reset data: ``seed``, ``options``, ``env_id`` and ``env_kwargs`` (the client's ``gym.make`` kwargs).

Errors come back as OpenEnv error replies whose message starts with the exception's type name
(``"ResetNeeded: ..."``), which the client raises again as the same type.

Importing this module imports ``openenv``: it is only imported when a server or client is made.

Example:
    >>> import asyncio
    >>> from agentgym_envs.remote.protocol import AgentGymEnvClient
    >>> async def play():                                                    # doctest: +SKIP
    ...     async with AgentGymEnvClient("http://127.0.0.1:8000") as client:
    ...         result = await client.reset(seed=0, env_id="agentgym/BabyAI-GoToLocal-v0")
    ...         result = await client.step("go forward")
    ...         return result.observation["text"], result.reward, result.done
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from agentgym_envs.errors import MissingDependencyError

try:
    from openenv.core.client_types import StepResult
    from openenv.core.env_client import EnvClient
    from openenv.core.env_server.types import Action, Observation, State
    from pydantic import Field
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError("remote", "remote", [exc.name or "openenv-core"]) from exc

QUERY_KINDS = ("describe", "admissible_actions", "expert_action")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class AgentGymAction(Action):
    """One message to a served environment: an action text, or a query."""

    text: str = Field(default="", description="The agent's action text, parsed by the environment as locally.")
    query: Literal["describe", "admissible_actions", "expert_action"] | None = Field(
        default=None, description="Ask instead of act: the environment does not move."
    )
    env_id: str | None = Field(default=None, description="With query='describe': the environment the client expects.")
    env_kwargs: dict[str, Any] | None = Field(default=None, description="With query='describe': the client's kwargs.")
    text_length: int | None = Field(
        default=None, ge=0,
        description="The length of the agent's text when only its start is sent: a text over the parser's limit is "
        "an invalid action whatever it says after its first characters, so the client sends that much.",
    )


class AgentGymObservation(Observation):
    """What a served environment answers (``reward`` and ``done`` come from OpenEnv's base)."""

    text: str = Field(default="", description="The observation text.")
    terminated: bool = Field(default=False, description="Gymnasium's terminated (won or lost).")
    truncated: bool = Field(default=False, description="Gymnasium's truncated (step limit or crash).")
    info: dict[str, Any] = Field(default_factory=dict, description="The environment's info dict (JSON-safe encoding).")
    result: Any = Field(default=None, description="The answer to a query (JSON-safe encoding).")
    encoded_text: Any = Field(
        default=None, description="The observation text in the codec's encoding when UTF-8 cannot carry it (a lone "
        "surrogate echoed from the action); ``text`` is then empty.",
    )


class AgentGymState(State):
    """The session's state: OpenEnv's ``episode_id`` / ``step_count`` plus the environment id."""

    env_id: str | None = None


class ServerErrorReply(RuntimeError):
    """An error reply of the server: ``code`` (OpenEnv's error code), ``type_name`` and ``message``."""

    def __init__(self, code: str, message: str):
        self.code = code
        head, sep, tail = message.partition(": ")
        simple = sep and head.isidentifier()
        self.type_name = head if simple else ""
        self.message = tail if simple else message
        super().__init__(f"[{code}] {message}")


class AgentGymEnvClient(EnvClient[Any, dict, AgentGymState]):
    """An OpenEnv ``EnvClient`` for a served agentgym environment (async; ``.sync()`` for a blocking one).

    Args:
        base_url: ``http://host:port`` (or ``ws://``) of ``agentgym serve``.
        token: the server's shared token, sent as ``Authorization: Bearer <token>``.
        **kwargs: ``connect_timeout_s``, ``message_timeout_s``, ``max_message_size_mb`` of ``EnvClient``.

    Example:
        >>> client = AgentGymEnvClient("http://127.0.0.1:8000").sync()   # doctest: +SKIP
        >>> with client:                                                 # doctest: +SKIP
        ...     first = client.reset(seed=0)
        ...     client.step("look").observation["text"]
    """

    def __init__(self, base_url: str, token: str | None = None, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self._token = token
        self._loopback = any(f"//{h}:" in self._ws_url or self._ws_url.endswith(f"//{h}/ws") for h in LOOPBACK_HOSTS)

    async def connect(self) -> AgentGymEnvClient:
        if self._ws is not None:
            return self
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        try:
            self._ws = await ws_connect(
                self._ws_url,
                open_timeout=self._connect_timeout,
                max_size=self._max_message_size,
                additional_headers=headers,
                # Loopback: no proxy, and no compression (it costs more CPU than it saves bytes).
                proxy=None if self._loopback else True,
                compression=None if self._loopback else "deflate",
                close_timeout=2,
            )
        except Exception as exc:
            raise ConnectionError(f"cannot connect to {self._ws_url}: {exc}") from exc
        return self

    async def _send_and_receive(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            await self._send(message)
        except ConnectionClosed:
            # The server may have answered and closed before we spoke (e.g. CAPACITY_REACHED right after
            # the handshake): its last words are still buffered, and say more than "connection closed".
            response = await self._last_words()
            if response is None:
                raise
        else:
            response = await self._receive()
        if response.get("type") == "error":
            data = response.get("data", {})
            raise ServerErrorReply(str(data.get("code", "UNKNOWN")), str(data.get("message", "unknown error")))
        return response

    async def _last_words(self) -> dict[str, Any] | None:
        if self._ws is None:
            return None
        try:
            return json.loads(await asyncio.wait_for(self._ws.recv(), timeout=1.0))
        except Exception:  # noqa: BLE001 - nothing was buffered
            return None

    def _step_payload(self, action: Any) -> dict[str, Any]:
        if isinstance(action, str):
            return {"text": action}
        if isinstance(action, dict):
            return dict(action)
        if isinstance(action, AgentGymAction):
            return action.model_dump(exclude_none=True, exclude={"metadata"})
        raise TypeError(f"an action is a str, a dict or an AgentGymAction, not {type(action).__name__}")

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[dict]:
        return StepResult(
            observation=payload.get("observation", {}),
            reward=payload.get("reward"),
            done=bool(payload.get("done", False)),
        )

    def _parse_state(self, payload: dict[str, Any]) -> AgentGymState:
        return AgentGymState(**payload)


def error_message(exc: BaseException) -> str:
    """How a server-side exception travels: ``"TypeName: message"``."""
    text = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return f"{type(exc).__name__}: {text}"

