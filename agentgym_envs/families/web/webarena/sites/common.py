"""What the embedded sites share: an SQLite database restored from a snapshot, logins, a tiny request router.

Each site is a :class:`SiteApp`: its ``handle(request)`` returns a :class:`Response` (or ``None`` for
a path it does not serve), its state lives in a :class:`SiteDatabase`, and :func:`app_handler` turns it
into the request handler of a :class:`~agentgym_envs.families.web.server.LoopbackServer`.

Example:
    >>> db = SiteDatabase("demo", lambda con: con.execute("CREATE TABLE t (x)"))
    >>> _ = db.write("INSERT INTO t VALUES (1)")
    >>> db.restore()
    >>> db.one("SELECT count(*) AS n FROM t")["n"]
    0
"""

from __future__ import annotations

import hashlib
import html
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

_SNAPSHOTS: dict[str, sqlite3.Connection] = {}
_SNAPSHOTS_LOCK = threading.Lock()


class SiteDatabase:
    """A site's working database (in memory), restored from its seeded snapshot by :meth:`restore`.

    Args:
        key: names the snapshot; databases with the same key share one snapshot per process.
        build: fills a fresh connection with the schema and the seeded rows (run once per key).

    Every request of the site holds :attr:`lock`: one request at a time, as a page of one agent.
    """

    def __init__(self, key: str, build: Callable[[sqlite3.Connection], Any]):
        with _SNAPSHOTS_LOCK:
            if key not in _SNAPSHOTS:
                snapshot = sqlite3.connect(":memory:", check_same_thread=False)
                with snapshot:
                    build(snapshot)
                _SNAPSHOTS[key] = snapshot
        self._snapshot = _SNAPSHOTS[key]
        self.con = sqlite3.connect(":memory:", check_same_thread=False)
        self.con.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self.restore()

    def restore(self) -> None:
        """Put the seeded state back (the whole database, in one SQLite backup)."""
        with self.lock, _SNAPSHOTS_LOCK:
            self.con.rollback()  # a transaction left open would block the backup
            self._snapshot.backup(self.con)

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self.lock:
            return self.con.execute(sql, params).fetchall()

    def one(self, sql: str, *params: Any) -> sqlite3.Row | None:
        with self.lock:
            return self.con.execute(sql, params).fetchone()

    def write(self, sql: str, *params: Any) -> int:
        """Run one statement in its own transaction; the new row's id."""
        with self.lock, self.con:
            return int(self.con.execute(sql, params).lastrowid or 0)


@dataclass
class Request:
    """One HTTP request as a site sees it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    cookies: dict[str, str]


@dataclass
class Response:
    """A page, or a redirect (``location``), with cookies to set."""

    body: str = ""
    status: int = 200
    location: str | None = None
    set_cookies: list[str] = field(default_factory=list)


def e(text: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def slug(text: str) -> str:
    """A URL slug: ``"What's new?"`` -> ``"what-s-new"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "post"


def page(title: str, nav: str, body: str) -> Response:
    return Response(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + e(title) + "</title>"
        "<style>body{font-family:sans-serif;margin:8px} nav a{margin-right:12px} td,th{padding:2px 6px}</style>"
        f"</head><body><nav>{nav}</nav>{body}</body></html>"
    )


class SiteApp:
    """A site: its database, its users and its pages.

    Subclasses set ``name`` and ``cookie_name`` and implement :meth:`route`; users sign in with
    :meth:`login_response` and are recognised by :meth:`user`.
    """

    name = "site"
    cookie_name = "session"
    #: The account the tasks' ``storage_state`` signs in.
    default_user = ""
    db: SiteDatabase

    def token(self, username: str) -> str:
        """The session cookie value of ``username`` (fixed: it is what a ``storage_state`` file holds)."""
        digest = hashlib.sha256(f"agentgym-webarena:{self.name}:{username}".encode()).hexdigest()[:24]
        return f"{quote(username)}.{digest}"

    def user(self, request: Request) -> str | None:
        value = request.cookies.get(self.cookie_name, "")
        username = unquote(value.rsplit(".", 1)[0])
        if not value or self.token(username) != value:
            return None
        row = self.db.one("SELECT username FROM users WHERE username = ?", username)
        return row["username"] if row else None

    def check_password(self, username: str, password: str) -> bool:
        row = self.db.one("SELECT password FROM users WHERE username = ?", username)
        return row is not None and row["password"] == password

    def login_response(self, username: str, location: str) -> Response:
        cookie = f"{self.cookie_name}={self.token(username)}; Path=/; HttpOnly; SameSite=Lax"
        return Response(location=location, set_cookies=[cookie])

    def storage_cookies(self, domain: str) -> list[dict[str, Any]]:
        """Playwright cookies that sign in :attr:`default_user` (what a task's ``storage_state`` names)."""
        return [{"name": self.cookie_name, "value": self.token(self.default_user), "domain": domain, "path": "/",
                 "httpOnly": True, "sameSite": "Lax"}]

    def route(self, request: Request) -> Response | None:
        raise NotImplementedError

    def handle(self, request: Request) -> Response:
        try:
            response = self.route(request)
        except (ValueError, KeyError):
            response = page("Bad request", "<a href='/'>Home</a>", "<h1>Bad request</h1>")
            response.status = 400
            return response
        if response is None:
            response = page("Not found", "<a href='/'>Home</a>", "<h1>Page not found</h1>")
            response.status = 404
        return response


def app_handler(app: SiteApp, base: type[BaseHTTPRequestHandler] = BaseHTTPRequestHandler,
                owns: Callable[[str, str], bool] | None = None) -> type[BaseHTTPRequestHandler]:
    """The request handler class serving ``app``; requests ``owns(method, path)`` refuses go to ``base``.

    Example:
        >>> app_handler(SiteApp()).__name__
        'SiteHandler'
    """

    class SiteHandler(base):  # type: ignore[valid-type, misc]
        server_version = "AgentGymWebArena/1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base-class signature
            pass

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            if owns is not None and not owns(method, parts.path):
                getattr(super(), f"do_{method}")()
                return
            form: dict[str, str] = {}
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                form = {k: v[0] for k, v in parse_qs(data, keep_blank_values=True).items()}
            cookies = {}
            for item in (self.headers.get("Cookie") or "").split(";"):
                if "=" in item:
                    key, value = item.strip().split("=", 1)
                    cookies[key] = value
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            request = Request(method, parts.path.rstrip("/") or "/", query, form, cookies)
            with app.db.lock:
                response = app.handle(request)
            self.send_response(303 if response.location else response.status)
            for cookie in response.set_cookies:
                self.send_header("Set-Cookie", cookie)
            if response.location:
                self.send_header("Location", response.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = response.body.encode("utf-8")
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

    return SiteHandler
