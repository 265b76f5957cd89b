"""The browser machinery in real headless Chromium: loopback-only policy, dialogs, popups, crashes, cleanup,
deadlines on hung pages, WebSocket and WebRTC blocking, finalizers."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest
from web_checks import skip_without_chromium

skip_without_chromium()

from agentgym_envs.core import TaskSplits, TaskStart  # noqa: E402
from agentgym_envs.families.web.base import WebEnv, WebLimits  # noqa: E402
from agentgym_envs.families.web.browser import (  # noqa: E402
    BrowserConfig,
    SharedBrowser,
    browser_pids,
)
from agentgym_envs.families.web.server import static_handler  # noqa: E402

PAGE = """<!DOCTYPE html><html><body>
<h1>Test page</h1>
<button id="out" onclick="fetch('http://127.0.0.1:9/x').catch(() => 0); fetch('http://example.com/').catch(() => 0);
  var i = new Image(); i.src = 'http://example.org/p.png';">outside</button>
<a href="data:text/html,<h1>hi</h1>">data link</a>
<a href="file:///etc/passwd">file link</a>
<button onclick="document.title = String(confirm('sure?'))">confirm</button>
<button onclick="window.open('/index.html')">popup</button>
<button onclick="this.textContent = 'clicked'">plain</button>
</body></html>"""


class StaticSiteEnv(WebEnv):
    """A one-page site from a folder: the smallest WebEnv family."""

    family = "static-test"

    def __init__(self, folder: Path, **kwargs):
        self.folder = folder
        super().__init__(**kwargs)

    def _task_splits(self) -> TaskSplits:
        return TaskSplits(train=["index.html"], valid=[], test=[])

    def _server_handler(self):
        return static_handler(self.folder)

    def _web_start(self, task_id):
        self.session.goto(self.server.url(str(task_id)))
        return TaskStart("", "Click things.")


@pytest.fixture()
def site(tmp_path):
    (tmp_path / "index.html").write_text(PAGE)
    return tmp_path


def _click(env, name):
    return env.step(f"click({env.find_node(name=name).id})")


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_outside_requests_and_navigations_are_blocked_and_counted(site):
    env = StaticSiteEnv(site)
    try:
        obs, info = env.reset(seed=0)
        assert info["blocked_requests"] == 0 and "[" in obs
        *_, info = _click(env, "outside")
        deadline = time.monotonic() + 5
        while env.session.safety.blocked_requests < 3 and time.monotonic() < deadline:
            env.session.page.wait_for_timeout(50)
        assert env.session.safety.blocked_requests == 3
        urls = " ".join(env.session.safety.blocked_urls)
        assert "example.com" in urls and "example.org" in urls and "127.0.0.1:9" in urls
        for name in ("data link", "file link"):
            before = env.session.safety.blocked_requests
            obs, reward, terminated, truncated, info = _click(env, name)
            assert info["url"] == "/index.html", (name, info)
            assert info["blocked_requests"] == before + 1, (name, info)
        obs, reward, terminated, truncated, info = _click(env, "confirm")
        assert info["dialogs"] == ["confirm: sure?"]
        _click(env, "popup")
        # The new window is closed as soon as the browser reports it, at the latest on the next action.
        obs, reward, terminated, truncated, info = env.step("scroll(down)")
        assert info["popups_closed"] == 1 and len(env.session.context.pages) == 1
        # A new episode starts with fresh counters.
        obs, info = env.reset(seed=0)
        assert info["blocked_requests"] == 0 and info["dialogs"] == [] and info["popups_closed"] == 0
    finally:
        env.close()


def test_episode_time_limit_truncates(site):
    env = StaticSiteEnv(site, limits=WebLimits(episode_time_limit_s=0.0))
    try:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert truncated and not terminated and info["truncation_reason"] == "time_limit"
    finally:
        env.close()


def test_browser_crash_truncates_and_next_reset_recovers(site):
    before = _children()
    env = StaticSiteEnv(site)
    other = StaticSiteEnv(site)
    try:
        env.reset(seed=0)
        other.reset(seed=0)
        shared = SharedBrowser.current()
        assert shared is not None and shared.refs == 2  # one browser, two contexts
        old_pids = shared.pids()
        main = [p for p in old_pids if b"--type=" not in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(main) == 1
        os.kill(main[0], signal.SIGKILL)
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert truncated and not terminated and info["truncation_reason"] == "crash" and info["error"]
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert not truncated and 'text "clicked"' in obs or 'button "clicked"' in obs
        obs, info = other.reset(seed=0)  # the other environment recovers on its reset too
        assert "Test page" in obs
        assert not set(old_pids) & set(SharedBrowser.current().pids())
    finally:
        env.close()
        other.close()
    _wait_gone(before)


def test_page_crash_truncates_and_recovers(site):
    env = StaticSiteEnv(site)
    try:
        env.reset(seed=0)
        marker = SharedBrowser.current().marker
        for pid in browser_pids(marker):
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert truncated and info["truncation_reason"] == "crash"
        obs, info = env.reset(seed=0)
        assert "Test page" in obs
    finally:
        env.close()


def _wait_gone(before: set[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in _children() - before if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes left after close(): {left}")


def test_no_leftover_processes_after_close(site):
    before = _children()
    envs = [StaticSiteEnv(site) for _ in range(3)]
    for env in envs:
        env.reset(seed=0)
    marker = SharedBrowser.current().marker
    assert browser_pids(marker) and _children() - before
    for env in envs:
        env.close()
    assert SharedBrowser.current() is None
    _wait_gone(before)
    assert not browser_pids(marker)


# ---- issue 16: deadlines, WebSocket/WebRTC, blocked navigations, finalizer ---------------------------------

HANG_PAGE = """<!DOCTYPE html><html><body>
<h1>Hang page</h1>
<button onclick="while (true) {}">loop now</button>
<button onclick="setTimeout(() => { while (true) {} }, 50)">loop later</button>
<button onclick="this.textContent = 'clicked'">plain</button>
</body></html>"""

#: Short limits so that a test of the deadline takes seconds, not minutes.
FAST = BrowserConfig(action_timeout_ms=1000, navigation_timeout_ms=3000, script_timeout_ms=1000)


@pytest.fixture()
def hang_site(tmp_path):
    (tmp_path / "index.html").write_text(HANG_PAGE)
    return tmp_path


@pytest.mark.timeout(180)
@pytest.mark.parametrize("button", ["loop now", "loop later"])
def test_endless_page_script_truncates_at_the_deadline_and_the_page_is_replaced(hang_site, button):
    env = StaticSiteEnv(hang_site, browser=FAST)
    try:
        env.reset(seed=0)
        old_page = env.session.page
        start = time.monotonic()
        obs, reward, terminated, truncated, info = _click(env, button)
        if button == "loop later" and not truncated:  # the step ended before the loop began: the next one meets it
            time.sleep(0.5)  # the page's timer fires meanwhile
            start = time.monotonic()
            obs, reward, terminated, truncated, info = env.step("scroll(down)")
        took = time.monotonic() - start
        assert truncated and not terminated and info["truncation_reason"] == "time_limit", info
        assert "did not answer" in info["action_error"] and obs.startswith("The page stopped responding")
        # Deadline of one call: 1 s + 2 s slack, plus Playwright's own 1 s click timeout before it.
        assert took < 30, took
        obs, info = env.reset(seed=0)
        assert env.session.page is not old_page and "Hang page" in obs
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert not truncated and 'button "clicked"' in obs
    finally:
        env.close()


@pytest.mark.timeout(180)
def test_hung_renderer_is_abandoned_at_the_deadline(hang_site):
    env = StaticSiteEnv(hang_site, browser=FAST)
    stopped = []
    try:
        env.reset(seed=0)
        for pid in env.session.shared.pids():
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGSTOP)  # frozen: not even Runtime.terminateExecution gets through
                stopped.append(pid)
        assert stopped
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert truncated and info["truncation_reason"] == "time_limit", info
        assert "close_page" in info["action_error"], info["action_error"]
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = _click(env, "plain")
        assert not truncated and 'button "clicked"' in obs
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        env.close()


class _TcpListener:
    """A server socket on loopback that records every connection (it must get none)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections: list[bytes] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(1)
            try:
                self.connections.append(conn.recv(200) or b"<connected>")
            except OSError:
                self.connections.append(b"<connected>")
            conn.close()

    def close(self):
        self.closed.set()
        self.thread.join()
        self.sock.close()


SOCKETS_PAGE = """<!DOCTYPE html><html><body>
<h1>Sockets</h1>
<button onclick="window.ws = new WebSocket('ws://127.0.0.1:{tcp}/page')">websocket</button>
<button onclick="const f = document.createElement('iframe'); document.body.append(f);
  window.ws2 = new f.contentWindow.WebSocket('ws://127.0.0.1:{tcp}/iframe')">iframe websocket</button>
<button onclick="const src = 'self.w = new WebSocket(&quot;ws://127.0.0.1:{tcp}/worker&quot;)';
  window.wk = new Worker(window.URL.createObjectURL(new Blob([src])))">worker websocket</button>
<button onclick="try {{ const pc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:127.0.0.1:{udp}'}}]}});
  pc.createDataChannel('x'); pc.createOffer().then((o) => pc.setLocalDescription(o));
  document.title = 'rtc made' }} catch (e) {{ document.title = 'rtc refused' }}">webrtc</button>
</body></html>"""


@pytest.mark.timeout(120)
def test_websockets_and_webrtc_are_blocked_and_counted(tmp_path):
    tcp = _TcpListener()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.1)
    (tmp_path / "index.html").write_text(SOCKETS_PAGE.format(tcp=tcp.port, udp=udp.getsockname()[1]))
    env = StaticSiteEnv(tmp_path)
    try:
        env.reset(seed=0)
        for name in ("websocket", "iframe websocket", "worker websocket", "webrtc"):
            _click(env, name)
        assert env.session.page.title() == "rtc refused"
        deadline = time.monotonic() + 5
        while env.session.safety.blocked_requests < 4 and time.monotonic() < deadline:
            env.session.page.wait_for_timeout(100)
        packets = []
        end = time.monotonic() + 2  # STUN would be sent within this time
        while time.monotonic() < end:
            try:
                packets.append(udp.recvfrom(2048))
            except (TimeoutError, OSError):
                pass
        info = env.step("scroll(down)")[-1]
    finally:
        env.close()
        tcp.close()
        udp.close()
    assert tcp.connections == [], "a WebSocket reached another local server"
    assert packets == [], "WebRTC sent UDP"
    urls = " ".join(info["blocked_urls"])
    assert f"websocket: ws://127.0.0.1:{tcp.port}/page" in urls and "/iframe" in urls
    assert f"proxy: 127.0.0.1:{tcp.port}" in urls  # the worker's, stopped by the refusing proxy
    assert "webrtc RTCPeerConnection" in urls
    assert info["blocked_requests"] == 4, info["blocked_urls"]


@pytest.mark.timeout(120)
def test_blocked_navigation_is_undone_and_the_real_url_reported(tmp_path):
    (tmp_path / "index.html").write_text(
        '<h1>Start</h1><a href="http://example.com/x">outside</a> <a href="http://127.0.0.1:9/y">other port</a>'
        '<form action="http://127.0.0.1:9/f"><button>submit elsewhere</button></form>'
    )
    env = StaticSiteEnv(tmp_path)
    try:
        env.reset(seed=0)
        for count, (name, target) in enumerate(
            [("outside", "http://example.com/x"), ("other port", "http://127.0.0.1:9/y"),
             ("submit elsewhere", "http://127.0.0.1:9/f")], start=1,
        ):
            obs, reward, terminated, truncated, info = _click(env, name)
            assert env.session.page.url == env.server.url("index.html"), env.session.page.url
            assert info["url"] == "/index.html" and "URL: /index.html" in obs
            assert obs.startswith(f"Navigation blocked: {target}") and "Start" in obs
            assert info["blocked_requests"] == count and not (terminated or truncated)
    finally:
        env.close()


def _three_dropped_environments(site) -> str:
    """Start three environments and drop them without close(); returns the browser's marker."""
    envs = [StaticSiteEnv(site) for _ in range(3)]
    for env in envs:
        env.reset(seed=0)
    marker = SharedBrowser.current().marker
    assert browser_pids(marker)
    return marker


@pytest.mark.timeout(120)
def test_dropped_environments_are_finalized(site):
    before = _children()
    marker = _three_dropped_environments(site)
    gc.collect()
    assert SharedBrowser.current() is None
    _wait_gone(before)
    assert not browser_pids(marker)


def test_wall_clock_time_is_not_in_info(site):
    env = StaticSiteEnv(site)
    try:
        obs, info = env.reset(seed=0)
        assert "elapsed_s" not in info and env.elapsed_s >= 0.0
        info = _click(env, "plain")[-1]
        assert "elapsed_s" not in info and env.elapsed_s > 0.0
    finally:
        env.close()
