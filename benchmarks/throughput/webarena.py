"""WebArena on the embedded sites against bare Playwright driving the same pages, same browser, same run.

Rows: a click on the shop's search box, and reading the page (ours: ``env.step("click(id)")`` with the
element listing; native: ``page.click`` and the accessibility tree WebArena's own harness fetches after
every action, ``Accessibility.getFullAXTree`` over CDP; and against ``page.click`` alone); a reset of a
signed-in forum task (ours: restore the site's database, sign in, open the start page and list it;
native: what WebArena's harness does at reset, set the storage state's cookies, open the start URL and
fetch the accessibility tree, on sites it does not restore); expert actions/s over a few tasks of each
site (no native counterpart: the tasks and their solutions are this project's).

    .venv/bin/python benchmarks/env_throughput.py --family webarena --quick
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from agentgym_envs.families.web.base import WebLimits
from agentgym_envs.families.web.browser import SharedBrowser
from agentgym_envs.families.web.webarena.env import SiteCheck, WebArenaEnv
from benchmarks.throughput.common import Row, head_to_head, measured

#: What WebArena's ``ScriptBrowserEnv`` reads for its accessibility-tree observation (before turning it into text).
AX_TREE = "Accessibility.getFullAXTree"
SEARCH_BOX = "input[aria-label='Search products']"
#: A signed-in forum task (reddit, ``storage_state``) and a shop task: one per site kind.
FORUM_TASK, SHOP_TASK = 95, 0


@contextlib.contextmanager
def _native_page(cookies: list[dict[str, Any]] | None = None) -> Iterator[tuple[Any, Any]]:
    """A plain Playwright page and its CDP session in the environment's browser (own context, closed afterwards)."""
    shared = SharedBrowser.current()
    assert shared is not None, "reset the environment first: it starts the shared browser"
    context = shared.browser.new_context()
    try:
        if cookies:
            context.add_cookies(cookies)
        page = context.new_page()
        yield page, context.new_cdp_session(page)
    finally:
        context.close()


def _times(action: Callable[[], object], n: int) -> Callable[[], int]:
    def run() -> int:
        for _ in range(n):
            action()
        return n

    return run


def _step(env: WebArenaEnv, action: str) -> None:
    """One step of a row that must not end its episode (a row that ended it would time resets too)."""
    *_, terminated, truncated, info = env.step(action)
    if terminated or truncated:
        why = info.get("truncation_reason") or info.get("action_error") or "terminated"
        why += f" ({env._site_down})" if env._site_down else ""
        raise RuntimeError(f"{action} ended the episode after {env._steps} steps: {why}")


def _clicks(env: WebArenaEnv, quick: bool) -> list[Row]:
    env.reset(options={"task": SHOP_TASK})
    box = env.find_node(role="textbox", name="Search products").id
    start_url = env.config["start_url"]
    with _native_page() as (page, cdp):
        page.goto(start_url)
        n, repeats = (10, 3) if quick else (30, 5)

        def native_step() -> None:
            page.click(SEARCH_BOX)
            cdp.send(AX_TREE, {})

        same = head_to_head(_times(lambda: _step(env, f"click({box})"), n), _times(native_step, n), repeats)
        bare = head_to_head(_times(lambda: _step(env, f"click({box})"), n), _times(lambda: page.click(SEARCH_BOX), n),
                            repeats)
    return [
        Row.compared("webarena", "shopping: click and read the page (native: WebArena's AX tree)", same, "actions/s",
                     "ours = click + element listing; native = page.click + CDP Accessibility.getFullAXTree",
                     leaves_out="native: our element probe before the click, the network policy's checks and "
                                "WebArena's Python formatting of the tree into text"),
        Row.compared("webarena", "shopping: click vs bare page.click", bare, "actions/s",
                     "ours = click + element listing; native = page.click only",
                     leaves_out="native: reading the page (the cost of an observation)"),
    ]


def _resets(env: WebArenaEnv, quick: bool) -> Row:
    env.reset(options={"task": FORUM_TASK})
    cookies = env.sites.storage_cookies("reddit")
    start_url = env.config["start_url"]
    with _native_page() as (page, cdp):
        context = page.context

        def native_reset() -> None:
            context.clear_cookies()
            context.add_cookies(cookies)
            page.goto(start_url)
            cdp.send(AX_TREE, {})

        n = 3 if quick else 10
        pair = head_to_head(_times(lambda: env.reset(options={"task": FORUM_TASK}), n), _times(native_reset, n),
                            3 if quick else 5)
    return Row.compared("webarena", "reddit (signed in): reset", pair, "resets/s",
                        "ours = restore the forum's database + sign in + open the start page + listing; native = "
                        "cookies + goto + CDP Accessibility.getFullAXTree",
                        leaves_out="native: restoring the site's state (WebArena's harness leaves it to the user)")


def _expert(env: WebArenaEnv, quick: bool) -> Row:
    tasks = [SHOP_TASK, 50, FORUM_TASK] if quick else [SHOP_TASK, 15, 50, 65, FORUM_TASK, 100, 120]

    def episodes() -> int:
        steps = 0
        for task in tasks:
            obs, info = env.reset(options={"task": task})
            while True:
                obs, reward, terminated, truncated, info = env.step(info["expert_action"])
                steps += 1
                if terminated or truncated:
                    if not info.get("won"):
                        raise RuntimeError(f"the expert did not win WebArena task {task}")
                    break
        return steps

    return Row.compared("webarena", f"expert episodes ({len(tasks)} tasks, 3 sites), resets included",
                        measured(episodes, 3), "steps/s",
                        "reset (database restore, sign-in, start page) + the scripted solution, listing each step",
                        leaves_out="no native counterpart (the embedded tasks and their solutions are this project's)")


def rows(quick: bool) -> list[Row]:
    # One episode holds every click of the click rows: neither the step limit nor the episode's clock may end it,
    # nor a site probe that waited over a second for the loopback server on the loaded machine (seen at step 249).
    env = WebArenaEnv(split="test", expert_actions=True, max_steps=10_000,
                      limits=WebLimits(episode_time_limit_s=None), site_check=SiteCheck(timeout_s=10.0))
    try:
        return [*_clicks(env, quick), _resets(env, quick), _expert(env, quick)]
    finally:
        env.close()
