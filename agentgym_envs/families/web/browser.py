"""One headless Chromium per Python thread, shared by many environments through contexts.

Playwright's sync API binds its objects to the thread (greenlet) that created them and
refuses to run inside a running asyncio event loop.  So a :class:`SharedBrowser` is kept
per thread and reference counted: the first :class:`BrowserSession` of a thread starts
Playwright and Chromium, the last one to close stops both.  Code that already runs an
event loop (Jupyter, an async trainer) must drive the environments from a worker thread
or from subprocesses (e.g. ``gymnasium.vector.AsyncVectorEnv``).

A :class:`BrowserSession` is one environment's browser context and page.  It enforces
the loopback-only policy (every request to another origin and every navigation to
``file:``, ``data:``, ``javascript:`` ... is blocked and counted; WebSockets and WebRTC
are blocked too, see :class:`ProxySink`), dismisses dialogs, closes new windows, and
reports a dead browser or page as :class:`~agentgym_envs.errors.EnvironmentCrashedError`.

Every browser call runs under a deadline (:meth:`BrowserSession.deadline`): a page script
in an endless loop or a hung renderer blocks Playwright's sync calls for ever, so a
watchdog thread interrupts the page from outside (Chrome DevTools'
``Runtime.terminateExecution``, then closing the page, then killing Chromium) and the
call raises :class:`BrowserDeadlineError`.

Example:
    >>> from agentgym_envs.families.web.browser import BrowserConfig, BrowserSession
    >>> session = BrowserSession(BrowserConfig(), allowed_origins=["http://127.0.0.1:8000"])  # doctest: +SKIP
    >>> session.goto("http://127.0.0.1:8000/")  # doctest: +SKIP
    >>> session.close()                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agentgym_envs.errors import AgentGymError, BrowserNotFoundError, EnvironmentCrashedError, MissingDependencyError

#: Environment variable naming the Chromium (or Chrome) executable to use.
BROWSER_ENV_VAR = "AGENTGYM_CHROMIUM"

#: Flags that keep headless Chromium quiet, offline and runnable as root in containers.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--mute-audio",
    "--disable-dev-shm-usage",
    # Defense in depth behind request routing: no name resolves except loopback.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
    # WebRTC may only use UDP through a proxy, and the only proxy is the refusing ProxySink:
    # no STUN packet leaves the browser, not even to loopback (the API is also disabled in pages).
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)

#: Extra time a browser call gets beyond its own Playwright timeout before the watchdog steps in,
#: and between the watchdog's escalating interruptions.
DEADLINE_SLACK_MS = 2000

#: Run in every frame before the page's own scripts: WebRTC cannot be created at all (each attempt
#: is reported on the console, where the session counts it).
BLOCK_WEBRTC_JS = r"""
(() => {
  const report = console.error.bind(console);
  for (const name of ['RTCPeerConnection', 'webkitRTCPeerConnection']) {
    if (!(name in window)) continue;
    const blocked = function () {
      report('agentgym-blocked: webrtc ' + name);
      throw new DOMException(name + ' is disabled in this environment', 'NotSupportedError');
    };
    Object.defineProperty(window, name, {value: blocked, configurable: false, writable: false});
  }
})();
"""
_BLOCKED_MARK = "agentgym-blocked: "

T = TypeVar("T")

_SYSTEM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


@dataclass(frozen=True)
class BrowserConfig:
    """How to launch Chromium and the limits of one environment's page.

    Args:
        executable_path: a Chromium binary; default: ``$AGENTGYM_CHROMIUM``, then Debian's
            ``/usr/bin/chromium`` (and similar), then Playwright's own managed browser if the
            user installed one.
        headless: run without a window.
        action_timeout_ms: the most one browser action (click, type, ...) may take.
        navigation_timeout_ms: the most a page load may take.
        script_timeout_ms: the most one script evaluation (reading the page, checking an element)
            may take.  Every browser call has a deadline: its own timeout (one of these three)
            plus ``DEADLINE_SLACK_MS``; past it the page is interrupted and the call raises
            :class:`BrowserDeadlineError` (the step truncates the episode, ``"time_limit"``).
        viewport: page size in CSS pixels.
        extra_args: more Chromium flags.

    Example:
        >>> BrowserConfig(action_timeout_ms=500).action_timeout_ms
        500
    """

    executable_path: str | None = None
    headless: bool = True
    action_timeout_ms: int = 3000
    navigation_timeout_ms: int = 10000
    script_timeout_ms: int = 5000
    viewport: tuple[int, int] = (800, 600)
    extra_args: tuple[str, ...] = ()


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable to launch, or ``None`` to use Playwright's managed browser.

    Raises :class:`BrowserNotFoundError` when neither exists; never downloads anything.

    Example:
        >>> find_chromium()  # doctest: +SKIP
        '/usr/bin/chromium'
    """
    for candidate in (explicit, os.environ.get(BROWSER_ENV_VAR)):
        if candidate:
            path = shutil.which(candidate) or candidate
            if not Path(path).exists():
                raise BrowserNotFoundError(f"Chromium executable {candidate!r} does not exist")
            return path
    for candidate in _SYSTEM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    managed = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    if managed.is_dir() and any(managed.glob("chromium*")):
        return None
    raise BrowserNotFoundError(
        "no Chromium found: install Debian's `chromium` (apt-get install chromium), or set "
        f"${BROWSER_ENV_VAR} to a Chromium executable"
    )


def _check_no_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise AgentGymError(
        "the web environments use Playwright's sync API, which cannot run inside a running asyncio "
        "event loop; create and step them in a worker thread or a subprocess (e.g. AsyncVectorEnv)"
    )


class SharedBrowser:
    """The Playwright driver and Chromium process of the current thread, reference counted.

    Use :meth:`acquire` / :meth:`release` (what :class:`BrowserSession` does).  A browser
    that died is relaunched by the next :meth:`acquire`.

    Example:
        >>> shared = SharedBrowser.acquire(BrowserConfig())  # doctest: +SKIP
        >>> shared.browser.is_connected()                    # doctest: +SKIP
        True
        >>> shared.release()                                 # doctest: +SKIP
    """

    _local = threading.local()

    def __init__(self, config: BrowserConfig):
        self.config = config
        #: A flag on Chromium's command line that lets tests and benchmarks find its processes.
        self.marker = f"--agentgym-browser={uuid.uuid4().hex}"
        self.refs = 0
        self._playwright: Any = None
        self.browser: Any = None

    @classmethod
    def acquire(cls, config: BrowserConfig) -> SharedBrowser:
        """The thread's shared browser (started or restarted as needed), with one more reference."""
        shared: SharedBrowser | None = getattr(cls._local, "shared", None)
        if shared is None or shared._playwright is None:
            # (Once Playwright runs, its own loop is the running one: only check before.)
            _check_no_event_loop()
        if shared is None:
            shared = cls._local.shared = cls(config)
        shared._ensure_running()
        shared.refs += 1
        return shared

    @classmethod
    def current(cls) -> SharedBrowser | None:
        """The thread's shared browser, if one is running."""
        return getattr(cls._local, "shared", None)

    def release(self) -> None:
        """Drop one reference; the last one stops Chromium and the Playwright driver."""
        self.refs = max(0, self.refs - 1)
        if self.refs == 0:
            self.shutdown()

    def _ensure_running(self) -> None:
        if self.browser is not None and self.browser.is_connected():
            return
        if self._playwright is None:
            try:
                from playwright.sync_api import sync_playwright
            except ImportError as exc:
                raise MissingDependencyError("web", "web", ["playwright"]) from exc
            self._playwright = sync_playwright().start()
        executable = find_chromium(self.config.executable_path)
        args = [*CHROMIUM_ARGS, *self.config.extra_args, self.marker]
        try:
            self.browser = self._playwright.chromium.launch(
                executable_path=executable, headless=self.config.headless, args=args
            )
        except Exception as exc:
            raise EnvironmentCrashedError(f"could not launch Chromium ({executable}): {exc}") from exc

    def pids(self) -> list[int]:
        """Process ids of this browser's Chromium processes (all of them, helpers included)."""
        return browser_pids(self.marker)

    def shutdown(self) -> None:
        """Close Chromium and stop the Playwright driver (safe to call twice)."""
        browser, playwright = self.browser, self._playwright
        self.browser = self._playwright = None
        if browser is not None:
            try:
                browser.close()
            except Exception:  # noqa: BLE001 - a dead browser is already closed
                pass
        if playwright is not None:
            try:
                playwright.stop()
            except Exception:  # noqa: BLE001
                pass
        if getattr(self._local, "shared", None) is self:
            self._local.shared = None


def browser_pids(marker: str) -> list[int]:
    """Ids of the live processes whose command line contains ``marker``, and their descendants.

    Chromium's helper processes (renderers, GPU, utility) do not repeat the browser's
    flags, so they are found as children of the marked process (Linux ``/proc``).
    """
    marked, parents = [], {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z":
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        if marker.encode() in cmdline:
            marked.append(pid)
    found = set(marked)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


class BrowserDeadlineError(EnvironmentCrashedError):
    """A browser call outlived its deadline (an endless page script, a hung renderer).

    The page was interrupted and the session must be replaced (:meth:`BrowserSession.recover`);
    :class:`~agentgym_envs.families.web.base.WebEnv` truncates the episode with
    ``truncation_reason="time_limit"``.
    """


@dataclass
class SafetyCounters:
    """What the loopback policy stopped during one episode (reported in ``info``).

    :meth:`count` may be called from another thread (the :class:`ProxySink`).
    """

    blocked_requests: int = 0
    blocked_urls: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    popups_closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, url: str) -> None:
        """Count one blocked request, navigation, WebSocket or WebRTC attempt."""
        with self._lock:
            self.blocked_requests += 1
            self.blocked_urls.append(url[:200])
            del self.blocked_urls[:-10]

    def as_info(self) -> dict[str, Any]:
        with self._lock:
            return {
                "blocked_requests": self.blocked_requests,
                "blocked_urls": list(self.blocked_urls[-10:]),
                "dialogs": list(self.dialogs[-10:]),
                "popups_closed": self.popups_closed,
            }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


_PROXY_REQUEST = re.compile(rb"^(CONNECT|[A-Z]+) (\S+) HTTP/")

#: Hosts that Chromium itself contacts in the background (autofill, updates, safe browsing): refused
#: like everything else at the sink, but not counted against the page.
BROWSER_SERVICE_DOMAINS = ("googleapis.com", "google.com", "gstatic.com", "gvt1.com", "googleusercontent.com")


def _is_browser_service(target: bytes) -> bool:
    host = urlsplit(target.decode("latin-1") if b"://" in target else "//" + target.decode("latin-1")).hostname or ""
    return any(host == d or host.endswith("." + d) for d in BROWSER_SERVICE_DOMAINS)


class ProxySink:
    """A refusing HTTP proxy on loopback: the proxy of a browser context, except for its own site.

    Request routing sees the requests of pages and frames; it does not see WebSockets from
    workers, and WebRTC does not go through it at all.  So every context is given this sink
    as its proxy (with only the environment's own origins bypassing it, and Chromium's usual
    loopback exemption removed) and WebRTC may only use proxied UDP: whatever escaped routing
    arrives here, is counted through ``on_blocked`` and gets ``403``.  Nothing is forwarded.
    Chromium's own background requests (:data:`BROWSER_SERVICE_DOMAINS`) are refused uncounted.

    Example:
        >>> seen = []
        >>> sink = ProxySink(seen.append)
        >>> sink.server.startswith("http://127.0.0.1:")
        True
        >>> sink.close()
    """

    def __init__(self, on_blocked: Callable[[str], None]):
        self._on_blocked = on_blocked
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.25)  # the accept loop checks for close() this often
        self.port = self._sock.getsockname()[1]
        self.server = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"agentgym-sink-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(1.0)
                    head = conn.recv(2048)
                    match = _PROXY_REQUEST.match(head)
                    target = match.group(2).decode("latin-1") if match else "unknown"
                    if match and match.group(1) == b"CONNECT":
                        target = f"{target} (tunnel: WebSocket or TLS)"
                    if not (match and _is_browser_service(match.group(2))):
                        self._on_blocked(f"proxy: {target}")
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening (safe to call twice)."""
        self._closed.set()
        self._sock.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


def _on_fresh_stack(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``method(*args, **kwargs)`` (a Playwright sync call) run on a new greenlet, i.e. a new Python stack.

    Playwright keeps the caller's stack of its latest sync call alive (for the stack traces of its
    errors) until the next call.  From an environment's method that stack holds the environment,
    so a dropped environment would stay alive (and unfinalized) after ``del``; from here it does not.
    """
    import greenlet  # Playwright's own dependency

    return greenlet.greenlet(lambda: method(*args, **kwargs)).switch()


def playwright_can_be_driven(shared: SharedBrowser | None) -> bool:
    """Whether sync Playwright calls may be made here: on the browser's thread, outside Playwright's event loop.

    A finalizer can run anywhere (another thread, or inside Playwright's dispatcher when a
    garbage collection happens there), where a sync call would deadlock.
    """
    if shared is None or shared._playwright is None or SharedBrowser.current() is not shared:
        return False
    import greenlet

    return greenlet.getcurrent() is not getattr(shared._playwright, "_dispatcher_fiber", None)


@dataclass(eq=False)
class _Watch:
    """One armed deadline: when it is due, the steps still to take, and the names of those taken."""

    due: float
    slack: float
    steps: list[Callable[[], None]]
    fired: list[str] = field(default_factory=list)


class _Watchdog:
    """The one thread that interrupts pages past their deadlines, for every session of the process.

    A thread started per browser call cost more than many calls (over a millisecond on a loaded
    machine, four or more times a step); arming and disarming a :class:`_Watch` here takes a lock.
    A due watch takes its next step (see :meth:`BrowserSession.deadline`), then waits ``slack``
    for the following one.
    """

    def __init__(self) -> None:
        self._start_process()

    def _start_process(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._armed: set[_Watch] = set()
        self._wake_at = float("inf")  # when the thread wakes next; an earlier watch must wake it
        self._thread: threading.Thread | None = None

    def arm(self, timeout_s: float, slack_s: float, steps: tuple[Callable[[], None], ...]) -> _Watch:
        if self._pid != os.getpid():  # a forked child has no watchdog thread (nor a usable lock)
            self._start_process()
        watch = _Watch(time.monotonic() + timeout_s, slack_s, list(steps))
        with self._cond:
            self._armed.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentgym-browser-deadline", daemon=True)
                self._thread.start()
            if watch.due < self._wake_at:
                self._cond.notify()
        return watch

    def disarm(self, watch: _Watch) -> None:
        with self._cond:
            self._armed.discard(watch)
            watch.steps.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [w for w in self._armed if w.due <= now]
                if not due:
                    self._wake_at = min((w.due for w in self._armed), default=float("inf"))
                    self._cond.wait(None if self._wake_at == float("inf") else self._wake_at - now)
                    self._wake_at = 0.0  # awake: arm() need not notify until the thread sleeps again
                    continue
                taken = []
                for w in due:
                    step = w.steps.pop(0)
                    w.fired.append(step.__name__)
                    w.due = now + w.slack
                    if not w.steps:
                        self._armed.discard(w)
                    taken.append(step)
            for step in taken:  # outside the lock: a step only schedules work on Playwright's loop
                step()


_WATCHDOG = _Watchdog()


class _Interrupter:
    """The handles a watchdog thread needs to interrupt one page, taken on the page's own thread.

    Playwright's sync objects may only be used by their thread, which is the one blocked; the
    watchdog schedules coroutines of the asynchronous objects underneath on Playwright's event
    loop instead (thread-safe), which keeps running while the sync call waits.
    """

    def __init__(self, page: Any, cdp: Any, marker: str):
        impl = getattr(page, "_impl_obj", None)
        self.loop = getattr(impl, "_loop", None)
        self.page_impl = impl
        self.cdp_impl = getattr(cdp, "_impl_obj", None)
        self.marker = marker

    @staticmethod
    def _invoke(method: Callable[..., Any], *args: Any) -> Any:
        # Private signatures differ between Playwright versions: pass what the method takes and
        # ``None`` for the rest of its required parameters.
        params = [
            p for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = sum(p.default is p.empty for p in params)
        given = list(args[: len(params)])
        return method(*given, *[None] * max(0, required - len(given)))

    def _schedule(self, make_coroutine: Callable[[], Any]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        def start() -> None:
            task = loop.create_task(make_coroutine())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieve, never log

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def terminate_scripts(self) -> None:
        """Stop the JavaScript running in the page (an endless loop) - the gentle way."""
        if self.cdp_impl is not None:
            self._schedule(lambda: self._invoke(self.cdp_impl.send, "Runtime.terminateExecution"))

    def close_page(self) -> None:
        """Close the page: the renderer is abandoned and pending calls fail."""
        if self.page_impl is not None:
            self._schedule(lambda: self._invoke(self.page_impl.close, False, "the page did not answer in time"))

    def kill_browser(self) -> None:
        """Kill Chromium: the last resort, which also ends the thread's other environments' episodes."""
        for pid in browser_pids(self.marker):
            try:
                if b"--type=" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class BrowserSession:
    """One environment's isolated browser context and page on the thread's shared browser.

    Args:
        config: launch settings and limits.
        allowed_origins: origins such as ``"http://127.0.0.1:8123"``; every other request
            is aborted and counted in :attr:`safety`.

    Example:
        >>> s = BrowserSession(BrowserConfig(), ["http://127.0.0.1:8000"])  # doctest: +SKIP
        >>> s.evaluate("1 + 1")                                            # doctest: +SKIP
        2
        >>> s.close()                                                      # doctest: +SKIP
    """

    def __init__(self, config: BrowserConfig, allowed_origins: list[str]):
        self.config = config
        self.allowed = {_origin(o) for o in allowed_origins}
        self.safety = SafetyCounters()
        self.sink = ProxySink(self._count_blocked)
        self.shared: SharedBrowser | None = SharedBrowser.acquire(config)
        self.context: Any = None
        self.page: Any = None
        self.crashed = False
        #: The URL of the last navigation that the policy undid (or tried to), for the observation.
        self.undone_navigation: str | None = None
        self._last_allowed_url: str | None = None
        self._pending_popups: list[Any] = []
        self._interrupter: _Interrupter | None = None
        self._in_deadline = False
        self._open_page()

    # ---- lifecycle -------------------------------------------------------------------
    def _open_page(self) -> None:
        assert self.shared is not None
        width, height = self.config.viewport
        # Only the environment's own server is reached directly; everything else goes to the sink.
        bypass = ",".join(["<-loopback>", *(urlsplit(o).netloc for o in sorted(self.allowed))])
        try:
            self.context = self.shared.browser.new_context(
                viewport={"width": width, "height": height},
                proxy={"server": self.sink.server, "bypass": bypass},
                service_workers="block",
            )
            self.context.set_default_timeout(self.config.action_timeout_ms)
            self.context.set_default_navigation_timeout(self.config.navigation_timeout_ms)
            self.context.route(self._outside_allowed_origins(), self._route)
            if hasattr(self.context, "route_web_socket"):  # Playwright >= 1.48; else the sink alone blocks them
                self.context.route_web_socket(re.compile(r".*"), self._route_web_socket)
            self.context.add_init_script(BLOCK_WEBRTC_JS)
            self.context.on("page", self._on_new_page)
            self.page = self.context.new_page()
            cdp = self.context.new_cdp_session(self.page)
        except Exception as exc:
            raise EnvironmentCrashedError(f"could not open a browser page: {exc}") from exc
        self._interrupter = _Interrupter(self.page, cdp, self.shared.marker)
        self.page.on("dialog", self._on_dialog)
        self.page.on("crash", self._on_crash)
        self.page.on("framenavigated", self._on_navigated)
        self.page.on("console", self._on_console)
        self.crashed = False

    def alive(self) -> bool:
        """The browser is connected and the page neither crashed, hung nor closed."""
        return (
            self.shared is not None
            and self.shared.browser is not None
            and self.shared.browser.is_connected()
            and self.page is not None
            and not self.page.is_closed()
            and not self.crashed
        )

    def recover(self) -> None:
        """Replace a dead or interrupted page (and, if needed, the whole browser) with a fresh one."""
        self._close_context()
        if self.shared is not None:
            self.shared.release()
        self.shared = SharedBrowser.acquire(self.config)
        self._open_page()

    def reset_counters(self) -> None:
        self.safety = SafetyCounters()
        self.undone_navigation = None

    def _close_context(self) -> None:
        context, self.context, self.page = self.context, None, None
        if context is not None:
            try:
                with self.deadline(self.config.action_timeout_ms, "closing the page"):
                    context.close()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        self._interrupter = None

    def close(self) -> None:
        """Close the page and context; the last session of the thread stops the browser."""
        self._close_context()
        shared, self.shared = self.shared, None
        if shared is not None:
            shared.release()
        self.sink.close()

    # ---- deadlines -----------------------------------------------------------------------
    @contextmanager
    def deadline(self, timeout_ms: float, what: str) -> Iterator[None]:
        """Run the browser calls of the ``with`` block under a deadline of ``timeout_ms + DEADLINE_SLACK_MS``.

        Past the deadline a watchdog thread interrupts the page, escalating every
        ``DEADLINE_SLACK_MS``: it terminates the page's JavaScript, closes the page, and at last
        kills Chromium.  The block then raises :class:`BrowserDeadlineError` and the session is
        marked for replacement (:meth:`recover`).  Nested deadlines are covered by the outer one.

        Example:
            >>> with session.deadline(5000, "reading the page"):  # doctest: +SKIP
            ...     rows = session.page.evaluate(SNAPSHOT_JS)
        """
        interrupter = self._interrupter
        if self._in_deadline or interrupter is None:
            yield
            return
        slack = DEADLINE_SLACK_MS / 1000
        steps = (interrupter.terminate_scripts, interrupter.close_page, interrupter.kill_browser)
        watch = _WATCHDOG.arm(timeout_ms / 1000 + slack, slack, steps)
        fired = watch.fired
        self._in_deadline = True
        failure: BaseException | None = None
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised below, as a deadline error if one fired
            failure = exc
        finally:
            _WATCHDOG.disarm(watch)
            self._in_deadline = False
        if fired:
            self.crashed = True  # interrupted: replaced on the next reset
            seconds = timeout_ms / 1000 + slack
            raise BrowserDeadlineError(
                f"the page did not answer within {seconds:g} s ({what}); it was interrupted ({', '.join(fired)})"
            ) from failure
        if failure is not None:
            raise failure

    def call(self, method: Callable[..., T], *args: Any, timeout_ms: float | None = None, what: str = "",
             **kwargs: Any) -> T:
        """``method(*args, **kwargs)`` (a Playwright call) under :meth:`deadline`; default: the action timeout."""
        limit = self.config.action_timeout_ms if timeout_ms is None else timeout_ms
        with self.deadline(limit, what or getattr(method, "__name__", "a browser call")):
            return _on_fresh_stack(method, *args, **kwargs)

    def evaluate(self, script: str, arg: Any = None, what: str = "running a script") -> Any:
        """``page.evaluate`` under a deadline of ``script_timeout_ms``."""
        with self.deadline(self.config.script_timeout_ms, what):
            return _on_fresh_stack(self.page.evaluate, script, arg)

    # ---- navigation --------------------------------------------------------------------
    def goto(self, url: str) -> None:
        """Load ``url`` (which must be on an allowed origin) and wait for the DOM."""
        if _origin(url) not in self.allowed:
            raise ValueError(f"{url} is not on an allowed origin ({sorted(self.allowed)})")
        self.check_alive()
        try:
            with self.deadline(self.config.navigation_timeout_ms, f"loading {url}"):
                _on_fresh_stack(self.page.goto, url, wait_until="load")
        except Exception as exc:
            self.raise_if_dead(exc)
            raise
        self._last_allowed_url = url

    def check_alive(self) -> None:
        """Raise :class:`EnvironmentCrashedError` if the browser or page is gone."""
        if not self.alive():
            raise EnvironmentCrashedError("the browser or its page crashed, hung or was closed")

    def raise_if_dead(self, exc: BaseException) -> None:
        """Turn ``exc`` into :class:`EnvironmentCrashedError` when it came from a dead browser.

        A :class:`BrowserDeadlineError` (or any crash error) is raised again as it is.
        """
        if isinstance(exc, EnvironmentCrashedError):
            raise exc
        text = str(exc)
        if not self.alive() or "Target crashed" in text or "has been closed" in text or "Connection closed" in text:
            self.crashed = True
            raise EnvironmentCrashedError(f"the browser died: {text.splitlines()[0] if text else exc!r}") from exc

    def relative_url(self, href: str) -> str:
        """``href`` without the origin when it is on an allowed origin (``/index.html``), else whole."""
        origin = _origin(href)
        return (href[len(origin):] or "/") if origin in self.allowed else href

    # ---- policy handlers -----------------------------------------------------------------
    def _outside_allowed_origins(self) -> re.Pattern[str]:
        """The URLs the route handler sees: those of other origins.

        Playwright matches a pattern in its driver, so the requests of the task site itself (a page load
        fetches several) go on without a round trip to this process; the handler checks again anyway.
        """
        origins = "|".join(re.escape(o) for o in sorted(self.allowed))
        return re.compile(rf"^(?!(?:{origins})(?:[/?#]|$))", re.IGNORECASE)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if _origin(url) in self.allowed:
            route.continue_()
            return
        self._count_blocked(url)
        route.abort("blockedbyclient")

    def _route_web_socket(self, ws: Any) -> None:
        # No family uses WebSockets: every one is refused (never connected to its server) and counted.
        self._count_blocked(f"websocket: {ws.url}")
        try:
            ws.close(code=1008, reason="WebSockets are blocked in this environment")
        except Exception:  # noqa: BLE001 - the page may be gone already
            pass

    def _count_blocked(self, url: str) -> None:
        self.safety.count(url)

    def _on_navigated(self, frame: Any) -> None:
        # Requests to other hosts never leave the browser (see _route), but a blocked main-frame
        # navigation leaves Chromium's error page (chrome-error://) behind; navigations to schemes
        # that routing does not see (data:, file:, blob:) are counted here.  Both are undone.
        if self.page is None or frame != self.page.main_frame:
            return
        self.main_frame_navigations += 1
        url = frame.url
        if _origin(url) in self.allowed:
            self._last_allowed_url = url
            return
        if url in ("about:blank", ""):
            return
        if url.startswith("chrome-error://"):
            # Counted already, by the route that aborted it.
            with self.safety._lock:
                blocked = self.safety.blocked_urls[-1] if self.safety.blocked_urls else url
        else:
            self._count_blocked(url)
            blocked = url
        back = self._last_allowed_url
        if back is not None:
            self.undone_navigation = blocked
            # Navigating from inside an event handler would deadlock the sync API; settle() does it.
            self._pending_back = back

    _pending_back: str | None = None
    #: Navigations of the page's main frame so far (an action that caused none need not wait for a load).
    main_frame_navigations: int = 0

    def settle(self) -> bool:
        """Finish work the event handlers deferred: close new windows, undo a blocked navigation.

        Returns whether the page was navigated back (its content changed).
        """
        if self.context is not None:
            known = {id(p) for p in self._pending_popups}
            for extra in self.context.pages:
                if extra != self.page and id(extra) not in known:
                    self._pending_popups.append(extra)
        popups, self._pending_popups = self._pending_popups, []
        for popup in popups:
            try:
                self.call(popup.close, what="closing a new window")
            except BrowserDeadlineError:
                raise
            except Exception:  # noqa: BLE001 - it may have closed itself
                pass
        back, self._pending_back = self._pending_back, None
        if back is not None and self.alive():
            try:
                self.call(self.page.goto, back, wait_until="load", timeout_ms=self.config.navigation_timeout_ms,
                          what="going back to the last allowed page")
            except Exception as exc:  # noqa: BLE001
                self.raise_if_dead(exc)
            return True
        return False

    #: Chromium's own refusals of navigations to local schemes (reported on the console).
    _REFUSALS = ("Not allowed to navigate top frame to", "Not allowed to load local resource")

    def _on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        if text.startswith(_BLOCKED_MARK):
            self._count_blocked(text[len(_BLOCKED_MARK):][:200])
            return
        for refusal in self._REFUSALS:
            if refusal in text:
                self._count_blocked(text.split(refusal, 1)[1].strip(" :")[:200] or text[:200])
                return

    def _on_dialog(self, dialog: Any) -> None:
        self.safety.dialogs.append(f"{dialog.type}: {dialog.message}"[:200])
        try:
            if dialog.type == "prompt":
                dialog.dismiss()
            else:
                dialog.accept()
        except Exception:  # noqa: BLE001 - the page may be gone already
            pass

    def _on_new_page(self, page: Any) -> None:
        if self.page is None or page == self.page:
            return
        self.safety.popups_closed += 1
        # Closing from inside the event handler does not finish; settle() closes it.
        self._pending_popups.append(page)

    def _on_crash(self, _page: Any) -> None:
        self.crashed = True

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return self.call(self.page.screenshot, type="png", what="taking a screenshot")
