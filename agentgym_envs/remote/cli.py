"""The ``agentgym serve`` sub-command (registered by :mod:`agentgym_envs.cli`).

Example (shell)::

    agentgym serve agentgym/BabyAI-GoToLocal-v0 --port 8000 --max-sessions 32 split=test
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def _cmd_serve(args: argparse.Namespace) -> int:
    from agentgym_envs.remote.server import TOKEN_ENV, ClientLimits, parse_env_kwargs, serve

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    client_kwargs = tuple(name.strip() for name in args.client_kwargs.split(",") if name.strip())
    serve(
        args.env,
        parse_env_kwargs(args.env_kwargs),
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        token=token or None,
        idle_timeout_s=args.idle_timeout if args.idle_timeout > 0 else None,
        max_message_bytes=args.max_message_bytes,
        log_level=args.log_level,
        limits=ClientLimits(kwargs=client_kwargs),
        docs=args.docs,
    )
    return 0


class _IntermixedParser(argparse.ArgumentParser):
    """A parser that takes ``KEY=VALUE`` positionals after options too (``serve ENV --port 0 split=test``)."""

    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._intermixing:  # parse_known_intermixed_args calls back in (Python < 3.12)
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_subcommand(sub: Any) -> None:
    """Add ``serve`` to the ``agentgym`` sub-command parser ``sub``."""
    p = sub.add_parser(
        "serve",
        help="serve an environment over OpenEnv (WebSocket sessions; needs agentgym-envs[remote])",
        description="Serve a registered environment as an OpenEnv server: one environment per WebSocket session "
        "at /ws, plus /health, /schema and /metadata. Clients: gym.make('agentgym/Remote-v0', url=..., env_id=...).",
    )
    p.add_argument("env", help="a registered id, e.g. agentgym/BabyAI-GoToLocal-v0")
    p.add_argument("env_kwargs", nargs="*", metavar="KEY=VALUE",
                   help="environment arguments fixed by the server (values parsed as JSON), e.g. split=test max_steps=30")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; others need --token)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one, printed at start)")
    p.add_argument("--max-sessions", type=int, default=8, help="concurrent sessions (one environment each)")
    p.add_argument("--token", help="shared token clients must send (default: $AGENTGYM_SERVE_TOKEN)")
    p.add_argument("--idle-timeout", type=float, default=600.0,
                   help="close a session (and free its environment) after this many idle seconds; 0: never")
    p.add_argument("--max-message-bytes", type=int, default=1 << 20, help="larger messages get an error reply")
    p.add_argument("--client-kwargs", default="split", metavar="NAMES",
                   help="comma-separated environment arguments a client may choose (default: split; the seed and "
                   "the task are chosen at reset); '' for none. The operator fixes the rest with KEY=VALUE")
    p.add_argument("--docs", action="store_true", help="also serve /docs and /openapi.json")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)
    p.__class__ = _IntermixedParser
