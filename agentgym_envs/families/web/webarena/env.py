"""``agentgym/WebArena-v0``: one WebArena task config per episode, graded by WebArena's evaluators.

See :mod:`agentgym_envs.families.web.webarena` for the task sources, the sites and the actions.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentgym_envs.core import TaskSplits, TaskStart, Transition
from agentgym_envs.errors import (
    ActionFailed,
    AgentGymError,
    DataNotFoundError,
    ExpertUnavailableError,
)
from agentgym_envs.families.web.base import WebEnv
from agentgym_envs.families.web.browser import BrowserSession, _origin
from agentgym_envs.families.web.webarena.evaluators import EvalOutcome, Judge, evaluate
from agentgym_envs.families.web.webarena.suite import SUITE_PATH
from agentgym_envs.parsing import ActionParser, ToolCall, ToolSpec

WEBARENA_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("click", ("element_id",), "Click the element with this id."),
    ToolSpec("hover", ("element_id",), "Hover over the element with this id."),
    ToolSpec("type", ("element_id", "text"), "Type text into a text box (its old text is replaced)."),
    ToolSpec("type_enter", ("element_id", "text"), "Type text into a text box, then press Enter."),
    ToolSpec("press", ("key_comb",), "Press a key combination, e.g. Enter, Control+A, ArrowDown."),
    ToolSpec("scroll", ("direction",), "Scroll the page up or down."),
    ToolSpec("new_tab", (), "Open a new, empty tab and focus it."),
    ToolSpec("tab_focus", ("tab_index",), "Focus the tab with this index (0 is the first)."),
    ToolSpec("close_tab", (), "Close the current tab."),
    ToolSpec("goto", ("url",), "Open this URL in the current tab."),
    ToolSpec("go_back", (), "Go back to the previous page."),
    ToolSpec("go_forward", (), "Go forward to the next page."),
    ToolSpec("stop", ("answer",), "End the task, with the answer if the task asks a question (else an empty string)."),
)

#: WebArena's site placeholders -> site names, and the environment variables BrowserGym reads their URLs from.
PLACEHOLDERS = {"__SHOPPING_ADMIN__": "shopping_admin", "__SHOPPING__": "shopping", "__REDDIT__": "reddit",
                "__GITLAB__": "gitlab", "__WIKIPEDIA__": "wikipedia", "__MAP__": "map"}
SITE_ENV_VARS = {"shopping": "WA_SHOPPING", "shopping_admin": "WA_SHOPPING_ADMIN", "reddit": "WA_REDDIT",
                 "gitlab": "WA_GITLAB", "wikipedia": "WA_WIKIPEDIA", "map": "WA_MAP", "homepage": "WA_HOMEPAGE"}
_TASK_SPLIT_KEY = "agentgym_split"


class SiteNotConfiguredError(AgentGymError, ValueError):
    """A task needs a site whose URL is neither embedded nor given (``site_urls`` / ``WA_*``)."""


@dataclass(frozen=True)
class SiteCheck:
    """How a task's sites are probed before and during an episode (a TCP connect to each origin)."""

    timeout_s: float = 1.0


def load_task_configs(source: str | os.PathLike[str] = "embedded") -> list[dict[str, Any]]:
    """WebArena task configs: ``"embedded"`` (this package's suite), ``"webarena"`` (the ``test.raw.json``
    of an installed ``webarena`` package, as BrowserGym reads it), a JSON file holding a list of configs,
    or a directory of ``<task_id>.json`` files (WebArena's ``config_files/``).

    Example:
        >>> len(load_task_configs("embedded"))
        128
    """
    if source == "embedded":
        path = SUITE_PATH
    elif source == "webarena":
        try:
            import webarena  # type: ignore[import-not-found]  # noqa: PLC0415 - optional, only for this source
        except ImportError as exc:
            raise DataNotFoundError("tasks='webarena' reads test.raw.json from the `webarena` package, which is not "
                                    "installed; pass the path of WebArena's config_files/test.raw.json instead") from exc
        return list(json.loads(resources.files(webarena).joinpath("test.raw.json").read_text()))
    else:
        path = Path(source)
    if path.is_dir():
        configs = [json.loads(p.read_text()) for p in sorted(path.glob("*.json")) if p.stem.isdigit()]
    elif path.is_file():
        loaded = json.loads(path.read_text())
        configs = loaded if isinstance(loaded, list) else [loaded]
    else:
        raise DataNotFoundError(f"no WebArena task configs at {str(path)!r}")
    bad = [c for c in configs if not isinstance(c, dict) or "task_id" not in c or "eval" not in c]
    if bad or not configs:
        raise DataNotFoundError(f"{str(path)!r} does not hold WebArena task configs (each needs task_id and eval)")
    return configs


def resolve_placeholders(config: Mapping[str, Any], urls: Mapping[str, str]) -> dict[str, Any]:
    """``config`` with ``__SHOPPING__`` ... replaced by the sites' URLs (only sites present in ``urls``).

    Example:
        >>> resolve_placeholders({"start_url": "__REDDIT__/forums"}, {"reddit": "http://127.0.0.1:9999"})
        {'start_url': 'http://127.0.0.1:9999/forums'}
    """
    text = json.dumps(config)
    for placeholder, site in PLACEHOLDERS.items():
        if site in urls:
            text = text.replace(placeholder, urls[site].rstrip("/"))
    return json.loads(text)


def site_urls_from_env() -> dict[str, str]:
    """Site URLs from BrowserGym's variables (``WA_SHOPPING``, ..., ``WA_HOMEPAGE``) that are set."""
    return {site: os.environ[var].rstrip("/") for site, var in SITE_ENV_VARS.items() if os.environ.get(var)}


class _LivePage:
    """The environment's page as WebArena's evaluators read it (:class:`~.evaluators.PageProbe`)."""

    def __init__(self, session: BrowserSession, allowed: set[str]):
        self.session = session
        self.allowed = allowed

    @property
    def url(self) -> str:
        return str(self.session.page.url)

    def goto(self, url: str) -> None:
        if _origin(url) in self.allowed:
            self.session.goto(url)
        else:  # a target outside the task's sites: nothing to read there (its locators find nothing)
            self.session.safety.count(url)
            self.session.call(self.session.page.goto, "about:blank", what="leaving the page")

    def evaluate(self, expression: str) -> Any:
        return self.session.evaluate(expression, what="running an evaluator locator")

    def content(self) -> str:
        return str(self.session.call(self.session.page.content, what="reading the page's HTML"))


class WebArenaEnv(WebEnv):
    """One WebArena task per episode, on the embedded sites (default) or on WebArena sites you host.

    Args:
        tasks: where the task configs come from (see :func:`load_task_configs`).
        site_urls: site name -> URL; default: the embedded sites for ``tasks="embedded"``, else
            ``WA_SHOPPING``, ``WA_SHOPPING_ADMIN``, ``WA_REDDIT``, ``WA_GITLAB``, ``WA_WIKIPEDIA``,
            ``WA_MAP`` and ``WA_HOMEPAGE`` from the environment.
        judge: grades ``fuzzy_match`` answers (e.g. :class:`~.evaluators.OpenAIJudge`); without one those
            checks are unavailable (``info["eval_unavailable"]``) and the task is not won.
        auth_dir: where the configs' ``storage_state`` files (``./.auth/..._state.json``) are found
            for hosted sites; the embedded sites sign in by themselves.
        catalogue_size: products of the embedded shop (the suite's answers hold for the default).
        site_check: how sites are probed; a site that does not answer truncates the episode with
            ``truncation_reason="site_unavailable"``.
        **kwargs: see :class:`~agentgym_envs.families.web.base.WebEnv`.

    Example:
        >>> env = WebArenaEnv(split="test", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": 0})             # doctest: +SKIP
    """

    family = "webarena"
    tools = WEBARENA_TOOLS
    default_max_steps = 30

    def __init__(self, tasks: str | os.PathLike[str] = "embedded", site_urls: Mapping[str, str] | None = None,
                 judge: Judge | None = None, auth_dir: str | os.PathLike[str] | None = None,
                 catalogue_size: int = 3000, site_check: SiteCheck | None = None, **kwargs: Any):
        self.task_source = tasks
        self.embedded = tasks == "embedded" and site_urls is None
        self.configs = {int(c["task_id"]): c for c in load_task_configs(tasks)}
        self.site_urls = dict(site_urls) if site_urls is not None else ({} if self.embedded else site_urls_from_env())
        self.judge = judge
        self.auth_dir = Path(auth_dir) if auth_dir is not None else Path.cwd()
        self.catalogue_size = int(catalogue_size)
        self.site_check = site_check or SiteCheck()
        self.config: dict[str, Any] = {}
        self.evaluation: EvalOutcome | None = None
        self._origins: list[str] = []
        self._tabs: list[str] = []
        self._tab = 0
        self._site_down: str | None = None
        self._aliases: dict[str, str] = {}
        self._plan: list[dict[str, Any]] = []
        self._plan_cursor = 0
        self._plan_parser = ActionParser("plain", WEBARENA_TOOLS)
        super().__init__(**kwargs)

    # ---- tasks -------------------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        by_split: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
        for task_id, config in sorted(self.configs.items()):
            # Configs without our split key (WebArena's own) are all test tasks, as in the paper.
            by_split.get(str(config.get(_TASK_SPLIT_KEY, "test")), by_split["test"]).append(task_id)
        return TaskSplits(train=by_split["train"], valid=by_split["valid"], test=by_split["test"])

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [t for t in available if lo <= int(t) <= hi]  # type: ignore[call-overload]

    @property
    def sites(self) -> Any:
        """The embedded sites (``None`` for hosted sites, or before the first reset)."""
        return self.server if self.embedded else None

    def _urls(self) -> dict[str, str]:
        if self.embedded:
            return self.server.urls  # type: ignore[union-attr]
        return self.site_urls

    # ---- lifecycle ---------------------------------------------------------------------------
    def _start(self, task_id: Hashable) -> TaskStart:
        if self.embedded and self.server is None:
            from agentgym_envs.families.web.webarena.sites import EmbeddedSites  # noqa: PLC0415 - built on first use

            self.server = EmbeddedSites(catalogue_size=self.catalogue_size)  # type: ignore[assignment]
        raw = self.configs[int(task_id)]  # type: ignore[call-overload]
        urls = self._urls()
        missing = [s for s in raw.get("sites", []) if s not in urls and s != "misc"]
        if missing:
            variables = ", ".join(SITE_ENV_VARS.get(s, s) for s in missing)
            raise SiteNotConfiguredError(f"task {task_id} needs the site(s) {missing}: set {variables} (or site_urls)")
        self.config = resolve_placeholders(raw, urls)
        # The embedded sites' ports change from run to run: the agent sees (and may type) stable names instead.
        self._aliases = {u.rstrip("/"): f"http://{site}.embedded" for site, u in urls.items()} if self.embedded else {}
        origins = {_origin(urls[s]) for s in raw.get("sites", []) if s in urls}
        origins.update(_origin(u) for u in self.config["start_url"].split(" |AND| "))
        self._origins = sorted(origins)
        self.evaluation = None
        self._site_down = None
        self._plan = list((self.config.get("reference_action_sequence") or {}).get("action_sequence") or [])
        if (self.config.get("reference_action_sequence") or {}).get("action_set_tag") != "agentgym_plan":
            self._plan = []
        self._plan_cursor = 0
        return super()._start(task_id)

    def _ensure_started(self) -> BrowserSession:
        # The network policy is per task: exactly the task's site origins.
        session = self.session
        if session is not None and session.allowed != set(self._origins):
            session.close()
            session = self.session = None
        if session is None:
            session = self.session = BrowserSession(self.browser_config, self._origins)
        elif not session.alive():
            session.recover()
        return session

    def _web_start(self, task_id: Hashable) -> TaskStart:
        session = self.session
        assert session is not None
        config = self.config
        start = TaskStart(observation="", instruction=str(config.get("intent", "")), max_score=1.0, score=0.0)
        if self.embedded:
            self.server.restore(config.get("sites", []))  # type: ignore[union-attr]
        session.call(session.context.clear_cookies, what="clearing cookies")
        self._site_down = self._unreachable_site()
        cookies = self._storage_cookies(config.get("storage_state")) if self._site_down is None else []
        if cookies:
            session.call(session.context.add_cookies, cookies, what="signing in")
        self._tabs = [u.strip() for u in str(config["start_url"]).split(" |AND| ")]
        self._tab = 0
        if self._site_down is None:
            session.goto(self._tabs[0])
        else:
            session.call(session.page.goto, "about:blank", what="blanking the page")
        return start

    def _storage_cookies(self, storage_state: str | None) -> list[dict[str, Any]]:
        if not storage_state:
            return []
        if self.embedded:
            # ``./.auth/shopping_admin.reddit_state.json`` signs in to each named site.
            names = Path(storage_state).name.removesuffix("_state.json").split(".")
            return [c for name in names if name in self.server.apps for c in self.server.storage_cookies(name)]  # type: ignore[union-attr]
        path = Path(storage_state)
        path = path if path.is_absolute() else self.auth_dir / path
        if not path.is_file():
            raise DataNotFoundError(f"storage_state {str(path)!r} not found (set auth_dir to where .auth/ lives)")
        return list(json.loads(path.read_text()).get("cookies", []))

    def _unreachable_site(self) -> str | None:
        for origin in self._origins:
            parts = urlsplit(origin)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                with socket.create_connection((parts.hostname or "", port), timeout=self.site_check.timeout_s):
                    pass
            except OSError as exc:
                return f"{origin} does not answer ({exc.__class__.__name__})"
        return None

    # ---- stepping ------------------------------------------------------------------------------
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self._site_down is not None and not terminated:
            truncated = True
            self._done = True
            info["truncation_reason"] = "site_unavailable"
        return obs, reward, terminated, truncated, info

    def _execute_call(self, call: ToolCall) -> Transition:
        if self._site_down is not None:
            return Transition(self._observation(), self._score)
        self._advance_plan(call)
        transition = super()._execute_call(call)
        if not (transition.won or transition.lost):
            self._site_down = self._unreachable_site()
            if self._site_down is not None:
                transition.observation = self._observation()
        return transition

    def _act(self, session: BrowserSession, call: ToolCall) -> None:
        args = call.arguments
        do = session.call
        if call.name == "hover":
            locator, _ = self._locate(session, args["element_id"])
            do(locator.hover, what="hover")
            return
        if call.name == "type_enter":
            super()._act(session, ToolCall("type", {"element_id": args["element_id"], "text": args["text"]}))
            locator, _ = self._locate(session, args["element_id"])
            if not do(locator.evaluate, "(el) => !!el.form", what="type_enter (finding the form)"):
                do(locator.press, "Enter", what="type_enter")
                return
            page = session.page
            timeout = self.browser_config.navigation_timeout_ms

            def submit() -> None:
                # Enter submits the box's form: wait for the page it loads, not for the old one.
                with page.expect_navigation(wait_until="load", timeout=timeout):
                    locator.press("Enter")

            do(submit, timeout_ms=timeout, what="type_enter (submitting the form)")
            return
        if call.name == "press":
            super()._act(session, ToolCall("press", {"key": args["key_comb"]}))
            return
        if call.name == "goto":
            self._goto(session, self.real_url(args["url"].strip()))
            return
        if call.name in ("go_back", "go_forward"):
            method = session.page.go_back if call.name == "go_back" else session.page.go_forward
            do(method, wait_until="load", timeout_ms=self.browser_config.navigation_timeout_ms, what=call.name)
            return
        if call.name in ("new_tab", "tab_focus", "close_tab"):
            self._tabs[self._tab] = str(session.page.url)
            if call.name == "new_tab":
                self._tabs.append("about:blank")
                self._tab = len(self._tabs) - 1
            elif call.name == "tab_focus":
                index = args["tab_index"].strip()
                if not index.isdigit() or int(index) >= len(self._tabs):
                    raise ActionFailed(f"there is no tab {args['tab_index']!r}; tabs are 0 to {len(self._tabs) - 1}")
                self._tab = int(index)
            else:
                self._tabs.pop(self._tab)
                self._tabs = self._tabs or ["about:blank"]
                self._tab = len(self._tabs) - 1
            self._goto(session, self._tabs[self._tab])
            return
        super()._act(session, call)

    def _goto(self, session: BrowserSession, url: str) -> None:
        if url == "about:blank":
            session.call(session.page.goto, url, what="opening an empty tab")
        elif _origin(url) not in session.allowed:
            session.safety.count(url)
            allowed = ", ".join(self.shown_url(o) for o in sorted(session.allowed))
            raise ActionFailed(f"{self.shown_url(url)} is outside this task's sites ({allowed}); blocked")
        else:
            session.goto(url)

    def _observe(self) -> None:
        super()._observe()
        if self.session is not None:
            # WebArena shows whole URLs: a task may span several sites.
            self._url = self.shown_url(str(self.session.page.url))

    def _observation(self) -> str:
        text = super()._observation()
        if self._site_down is not None:
            text = f"A site of this task is unavailable: {self.shown_url(self._site_down)}\n\n{text}"
        if len(self._tabs) > 1:
            tabs = " ".join(f"[{i}] {self.shown_url(u)}{' (current)' if i == self._tab else ''}"
                            for i, u in enumerate(self._tabs))
            text = text.replace("\nPage:\n", f"\nTabs: {tabs}\nPage:\n", 1)
        return text

    def shown_url(self, text: str) -> str:
        """``text`` with the embedded sites' origins as the agent sees them (``http://reddit.embedded``)."""
        for real, alias in self._aliases.items():
            text = text.replace(real, alias)
        return text

    def real_url(self, url: str) -> str:
        """The URL the browser opens for one the agent typed (an embedded site's name -> its port)."""
        for real, alias in self._aliases.items():
            if url == alias or url.startswith(alias + "/"):
                return real + url[len(alias):]
        return url

    # ---- grading -------------------------------------------------------------------------------
    def _grade(self, answer: str) -> tuple[float, bool, bool]:
        session = self.session
        assert session is not None
        self.evaluation = evaluate(self.config, answer, _LivePage(session, session.allowed), self.judge)
        won = self.evaluation.passed
        return (1.0 if won else 0.0), won, not won

    def _stop(self, answer: str) -> tuple[float, bool, bool]:
        return self._grade(answer)

    def _web_outcome(self, state: Any, call: ToolCall | None) -> tuple[float, bool, bool]:
        # WebArena grades an episode cut at its step limit as if it stopped with an empty answer.
        if call is None:
            return 0.0, False, False
        if self._steps >= self.max_steps and self.evaluation is None:
            return self._grade("")
        return self._score, False, False

    def _web_info(self) -> dict[str, Any]:
        info = super()._web_info()
        info["task_id"] = self.config.get("task_id")
        info["sites"] = list(self.config.get("sites", []))
        info["require_reset"] = bool(self.config.get("require_reset"))
        if self.evaluation is not None:
            info["eval_score"] = self.evaluation.score
            info["eval_unavailable"] = list(self.evaluation.unavailable)
            info["eval_details"] = json.loads(self.shown_url(json.dumps(self.evaluation.details)))
        return info

    # ---- expert -------------------------------------------------------------------------------
    def _expert(self) -> str | None:
        if self._done or not self._plan:
            return None
        if self._plan_cursor < 0:  # the agent left the plan: start it again from the task's first page
            return f"goto({self.shown_url(self._tabs[0])!r})" if self._tabs else None
        return self._render_step(self._plan[min(self._plan_cursor, len(self._plan) - 1)])

    def _advance_plan(self, call: ToolCall) -> None:
        if not self._plan:
            return
        try:
            expected = self._expert()
        except ExpertUnavailableError:
            expected = None
        parsed = self._plan_parser.parse(expected) if expected else None
        if parsed is not None and parsed.call == call:
            self._plan_cursor = 0 if self._plan_cursor < 0 else self._plan_cursor + 1
        else:
            self._plan_cursor = -1

    def _render_step(self, step: Mapping[str, Any]) -> str:
        kind = step["do"]
        if kind == "goto":
            return f"goto({self.shown_url(step['url'])!r})"
        if kind == "stop":
            return f"stop({step['answer']!r})"
        if kind == "choose":
            select = self.find_node(role="combobox", name=step["select"])
            if select is None:
                raise ExpertUnavailableError(f"no drop-down {step['select']!r} on this page")
            index = self.nodes.index(select)
            for node in self.nodes[index + 1:]:
                if node.depth <= select.depth:
                    break
                if node.role == "option" and node.name == step["option"]:
                    return f"click({node.id})"
            raise ExpertUnavailableError(f"drop-down {step['select']!r} has no option {step['option']!r}")
        matches = [n for n in self.nodes if n.role == step["role"] and n.name == step["name"]]
        index = int(step.get("index", 0))  # which of several same-named elements (-1: the last)
        if not -len(matches) <= index < len(matches):
            raise ExpertUnavailableError(f"no {step['role']} {step['name']!r} on this page")
        node = matches[index]
        if kind == "click":
            return f"click({node.id})"
        tool = "type_enter" if step.get("enter") else "type"
        return f"{tool}({node.id}, {step['text']!r})"

