"""MiniWoB++: the ~130 task pages of the ``miniwob`` package, in headless Chromium.

Description
-----------
The task pages ship with the ``miniwob`` package; each environment serves them from
``127.0.0.1`` (:class:`~agentgym_envs.families.web.server.LoopbackServer`) and drives them
through the page's own task API, like the package's Selenium backend: seed
(``Math.seedrandom``), data mode (``core.setDataMode``), ``core.startEpisodeReal()``,
``core.getUtterance()`` and the reward globals ``WOB_DONE_GLOBAL`` /
``WOB_REWARD_GLOBAL`` / ``WOB_RAW_REWARD_GLOBAL``.

Ids: ``agentgym/MiniWoB-<task>-v0`` for every task (e.g. ``MiniWoB-click-test-v0``),
``agentgym/MiniWoB-standard-v0`` (the :data:`STANDARD_TASKS` subset: tasks solvable with
element-level actions, no drawing or dragging) and ``agentgym/MiniWoB-all-v0``.

Tasks and splits
----------------
A task id is ``"<task>/<seed>"``; per MiniWoB task, test seeds 0-49, validation seeds
50-99, train seeds 100-1099.  Test and validation episodes run in MiniWoB's ``test`` data
mode (tasks such as ``click-test-transfer`` differ), train in ``train`` mode.

Actions
-------
The web tools of :class:`~agentgym_envs.families.web.base.WebEnv`: ``click(element_id)``,
``type(element_id, text)``, ``select(element_id, option)``, ``press(key)``,
``scroll(direction)`` and ``stop(answer)``.

Observation
-----------
The task's utterance, the page's URL and its listing of interactive elements, one
``[id] role "name"`` line each (:mod:`agentgym_envs.families.web.page`).

Rewards
-------
The task's own reward, in [-1, 1], when the page ends the episode.  MiniWoB scales it by
the time left of a 10 s page timer; since a language model thinks for seconds per
action, that timer is off by default (``page_time_limit_ms=None``: the reward is the
unscaled task reward) and ``page_time_limit_ms=10000`` restores it.  ``won`` = the raw
task reward is 1 (or positive, for partial-credit tasks, when ``win_threshold`` is
lowered).  ``info`` adds ``miniwob_reward``, ``miniwob_raw_reward`` and ``miniwob_reason``.

Expert
------
None (MiniWoB has none).

Termination
-----------
Terminated when the page ends the episode (won, or lost otherwise) or on ``stop``;
truncated after 20 steps by default, past the episode's wall-clock limit or when the
page stops answering (``"time_limit"``), or when the browser dies (``"crash"``).
Every reset loads the task page afresh, so the same task and seed give the same episode;
``reuse_page=True`` restarts the task in the page it has instead, as MiniWoB's own
environment does (faster; see :class:`MiniWoBEnv`).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/MiniWoB-click-test-v0")     # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                         # doctest: +SKIP
    >>> print(obs)                                            # doctest: +SKIP
    Task: Click the button.
    URL: /miniwob/click-test.html
    Page:
    [3] button "Click Me!"
"""

from __future__ import annotations

import importlib.util
from collections.abc import Hashable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentgym_envs.core import TaskSplits, TaskStart
from agentgym_envs.errors import DataNotFoundError, EnvironmentCrashedError, UnknownTaskError, install_command
from agentgym_envs.families.web.base import WebEnv
from agentgym_envs.families.web.server import static_handler
from agentgym_envs.parsing import ToolCall
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "miniwob",
    extra="web",
    requires=("playwright", "miniwob"),
    description="MiniWoB++ task pages in headless Chromium, acted on through element ids.",
    worker="process",  # a browser: a step costs far more than a trip through a pipe
)

#: Tasks that an agent can solve with click / type / select / press on listed elements.
STANDARD_TASKS: tuple[str, ...] = (
    "book-flight", "choose-date", "choose-list", "click-button", "click-button-sequence", "click-checkboxes",
    "click-checkboxes-large", "click-checkboxes-soft", "click-checkboxes-transfer", "click-collapsible",
    "click-collapsible-2", "click-dialog", "click-dialog-2", "click-link", "click-menu", "click-option",
    "click-scroll-list", "click-shades", "click-shape", "click-tab", "click-tab-2", "click-tab-2-hard", "click-test",
    "click-test-2", "click-widget", "count-shape", "email-inbox", "email-inbox-forward-nl",
    "email-inbox-forward-nl-turk", "email-inbox-nl-turk", "enter-date", "enter-password", "enter-text",
    "enter-text-dynamic", "enter-time", "find-word", "focus-text", "focus-text-2", "grid-coordinate",
    "guess-number", "identify-shape", "login-user", "login-user-popup", "multi-layouts", "multi-orderings",
    "navigate-tree", "read-table", "search-engine", "simple-algebra", "simple-arithmetic", "social-media",
    "social-media-all", "social-media-some", "terminal", "tic-tac-toe", "use-autocomplete", "use-spinner",
)

TEST_SEEDS = range(0, 50)
VALID_SEEDS = range(50, 100)
TRAIN_SEEDS = range(100, 1100)

#: MiniWoB's own bookkeeping elements, never shown to the agent (as in ``core.getDOMInfo``).
EXCLUDED_IDS = ("reward-display", "sync-task-cover", "click-canvas", "query")

STATE_JS = (
    "(typeof WOB_DONE_GLOBAL === 'undefined') ? null : {done: WOB_DONE_GLOBAL, reward: WOB_REWARD_GLOBAL,"
    " raw: WOB_RAW_REWARD_GLOBAL, reason: (WOB_REWARD_REASON === null ? null : String(WOB_REWARD_REASON))}"
)

START_JS = r"""
([seed, mode, maxTime]) => {
  if (core.EP_TIMER !== null) core.endEpisode(0);
  Math.seedrandom(seed);
  core.setDataMode(mode);
  if (maxTime !== null) core.EPISODE_MAX_TIME = maxTime;
  core.startEpisodeReal();
}
"""

UTTERANCE_JS = "(() => { const u = core.getUtterance(); return (u && typeof u === 'object') ? u.utterance : u; })()"

#: START_JS, then waiting (on animation frames, as Playwright's wait_for_function polls) for
#: ``WOB_TASK_READY``, then the utterance: one round trip instead of three.
START_AND_READ_JS = (
    "async ([seed, mode, maxTime, waitMs]) => {"
    f" ({START_JS.strip()})([seed, mode, maxTime]);"
    " const until = performance.now() + waitMs;"
    " while (WOB_TASK_READY !== true) {"
    "   if (performance.now() > until) throw new Error(`the task was not ready after ${waitMs} ms`);"
    "   await new Promise((resolve) => requestAnimationFrame(resolve));"
    " }"
    f" return {UTTERANCE_JS}; }}"
)

#: What the previous episode left outside the task's own state: the focused element (listed as
#: ``(focused)``), the text selection and the window's scroll.  A fresh page has none of them.
CLEAR_PAGE_JS = (
    "() => { const a = document.activeElement; if (a && a !== document.body && a.blur) a.blur();"
    " window.getSelection && window.getSelection().removeAllRanges(); window.scrollTo(0, 0); }"
)

#: START_AND_READ_JS in a page that ran an episode already (``reuse_page=True``), after CLEAR_PAGE_JS.
RESTART_AND_READ_JS = f"async (args) => {{ ({CLEAR_PAGE_JS})(); return await ({START_AND_READ_JS})(args); }}"


def html_dir() -> Path:
    """The ``html/`` folder of the installed ``miniwob`` package (found without importing it)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"the miniwob package is not installed: {install_command('web')}")
    path = Path(next(iter(spec.submodule_search_locations))) / "html"
    if not (path / "miniwob").is_dir():
        raise DataNotFoundError(f"no MiniWoB task pages under {path}")
    return path


@lru_cache(maxsize=1)
def all_tasks() -> tuple[str, ...]:
    """Every MiniWoB task name the installed package ships (the standard subset if none is)."""
    try:
        return tuple(sorted(p.stem for p in (html_dir() / "miniwob").glob("*.html")))
    except DataNotFoundError:
        return STANDARD_TASKS


def task_names(subset: str | Sequence[str]) -> tuple[str, ...]:
    """``"standard"``, ``"all"``, one task name, or a list of task names -> task names.

    Example:
        >>> task_names("click-test")
        ('click-test',)
        >>> len(task_names("standard")) == len(STANDARD_TASKS)
        True
    """
    if isinstance(subset, str):
        if subset == "standard":
            return STANDARD_TASKS
        if subset == "all":
            return all_tasks()
        subset = (subset,)
    names = tuple(subset)
    unknown = [n for n in names if n not in set(all_tasks()) and n not in STANDARD_TASKS]
    if unknown:
        raise UnknownTaskError(f"unknown MiniWoB task(s) {unknown[:5]}; see agentgym_envs.families.web.miniwob.all_tasks()")
    return names


def split_task(task_id: Hashable) -> tuple[str, int]:
    """``"click-test/7"`` -> ``("click-test", 7)``."""
    name, _, seed = str(task_id).rpartition("/")
    return name, int(seed)


class MiniWoBEnv(WebEnv):
    """MiniWoB++ tasks in headless Chromium, observed as an element listing, acted on by element id.

    Args:
        subset: a task name (``"click-test"``), a list of names, ``"standard"`` or ``"all"``.
        page_time_limit_ms: MiniWoB's in-page episode timer, whose remaining time scales the
            reward; ``None`` (default) turns it off (see the module docstring).
        win_threshold: the raw task reward at or above which the episode counts as won.
        reuse_page: restart the task in the page already loaded, as MiniWoB's own environment
            does, when the last episode ran the same task in the same, live page; otherwise
            (the first reset, another task, a replaced page, a page that navigated away) load
            it afresh.  Saves the page load (about 3x the episodes/s on ``click-test``).  The
            trade: a fresh page (``False``, default) guarantees that the same task and seed give
            the same episode; in a kept page, whatever page scripts keep between episodes (a
            task's own variables, the mouse position and hover) can carry over.  Focus, text
            selection, scroll and element ids are reset either way.
        **kwargs: see :class:`~agentgym_envs.families.web.base.WebEnv` and :class:`~agentgym_envs.core.TextEnv`;
            ``seed_range=(lo, hi)`` keeps seeds ``lo..hi`` of the split.

    Example:
        >>> env = MiniWoBEnv("click-test", split="test")  # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": "click-test/0"})  # doctest: +SKIP
        >>> env.step("click(3)")[1:3]                     # doctest: +SKIP
        (1.0, True)
        >>> fast = MiniWoBEnv("click-test", reuse_page=True)  # doctest: +SKIP
    """

    family = "miniwob"
    default_max_steps = 20
    state_js = STATE_JS
    excluded_element_ids = EXCLUDED_IDS

    def __init__(
        self,
        subset: str | Sequence[str] = "click-test",
        page_time_limit_ms: int | None = None,
        win_threshold: float = 1.0,
        reuse_page: bool = False,
        **kwargs: Any,
    ):
        if not isinstance(reuse_page, bool):
            raise TypeError(f"reuse_page must be True or False, not {reuse_page!r}")
        self.task_names = task_names(subset)
        self.page_time_limit_ms = page_time_limit_ms
        self.win_threshold = float(win_threshold)
        self.reuse_page = reuse_page
        # The page (Playwright object) and task page URL whose task was last started, for reuse_page.
        self._started_in: tuple[Any, str] | None = None
        super().__init__(**kwargs)

    def _task_splits(self) -> TaskSplits:
        def ids(seeds: range) -> list[str]:
            return [f"{name}/{seed}" for name in self.task_names for seed in seeds]

        return TaskSplits(train=ids(TRAIN_SEEDS), valid=ids(VALID_SEEDS), test=ids(TEST_SEEDS))

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [t for t in available if lo <= split_task(t)[1] <= hi]

    def _server_handler(self) -> Any:
        return static_handler(html_dir())

    def _web_start(self, task_id: Hashable) -> TaskStart:
        assert self.session is not None and self.server is not None
        session = self.session
        name, seed = split_task(task_id)
        url = self.server.url(f"miniwob/{name}.html")
        args = [str(seed), "train" if self.split == "train" else "test",
                10**9 if self.page_time_limit_ms is None else int(self.page_time_limit_ms),
                self.browser_config.action_timeout_ms]
        # Reuse only the very page that started this task last time and is still on it: a replaced
        # page (crash, deadline), another task or a navigation away all load it afresh.
        started_in, self._started_in = self._started_in, None
        page = session.page
        if self.reuse_page and started_in == (page, url) and page.url == url and session.alive():
            try:
                utterance = self._start_and_read(RESTART_AND_READ_JS, args)
            except EnvironmentCrashedError:
                raise
            except Exception:  # noqa: BLE001 - a page that does not restart any more: load it afresh below
                pass
            else:
                self._started_in = (page, url)
                return _task_start(utterance)
        # A fresh page: nothing (focus, scroll, state a page script kept) carries over from the
        # previous episode, so the same task and seed give the same episode.
        session.goto(url)
        try:
            session.call(page.wait_for_function, "typeof core !== 'undefined' && core.cover_div !== null",
                         what="waiting for the task page")
        except Exception as exc:  # noqa: BLE001
            session.raise_if_dead(exc)
            raise
        utterance = self._start_and_read(START_AND_READ_JS, args)
        self._started_in = (page, url)
        return _task_start(utterance)

    def _start_and_read(self, script: str, args: list[Any]) -> Any:
        """Start the episode in the loaded task page and return the utterance (one round trip).

        ``args``: seed, mode, time limit and the in-page wait (ms), which the call's deadline allows for.
        """
        session = self.session
        assert session is not None
        wait_ms = self.browser_config.action_timeout_ms
        try:
            return session.call(session.page.evaluate, script, args,
                                timeout_ms=self.browser_config.script_timeout_ms + wait_ms,
                                what="starting and reading the task")
        except Exception as exc:  # noqa: BLE001
            session.raise_if_dead(exc)
            raise

    def _web_outcome(self, state: Any, call: ToolCall | None) -> tuple[float, bool, bool]:
        if not state or not state.get("done"):
            self._miniwob_info = {"miniwob_reward": 0.0, "miniwob_raw_reward": 0.0, "miniwob_reason": None}
            return 0.0, False, False
        reward, raw = float(state.get("reward") or 0.0), float(state.get("raw") or 0.0)
        reason = state.get("reason")
        self._miniwob_info = {
            "miniwob_reward": reward,
            "miniwob_raw_reward": raw,
            "miniwob_reason": None if reason in (None, "undefined") else reason,
        }
        won = raw >= self.win_threshold
        # With the page timer off the time scaling is meaningless (and only shaves off ~1e-7).
        return (raw if self.page_time_limit_ms is None else reward), won, not won

    def _web_info(self) -> dict[str, Any]:
        info = super()._web_info()
        info.update(getattr(self, "_miniwob_info", {}))
        return info


def _task_start(utterance: Any) -> TaskStart:
    return TaskStart(observation="", instruction=str(utterance or "").strip(), max_score=1.0, score=0.0)


def registrations() -> list[Registration]:
    entry = "agentgym_envs.families.web.miniwob:MiniWoBEnv"
    regs = [
        Registration("MiniWoB-standard", FAMILY, entry, {"subset": "standard"},
                     f"{len(STANDARD_TASKS)} MiniWoB++ tasks solvable with element actions"),
        Registration("MiniWoB-all", FAMILY, entry, {"subset": "all"}, "every MiniWoB++ task page"),
    ]
    regs += [
        Registration(f"MiniWoB-{name}", FAMILY, entry, {"subset": name}, f"MiniWoB++ task {name}")
        for name in all_tasks()
    ]
    return regs
