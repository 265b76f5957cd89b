"""The base class of the web environments: tools, actions on element ids, observations, limits.

A web family subclasses :class:`WebEnv` and implements:

* ``_task_splits`` (as every :class:`~agentgym_envs.core.TextEnv`),
* ``_server_handler()``: the request handler of its loopback site,
* ``_web_start(task_id) -> TaskStart``: open the task's page (``self.session.goto``) and
  return the instruction (the observation is filled in by the base class),
* ``_web_outcome(state, call) -> (score, won, lost)``: the task's progress after an action,
  where ``state`` is what ``state_js`` evaluated to in the same call as the snapshot,
* optionally ``_stop(answer)`` and ``_expert``.

Tools (one call per step; in ``plain`` format a call expression such as ``click(12)``):

``click(element_id)``, ``type(element_id, text)``, ``select(element_id, option)``,
``press(key)`` (Playwright key names: ``Enter``, ``Tab``, ``ArrowDown``, ``Control+A``),
``scroll(direction)`` (``up``/``down``/``left``/``right``) and ``stop(answer)``.

An unknown or hidden element id, a type into a non-text element, a failed or timed-out
browser action: the step executes nothing, ``info["action_error"]`` says why, and the
observation starts with ``Action failed: ...``.  Extra ``info`` keys of every step:
``url``, ``action_error``, ``blocked_requests``, ``blocked_urls``, ``dialogs``,
``popups_closed`` and, with ``screenshots=True``, ``screenshot`` (PNG bytes).  Wall-clock
time is not in ``info`` (it would make the same seed give different ``info``): read
:attr:`WebEnv.elapsed_s`.

Every browser call has a deadline (:meth:`~agentgym_envs.families.web.browser.BrowserSession.deadline`);
a page that stops answering (an endless script, a hung renderer) truncates the episode with
``truncation_reason="time_limit"`` and the page is replaced on the next ``reset``.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/MiniWoB-click-test-v0")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                      # doctest: +SKIP
    >>> obs, reward, term, trunc, info = env.step("click(4)")  # doctest: +SKIP
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from agentgym_envs.core import TaskStart, TextEnv, Transition
from agentgym_envs.errors import ActionFailed, EnvironmentCrashedError
from agentgym_envs.families.web.browser import (
    BrowserConfig,
    BrowserDeadlineError,
    BrowserSession,
    playwright_can_be_driven,
)
from agentgym_envs.families.web.page import PROBE_JS, SNAPSHOT_JS, Node, render_nodes
from agentgym_envs.families.web.server import LoopbackServer
from agentgym_envs.parsing import ToolCall, ToolSpec

WEB_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("click", ("element_id",), "Click the element with this id."),
    ToolSpec("type", ("element_id", "text"), "Replace the text of an input box with this text."),
    ToolSpec("select", ("element_id", "option"), "Choose an option of a drop-down (select) element."),
    ToolSpec("press", ("key",), "Press a key, e.g. Enter, Tab, ArrowDown, Control+A."),
    ToolSpec("scroll", ("direction",), "Scroll the page: up, down, left or right."),
    ToolSpec("stop", ("answer",), "End the episode, with an answer if the task asks for one."),
)

CLEAR_IDS_JS = (
    "() => { document.querySelectorAll('[data-agid]').forEach((e) => e.removeAttribute('data-agid'));"
    " window.__agid = 0; }"
)

SCROLL_DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


@dataclass(frozen=True)
class WebLimits:
    """Per-episode limits of a web environment.

    Args:
        episode_time_limit_s: wall-clock seconds an episode may last; past it, the next
            step truncates the episode with ``truncation_reason="time_limit"``.
        max_observation_chars: the page listing is cut beyond this many characters.

    Example:
        >>> WebLimits(episode_time_limit_s=60).episode_time_limit_s
        60
    """

    episode_time_limit_s: float | None = 300.0
    max_observation_chars: int = 20000


class _WebResources:
    """The browser session and loopback server of one environment.

    Kept apart from the environment so that a finalizer can close them when an environment is
    dropped without ``close()`` (the finalizer must not hold the environment itself).
    """

    def __init__(self) -> None:
        self.session: BrowserSession | None = None
        self.server: LoopbackServer | None = None

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            if playwright_can_be_driven(session.shared):
                session.close()
            else:
                # A finalizer on another thread or inside Playwright's event loop: no sync calls
                # (they would deadlock).  Free what needs none; the last one kills Chromium.
                session.sink.close()
                shared, session.shared = session.shared, None
                if shared is not None:
                    shared.refs = max(0, shared.refs - 1)
                    if shared.refs == 0:
                        session._interrupter and session._interrupter.kill_browser()
        server, self.server = self.server, None
        if server is not None:
            server.close()


class WebEnv(TextEnv):
    """A :class:`~agentgym_envs.core.TextEnv` acting in a real headless Chromium through Playwright.

    Args:
        browser: how to launch Chromium and per-action time limits (:class:`BrowserConfig`).
        limits: per-episode limits (:class:`WebLimits`).
        screenshots: put a PNG of the viewport in ``info["screenshot"]`` on every step.
        **kwargs: see :class:`~agentgym_envs.core.TextEnv`.

    The browser and the task site start on the first ``reset`` and stop on ``close`` (or when
    the environment is garbage collected without ``close``).  Not thread-safe, and not usable
    inside a running asyncio loop (Playwright's sync API).

    Example:
        >>> env = MiniWoBEnv("click-test")   # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)     # doctest: +SKIP
        >>> env.close()                       # doctest: +SKIP
    """

    tools = WEB_TOOLS
    default_max_steps = 30
    #: A JavaScript expression evaluated together with every snapshot (family state).
    state_js: str = "null"
    #: Element ids (HTML ``id``) never shown in the listing.
    excluded_element_ids: tuple[str, ...] = ()

    def __init__(
        self,
        browser: BrowserConfig | None = None,
        limits: WebLimits | None = None,
        screenshots: bool = False,
        **kwargs: Any,
    ):
        self.browser_config = browser or BrowserConfig()
        self.limits = limits or WebLimits()
        self.screenshots = screenshots
        self._resources = _WebResources()
        # Dropped without close(): still stop the page, the browser (if last) and the server.
        self._finalizer = weakref.finalize(self, self._resources.close)
        self.nodes: list[Node] = []
        self.page_state: Any = None
        self._episode_start = 0.0
        self._action_error: str | None = None
        self._time_up = False
        self._snapshot_script = (
            f"(ex) => {{ const snap = ({SNAPSHOT_JS}); let state = null;"
            f" try {{ state = ({self.state_js}); }} catch (e) {{ state = null; }}"
            " return [snap(ex), state, location.href]; }"
        )
        # An episode's first reading numbers the elements afresh, in the same round trip.
        self._renumber_snapshot_script = f"(ex) => {{ ({CLEAR_IDS_JS})(); return ({self._snapshot_script})(ex); }}"
        super().__init__(**kwargs)

    @property
    def session(self) -> BrowserSession | None:
        """The browser context and page (``None`` before the first ``reset`` and after ``close``)."""
        return self._resources.session

    @session.setter
    def session(self, value: BrowserSession | None) -> None:
        self._resources.session = value

    @property
    def server(self) -> LoopbackServer | None:
        """The task site's loopback server (``None`` before the first ``reset`` and after ``close``)."""
        return self._resources.server

    @server.setter
    def server(self, value: LoopbackServer | None) -> None:
        self._resources.server = value

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds since this episode started (kept out of ``info``: it differs between runs)."""
        return time.monotonic() - self._episode_start if self._episode_start else 0.0

    # ---- hooks for families ----------------------------------------------------------------
    def _server_handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _web_start(self, task_id: Hashable) -> TaskStart:
        raise NotImplementedError

    def _web_outcome(self, state: Any, call: ToolCall | None) -> tuple[float, bool, bool]:
        """``(score, won, lost)`` after an action (``call`` is ``None`` right after the start)."""
        return self._score, False, False

    def _stop(self, answer: str) -> tuple[float, bool, bool]:
        """``(score, won, lost)`` when the agent calls ``stop(answer)``; default: give up."""
        return self._score, False, True

    def _execute(self, command: str) -> Transition:  # pragma: no cover - web envs take tool calls
        raise NotImplementedError("web environments execute tool calls (_execute_call)")

    # ---- lifecycle -----------------------------------------------------------------------------
    def _ensure_started(self) -> BrowserSession:
        if self.server is None:
            self.server = LoopbackServer(self._server_handler())
        if self.session is None:
            self.session = BrowserSession(self.browser_config, [self.server.origin])
        elif not self.session.alive():
            self.session.recover()
        return self.session

    def _start(self, task_id: Hashable) -> TaskStart:
        session = self._ensure_started()
        session.reset_counters()
        self._action_error = None
        self._time_up = False
        try:
            start = self._open_task(task_id)
        except EnvironmentCrashedError:
            # One retry on a fresh page (and browser, if needed): a crash or a page that stopped
            # answering in the previous episode must not stick.  A second failure is raised.
            session.recover()
            session.reset_counters()
            start = self._open_task(task_id)
        self._episode_start = time.monotonic()
        score, _, _ = self._web_outcome(self.page_state, None)
        start.score = score
        start.observation = self._observation()
        return start

    def _open_task(self, task_id: Hashable) -> TaskStart:
        session = self.session
        assert session is not None
        start = self._web_start(task_id)
        self._instruction = start.instruction
        # Number the elements afresh each episode: the same task and seed give the same ids.
        self._observe(renumber=True)
        return start

    def close(self) -> None:
        self._resources.close()
        super().close()

    # ---- stepping ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        info.update(self._web_info())
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._action_error = None
        obs, reward, terminated, truncated, info = super().step(action)
        info.update(self._web_info())
        if not (terminated or truncated) and self._time_up:
            truncated = True
            self._done = True
            info["truncation_reason"] = "time_limit"
        return obs, reward, terminated, truncated, info

    def _execute_call(self, call: ToolCall) -> Transition:
        session = self.session
        if session is None:
            raise EnvironmentCrashedError("the browser session is closed")
        session.check_alive()
        limit = self.limits.episode_time_limit_s
        if limit is not None and time.monotonic() - self._episode_start > limit:
            self._time_up = True
            return Transition(f"Time is up ({limit:g} s).\n\n{self._observation()}", self._score)
        if call.name == "stop":
            score, won, lost = self._stop(call.arguments.get("answer", ""))
            return Transition(f"You stopped.\n\n{self._observation()}", score, won=won, lost=lost or not won)
        try:
            self._act(session, call)
        except BrowserDeadlineError as exc:
            return self._stopped_answering(exc)
        except ActionFailed as exc:
            self._action_error = str(exc)
        except EnvironmentCrashedError:
            raise
        except Exception as exc:  # noqa: BLE001 - Playwright errors are outcomes unless the browser died
            try:
                session.raise_if_dead(exc)
            except BrowserDeadlineError as deadline:
                return self._stopped_answering(deadline)
            self._action_error = _short_error(exc)
        try:
            self._observe()
            # Event handlers ran meanwhile: close new windows, undo blocked navigations.
            if session.settle():
                self._observe()
        except BrowserDeadlineError as exc:
            return self._stopped_answering(exc)
        score, won, lost = self._web_outcome(self.page_state, call)
        obs = self._observation()
        if session.undone_navigation is not None:
            obs = (f"Navigation blocked: {session.undone_navigation} is outside this site; "
                   f"back on the previous page.\n\n{obs}")
            session.undone_navigation = None
        if self._action_error:
            obs = f"Action failed: {self._action_error}\n\n{obs}"
        return Transition(obs, score, won=won, lost=lost)

    def _stopped_answering(self, exc: BrowserDeadlineError) -> Transition:
        """The page stopped answering: the episode ends (``"time_limit"``), the page is replaced at reset."""
        self._time_up = True
        self._action_error = str(exc)
        return Transition(f"The page stopped responding: {exc}\n\n{self._observation()}", self._score)

    def _observe(self, renumber: bool = False) -> None:
        session = self.session
        assert session is not None
        script = self._renumber_snapshot_script if renumber else self._snapshot_script
        for attempt in range(3):
            try:
                rows, state, href = session.evaluate(script, list(self.excluded_element_ids), what="reading the page")
                break
            except Exception as exc:  # noqa: BLE001
                session.raise_if_dead(exc)
                if attempt == 2:
                    raise EnvironmentCrashedError(f"could not read the page: {_short_error(exc)}") from exc
                # A navigation was under way (the old document's context is gone): wait for the new one.
                try:
                    session.call(session.page.wait_for_load_state, "load",
                                 timeout_ms=self.browser_config.navigation_timeout_ms, what="waiting for the page")
                except Exception as wait_exc:  # noqa: BLE001
                    session.raise_if_dead(wait_exc)
        self.nodes = [Node.from_js(r) for r in rows]
        self.page_state = state
        # The page's real address: a path on the task site, else the whole URL (e.g. an error page).
        self._url = session.relative_url(str(href))

    def _observation(self) -> str:
        listing = render_nodes(self.nodes, self.limits.max_observation_chars)
        return f"Task: {self._instruction_text()}\nURL: {getattr(self, '_url', '')}\nPage:\n{listing}"

    def _instruction_text(self) -> str:
        return self._instruction

    def _web_info(self) -> dict[str, Any]:
        session = self.session
        info: dict[str, Any] = {
            "url": getattr(self, "_url", None),
            "action_error": self._action_error,
        }
        if session is not None:
            info.update(session.safety.as_info())
            if self.screenshots:
                info["screenshot"] = None
                if session.alive():
                    try:
                        info["screenshot"] = session.screenshot()
                    except BrowserDeadlineError as exc:
                        self._time_up = True  # the step ends the episode (see step)
                        self._action_error = info["action_error"] = str(exc)
                    except Exception:  # noqa: BLE001 - a screenshot is optional
                        pass
        return info

    # ---- actions ------------------------------------------------------------------------------
    def _locate(self, session: BrowserSession, element_id: str) -> tuple[Any, str]:
        text = element_id.strip().strip("[]#")
        if not text.isdigit():
            raise ActionFailed(f"{element_id!r} is not an element id; ids are the numbers in [brackets]")
        status, tag = session.evaluate(PROBE_JS, text, what="checking the element")
        if status == "missing":
            raise ActionFailed(f"there is no element [{text}] on this page")
        if status == "hidden":
            raise ActionFailed(f"element [{text}] is hidden")
        if status == "disabled":
            raise ActionFailed(f"element [{text}] is disabled")
        return session.page.locator(f'[data-agid="{text}"]'), tag

    def _act(self, session: BrowserSession, call: ToolCall) -> None:
        # Every Playwright call goes through session.call / session.evaluate: each has a deadline.
        args = call.arguments
        page = session.page
        do = session.call
        navigations = session.main_frame_navigations
        if call.name == "click":
            locator, tag = self._locate(session, args["element_id"])
            if tag == "OPTION":
                # Options inside a drop-down are chosen, not clicked.
                select = locator.locator("xpath=ancestor::select[1]")
                value = do(locator.get_attribute, "value") or do(locator.inner_text)
                do(select.select_option, value=value, what="choosing an option")
            else:
                do(locator.click, what="click")
        elif call.name == "type":
            locator, tag = self._locate(session, args["element_id"])
            if not (tag.startswith("INPUT") or tag.startswith("TEXTAREA")) or tag.split(":")[-1] in (
                "checkbox", "radio", "button", "submit", "reset", "range",
            ):
                if do(locator.get_attribute, "contenteditable") is None:
                    raise ActionFailed(f"element [{args['element_id']}] is not a text box")
            do(locator.click, what="type (focusing the box)")
            text = args["text"]
            # fill() is one round trip; the last character is a real key press so that pages
            # listening to keyboard events (autocomplete widgets) react as to typing.
            do(locator.fill, text[:-1], what="type")
            if text:
                do(locator.press_sequentially, text[-1], what="type (the last key)")
        elif call.name == "select":
            locator, tag = self._locate(session, args["element_id"])
            if not tag.startswith("SELECT"):
                raise ActionFailed(f"element [{args['element_id']}] is not a drop-down (select) element")
            option = args["option"]
            try:
                do(locator.select_option, label=option, timeout=1000, what="select")
            except BrowserDeadlineError:
                raise
            except Exception:  # noqa: BLE001 - fall back to the option's value
                try:
                    do(locator.select_option, value=option, timeout=1000, what="select")
                except Exception as exc:  # noqa: BLE001
                    session.raise_if_dead(exc)
                    raise ActionFailed(f"element [{args['element_id']}] has no option {option!r}") from exc
        elif call.name == "press":
            try:
                do(page.keyboard.press, args["key"], what="press")
            except Exception as exc:  # noqa: BLE001
                session.raise_if_dead(exc)
                raise ActionFailed(f"unknown key {args['key']!r}; use names such as Enter, Tab, ArrowDown") from exc
        elif call.name == "scroll":
            direction = args["direction"].strip().lower()
            if direction not in SCROLL_DIRECTIONS:
                raise ActionFailed(f"scroll direction must be up, down, left or right, not {args['direction']!r}")
            dx, dy = SCROLL_DIRECTIONS[direction]
            session.evaluate(
                "([dx, dy]) => window.scrollBy(dx * window.innerWidth * 0.8, dy * window.innerHeight * 0.8)",
                [dx, dy], what="scroll",
            )
        else:  # the parser only lets declared tools through
            raise ActionFailed(f"unknown tool {call.name!r}")
        if session.main_frame_navigations == navigations:
            # Playwright's actions return after the navigations they start have committed (and the
            # event has been dispatched): without one, the page is loaded already, and asking costs a round trip.
            return
        try:
            timeout = self.browser_config.navigation_timeout_ms
            do(page.wait_for_load_state, "load", timeout=timeout, timeout_ms=timeout, what="waiting for the page")
        except Exception as exc:  # noqa: BLE001
            session.raise_if_dead(exc)

    # ---- helpers for families and experts ------------------------------------------------------
    def find_node(self, role: str | None = None, name: str | None = None, contains: str | None = None) -> Node | None:
        """The first listed node with this role and exact name (or name containing ``contains``)."""
        for node in self.nodes:
            if role is not None and node.role != role:
                continue
            if name is not None and node.name != name:
                continue
            if contains is not None and contains.lower() not in node.name.lower():
                continue
            return node
        return None


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.replace("Locator.", "").replace("Page.", "")[:300]
