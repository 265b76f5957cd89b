"""``agentgym serve``: any registered environment as an OpenEnv server.

The app is ``openenv-core``'s own (:class:`openenv.core.env_server.HTTPEnvServer`): one
environment instance per WebSocket session on ``/ws``, plus ``/health``, ``/schema`` and
``/metadata``.  It is mounted in OpenEnv's *production* mode, which leaves out the stateless
HTTP ``/reset`` and ``/step`` (each would build and throw away a simulator per request).
What this module adds around it:

* :class:`AgentGymEnvironment`, the OpenEnv ``Environment`` of one session: it holds an
  :class:`~agentgym_envs.remote.host.EnvHost`, built on the first ``reset`` (or ``describe``)
  from the server's fixed kwargs plus the few a client may choose (:class:`ClientLimits`: the
  split by default, the seed and the task at reset), and carries the whole ``info`` in every
  observation;
* a guard in front of the app: the shared token (``Authorization: Bearer``) when one is set;
  only ``/ws``, ``/health``, ``/schema`` and ``/metadata`` are served (``/docs`` and
  ``/openapi.json`` on request; OpenEnv's ``/mcp``, whose sessions would hold capacity with no
  connection open, never); a message that is oversized, binary or not a JSON object gets an error
  reply and the session goes on; a client that vanishes is not an error;
* binding: loopback unless told otherwise, and never a non-loopback address without a token.

A session's environment is closed (its JVM or browser freed) when the client disconnects,
when the session idles past ``idle_timeout_s``, and when the server shuts down.  A bad request
(another environment id, a malformed action, a step before reset, an oversized message) gets
an error reply; the session and every other session go on.

Example (shell)::

    agentgym serve agentgym/BabyAI-GoToLocal-v0 --port 8000 --max-sessions 32 split=test
    AGENTGYM_SERVE_TOKEN=s3cret agentgym serve agentgym/ScienceWorld-v0 --host 0.0.0.0 --port 8000

Example (Python):
    >>> app = create_app("agentgym/BabyAI-GoToLocal-v0", {"split": "test"}, max_sessions=8)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json
import logging
import math
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentgym_envs.remote.codec import decode, encode, utf8_safe
from agentgym_envs.remote.host import EnvHost
from agentgym_envs.remote.protocol import (
    AgentGymAction,
    AgentGymObservation,
    AgentGymState,
    error_message,
)

try:
    from fastapi import FastAPI
    from openenv.core.env_server.http_server import HTTPEnvServer
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import ConcurrencyConfig, EnvironmentMetadata, ServerMode
    from starlette.websockets import WebSocketDisconnect
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from agentgym_envs.errors import MissingDependencyError

    raise MissingDependencyError("remote", "remote", [exc.name or "openenv-core"]) from exc

TOKEN_ENV = "AGENTGYM_SERVE_TOKEN"
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: What a client may choose by default besides the seed and the task: the split.
DEFAULT_CLIENT_KWARGS = ("split",)
#: The paths served (the rest answer 404); ``/docs`` and ``/openapi.json`` are added on request.
SERVED_PATHS = frozenset({"/ws", "/health", "/schema", "/metadata"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
_LOG = logging.getLogger("agentgym_envs.remote.server")


@dataclass(frozen=True)
class ClientLimits:
    """What a client may choose: the ``make_env`` kwargs named in ``kwargs``, a seed and a task, within bounds.

    Everything else about the environment is the operator's, fixed when the server starts: a
    client that sends another kwarg is refused unless its value is the one the server uses anyway
    (so ``reward="sparse"`` passes on a server that did not fix ``reward``).  Allowed values are JSON
    scalars (strings up to ``max_string_chars``, integers up to ``max_int`` in size, finite floats)
    or short lists of them (``seed_range=[0, 99]``); never objects, so no file paths in nested
    configs, no world sizes.  Seeds are integers in ``[0, 2**63)``; reset options name a ``task``
    only.

    Example:
        >>> ClientLimits(kwargs=("split", "reward")).check_kwarg("reward", "dense")
        >>> ClientLimits().check_kwarg("split", {"path": "/etc"})
        Traceback (most recent call last):
        ValueError: a client may set split only to a string, number, bool or a short list of them
    """

    kwargs: tuple[str, ...] = DEFAULT_CLIENT_KWARGS
    max_string_chars: int = 256
    max_int: int = 1 << 31
    max_list_items: int = 8
    options: tuple[str, ...] = ("task",)

    def check_kwarg(self, key: str, value: Any) -> None:
        """Raise ``ValueError`` unless a client may set ``key`` to ``value``."""
        if key not in self.kwargs:
            allowed = ", ".join(self.kwargs) or "nothing"
            raise ValueError(
                f"this server does not let clients set {key}; clients may set: {allowed} (the operator fixes the "
                f"rest: agentgym serve ... {key}=VALUE, or --client-kwargs {','.join([*self.kwargs, key])})"
            )
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(items) > self.max_list_items or not all(map(self._scalar_ok, items)):
            raise ValueError(f"a client may set {key} only to a string, number, bool or a short list of them")

    def _scalar_ok(self, value: Any) -> bool:
        if value is None or isinstance(value, bool):
            return True
        if isinstance(value, str):
            return len(value) <= self.max_string_chars
        if isinstance(value, int):
            return abs(value) <= self.max_int
        return isinstance(value, float) and math.isfinite(value) and abs(value) <= self.max_int

    def check_seed(self, seed: Any) -> None:
        if seed is None:
            return
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
        if not 0 <= seed < 1 << 63:
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")

    def check_options(self, options: Mapping[str, Any]) -> None:
        for key in options:
            if key not in self.options:
                raise ValueError(f"reset option {key!r} is not accepted here; options: {', '.join(self.options)}")


def default_kwargs(env_id: str) -> dict[str, Any]:
    """The ``make_env`` kwargs ``env_id`` is built with when nobody sets them (what a no-op client kwarg equals).

    Example:
        >>> default_kwargs("agentgym/TextCraft-v0")["reward"]
        'sparse'
    """
    from agentgym_envs.registry import _env_class, make_env, registration

    reg = registration(env_id)
    defaults: dict[str, Any] = {}
    for fn in (make_env, *(cls.__init__ for cls in reversed(_env_class(reg).__mro__) if "__init__" in vars(cls))):
        for name, param in inspect.signature(fn).parameters.items():
            if param.default is not inspect.Parameter.empty:
                defaults[name] = param.default
    return {**defaults, **reg.kwargs}


class RequestError(RuntimeError):
    """A request the session refuses; the message is ``"TypeName: why"`` (see :func:`error_message`)."""


def _refuse(exc: BaseException) -> RequestError:
    return RequestError(error_message(exc))


class AgentGymEnvironment(Environment[AgentGymAction, AgentGymObservation, AgentGymState]):
    """The OpenEnv ``Environment`` of one session: one agentgym environment, built lazily.

    Args:
        env_id: the environment this server serves.
        fixed_kwargs: ``make_env`` kwargs set by the server (a client may not change them).
        limits: what a client may choose (:class:`ClientLimits`; default: the split, a seed, a task).

    Example:
        >>> env = AgentGymEnvironment("agentgym/BabyAI-GoToLocal-v0", {"split": "test"})  # doctest: +SKIP
        >>> env.reset(seed=0).text[:20]                                                    # doctest: +SKIP
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(
        self, env_id: str, fixed_kwargs: Mapping[str, Any] | None = None, limits: ClientLimits | None = None
    ):
        super().__init__()
        self.env_id = env_id
        self.fixed_kwargs = dict(fixed_kwargs or {})
        self.limits = limits if limits is not None else ClientLimits()
        self._defaults: dict[str, Any] | None = None
        self.host: EnvHost | None = None
        self._host_kwargs: dict[str, Any] | None = None
        self._episode_id: str | None = None
        self._steps = 0
        self._closed = False

    # ---- session plumbing ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RequestError("SessionClosed: this session was closed (idle timeout or shutdown); reconnect")

    def _host(self, env_id: str | None, env_kwargs: Mapping[str, Any] | None) -> EnvHost:
        self._check_open()
        if env_id is not None and env_id != self.env_id:
            raise RequestError(f"UnregisteredEnv: this server serves {self.env_id!r}, not {env_id!r}")
        kwargs = dict(self.fixed_kwargs)
        for key, value in decode(dict(env_kwargs or {})).items():
            if key in self.fixed_kwargs:
                if value != self.fixed_kwargs[key]:
                    raise RequestError(
                        f"ValueError: this server fixes {key}={self.fixed_kwargs[key]!r}; the client asked for "
                        f"{value!r:.80}"
                    )
                continue
            if self._is_default(key, value):
                continue  # the value the server uses anyway
            try:
                self.limits.check_kwarg(key, value)
            except ValueError as exc:
                raise _refuse(exc) from exc
            kwargs[key] = value
        if self.host is None or kwargs != self._host_kwargs:
            self._close_host()
            try:
                self.host = EnvHost(self.env_id, kwargs)
            except Exception as exc:
                raise _refuse(exc) from exc
            self._host_kwargs = kwargs
        return self.host

    def _is_default(self, key: str, value: Any) -> bool:
        if self._defaults is None:
            self._defaults = default_kwargs(self.env_id)
        if key not in self._defaults:
            return False
        default = self._defaults[key]
        return type(value) is type(default) and value == default and not isinstance(value, (dict, list, tuple))

    def _close_host(self) -> None:
        host, self.host = self.host, None
        self._host_kwargs = None
        if host is not None:
            host.close()

    def _observation(self, text: str, reward: float | None, terminated: bool, truncated: bool,
                     info: dict[str, Any]) -> AgentGymObservation:
        wire_info = encode(info)
        safe = utf8_safe(text)
        return AgentGymObservation(
            text=text if safe else "", encoded_text=None if safe else encode(text), reward=reward,
            done=terminated or truncated, terminated=terminated, truncated=truncated, info=wire_info, metadata=wire_info,
        )

    # ---- OpenEnv Environment API ---------------------------------------------------------------
    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> AgentGymObservation:
        host = self._host(kwargs.get("env_id"), kwargs.get("env_kwargs"))
        options = kwargs.get("options")
        try:
            self.limits.check_seed(seed)
            if options is not None and not isinstance(options, dict):
                raise TypeError(f"options must be an object, not {type(options).__name__}")
            self.limits.check_options(options or {})
        except (TypeError, ValueError) as exc:
            raise _refuse(exc) from exc
        try:
            text, info = host.reset(seed=seed, options=decode(options) if options else None)
        except Exception as exc:
            raise _refuse(exc) from exc
        self._episode_id = episode_id or str(uuid.uuid4())
        self._steps = 0
        return self._observation(text, None, False, False, info)

    def step(self, action: AgentGymAction, timeout_s: float | None = None, **kwargs: Any) -> AgentGymObservation:
        if action.query is not None:
            return self._answer(action)
        self._check_open()
        if self.host is None:
            raise RequestError("ResetNeeded: call reset() before step()")
        text = action.text
        if action.text_length is not None:
            text = self._cut_text(text, action.text_length)
        try:
            text, reward, terminated, truncated, info = self.host.step(text)
        except Exception as exc:
            raise _refuse(exc) from exc
        self._steps += 1
        return self._observation(text, reward, terminated, truncated, info)

    def _cut_text(self, start: str, length: int) -> str:
        from agentgym_envs.core import as_text_env

        assert self.host is not None and self.host.env is not None
        limit = as_text_env(self.host.env).parser.max_chars
        if len(start) != limit + 1 or length < len(start):
            raise RequestError(
                f"ValueError: text_length is for a text over the parser's limit of {limit} characters, sent as its "
                f"first {limit + 1}; got {len(start)} characters and text_length={length}"
            )
        return _CutText(start, length)

    def _answer(self, action: AgentGymAction) -> AgentGymObservation:
        if action.query == "describe":
            host = self._host(action.env_id, action.env_kwargs)
            result: Any = host.describe()
        else:
            self._check_open()
            if self.host is None:
                raise RequestError("ResetNeeded: call reset() before asking for actions")
            try:
                result = self.host.query(action.query)
            except Exception as exc:
                raise _refuse(exc) from exc
        return AgentGymObservation(result=encode(result))

    @property
    def state(self) -> AgentGymState:
        return AgentGymState(episode_id=self._episode_id, step_count=self._steps, env_id=self.env_id)

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=self.env_id,
            description=f"agentgym environment {self.env_id}, served by agentgym-envs over OpenEnv",
            version="0.1.0",
        )

    def close(self) -> None:
        self._closed = True
        self._close_host()


class _CutText(str):
    """The first characters of an action text that is too long to send, with the whole text's length.

    The parser rejects any text over its limit and keeps only its first 200 characters, so this
    stands in for the whole text: the same invalid action as locally, without megabytes on the wire.
    """

    def __new__(cls, start: str, length: int) -> _CutText:
        text = super().__new__(cls, start)
        text._length = int(length)
        return text

    def __len__(self) -> int:
        return self._length


class _Guard:
    """ASGI middleware in front of OpenEnv's app: the token, the served paths, and bad or vanished clients.

    Messages the app would fail on (over the size limit, binary, JSON that is not an object) get an
    error reply here and never reach it, so the session goes on.  A client that disconnects
    abruptly is not an error: what the app then fails to send is dropped, and nothing is logged.
    """

    def __init__(self, app: Any, token: str | None, max_message_bytes: int, paths: frozenset[str] = SERVED_PATHS):
        self.app = app
        self.token = token
        self.max_message_bytes = int(max_message_bytes)
        self.paths = paths

    def _authorized(self, scope: Mapping[str, Any]) -> bool:
        if not self.token:
            return True
        expected = f"Bearer {self.token}".encode()
        for name, value in scope.get("headers", []):
            if name == b"authorization" and hmac.compare_digest(value, expected):
                return True
        return False

    async def __call__(self, scope: Mapping[str, Any], receive: Callable, send: Callable) -> None:
        kind = scope.get("type")
        if kind in ("http", "websocket"):
            if scope.get("path") not in self.paths:
                await _refuse_connection(kind, receive, send, 404, "not found")
                return
            if not self._authorized(scope) and not (kind == "http" and scope.get("path") == "/health"):
                await _refuse_connection(kind, receive, send, 401, "missing or wrong token (send Authorization: "
                                         "Bearer <token>)")
                return
        if kind != "websocket":
            await self.app(scope, receive, send)
            return
        connection = _Connection(receive, send, self.max_message_bytes)
        try:
            await self.app(scope, connection.receive, connection.send)
        except Exception as exc:  # noqa: BLE001 - decided below
            if not connection.gone and not isinstance(exc, WebSocketDisconnect):
                raise
            # The client left (OpenEnv then fails to send to it or to close it): not the server's error.
            _LOG.debug("websocket client gone: %s: %s", type(exc).__name__, exc)


async def _refuse_connection(kind: str, receive: Callable, send: Callable, status: int, why: str) -> None:
    if kind == "http":
        body = json.dumps({"detail": why}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    else:
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})


class _Connection:
    """One WebSocket as the app sees it: bad messages answered here, sends after a disconnect dropped."""

    def __init__(self, receive: Callable, send: Callable, limit: int):
        self._receive = receive
        self._send = send
        self.limit = limit
        self.gone = False

    async def send(self, message: Mapping[str, Any]) -> None:
        if self.gone:
            return
        try:
            await self._send(message)
        except Exception:
            self.gone = True  # the transport is closed: the client left
            raise

    async def _reply_error(self, text: str, code: str) -> None:
        await self.send({"type": "websocket.send", "text": json.dumps({"type": "error", "data": {
            "message": text, "code": code}})})

    async def receive(self) -> Mapping[str, Any]:
        while True:
            message = await self._receive()
            kind = message.get("type")
            if kind == "websocket.disconnect":
                self.gone = True
                return message
            if kind != "websocket.receive":
                return message
            text, data = message.get("text"), message.get("bytes")
            if text is None:
                await self._reply_error(
                    f"BinaryFrame: messages are JSON text; got a binary frame of {len(data or b'')} bytes",
                    "INVALID_JSON")
                continue
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.limit:
                await self._reply_error(
                    f"PayloadTooLarge: a message of {size} bytes is over this server's limit of {self.limit} bytes",
                    "PAYLOAD_TOO_LARGE")
                continue
            try:
                value = json.loads(text)
            except ValueError:
                return message  # not JSON at all: OpenEnv answers INVALID_JSON and goes on
            if not isinstance(value, dict):
                await self._reply_error(
                    f"NotAnObject: a message is a JSON object with a type, not a {type(value).__name__}",
                    "INVALID_JSON")
                continue
            if value.get("type") == "mcp":  # OpenEnv's MCP methods could reach other sessions; not served
                await self._reply_error("UnknownType: this server does not serve MCP messages", "UNKNOWN_TYPE")
                continue
            return message


def create_app(
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    max_sessions: int = 8,
    token: str | None = None,
    idle_timeout_s: float | None = 600.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    limits: ClientLimits | None = None,
    docs: bool = False,
) -> Any:
    """The ASGI app serving ``env_id``: OpenEnv's ``HTTPEnvServer`` behind the token / size guard.

    ``limits`` says what clients may choose (default :class:`ClientLimits`: the split, a seed, a
    task); ``docs=True`` also serves ``/docs`` and ``/openapi.json``.

    Raises ``gymnasium.error.UnregisteredEnv`` for an unknown id and
    :class:`~agentgym_envs.errors.MissingDependencyError` when the family is not installed.

    Example:
        >>> import uvicorn                                                             # doctest: +SKIP
        >>> uvicorn.run(create_app("agentgym/TextCraft-v0"), host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from functools import partial

    from agentgym_envs.registry import registration

    registration(env_id).family.check()
    if max_sessions < 1:
        raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
    fixed = dict(env_kwargs or {})
    server = HTTPEnvServer(
        partial(AgentGymEnvironment, env_id, fixed, limits if limits is not None else ClientLimits()),
        AgentGymAction,
        AgentGymObservation,
        concurrency_config=ConcurrencyConfig(max_concurrent_envs=max_sessions, session_timeout=idle_timeout_s),
    )
    app = FastAPI(
        title=f"agentgym: {env_id}", description="An agentgym-envs environment served over OpenEnv.",
        docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None,
    )
    server.register_routes(app, mode=ServerMode.PRODUCTION)

    async def close_all_sessions() -> None:
        # Uvicorn closes the sockets; make sure every simulator / browser goes with them.
        for session_id in list(server._sessions):
            await server._destroy_session(session_id)

    app.router.on_shutdown.append(close_all_sessions)
    app.state.openenv_server = server
    return _Guard(app, token, max_message_bytes, SERVED_PATHS | DOCS_PATHS if docs else SERVED_PATHS)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    """``["split=test", "max_steps=30", "seed_range=[0,9]"]`` -> kwargs (values parsed as JSON, else strings).

    Example:
        >>> parse_env_kwargs(["split=test", "max_steps=30", "expert_actions=true"])
        {'split': 'test', 'max_steps': 30, 'expert_actions': True}
    """
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"environment arguments are key=value, got {item!r}")
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


def serve(
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_sessions: int = 8,
    token: str | None = None,
    idle_timeout_s: float | None = 600.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    log_level: str = "warning",
    ready: Callable[[str], None] | None = None,
    limits: ClientLimits | None = None,
    docs: bool = False,
) -> None:
    """Serve ``env_id`` until interrupted (what ``agentgym serve`` runs).

    ``port=0`` picks a free port; ``ready(url)`` is called (default: print it) once the
    socket is bound.  A non-loopback ``host`` needs a ``token``.  ``limits`` and ``docs``: see
    :func:`create_app`.

    Example:
        >>> serve("agentgym/BabyAI-GoToLocal-v0", {"split": "test"}, port=8000)  # doctest: +SKIP
    """
    import uvicorn

    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to serve on {host!r} without a token: anyone who can reach it could run the environment; "
            f"pass --token (or set {TOKEN_ENV}), or bind 127.0.0.1"
        )
    app = create_app(env_id, env_kwargs, max_sessions, token, idle_timeout_s, max_message_bytes, limits, docs)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)  # connections made from now on wait in the backlog until uvicorn accepts them
    bound_port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound_port}"
    config = uvicorn.Config(
        app,
        log_level=log_level,
        # Messages over the limit get an error reply from the guard; far bigger frames close the connection.
        ws_max_size=max(4 * max_message_bytes, 16 << 20),
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    (ready or (lambda u: print(f"agentgym serve: {env_id} on {u} (OpenEnv WebSocket at {u}/ws)", flush=True)))(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
