"""Web environments against native Playwright on the same browser, same pages, same run.

Rows: MiniWoB clicks/s (ours: ``env.step("click(id)")`` with the observation listing and
the task state read back; native: ``page.click`` and what MiniWoB's own environment reads
after every action, ``core.getDOMInfo()`` and the reward globals; and against ``page.click``
alone), MiniWoB episodes/s on ``click-test`` (ours: ``reset`` + one ``step``; native: the task
API through ``page.evaluate`` + ``page.click`` + the same reads, with a fresh page load as ours
does every episode by default, and without, as MiniWoB does; and ours with ``reuse_page=True``
against native without), shop expert steps/s (no native counterpart)
and browser memory per environment (PSS of Chromium's processes).

A click waits for the element to be stable over two animation frames, so its time comes in steps of a
frame (about 17 ms at Chromium's 60 Hz): in a tight loop, where one step ends within a frame decides whether
the next click waits one frame more, and either side can land a frame behind for a whole run.  The click rows
therefore start each step right after an animation frame of its page (a wait left out of the time), so that
both sides start every click at the same point of a frame; the episode rows wait (untimed) for a frame
between the reset and the click.  In training, steps are apart by the model's generation and land
anywhere in a frame.

    .venv/bin/python benchmarks/env_throughput.py --family web --quick
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from agentgym_envs.families.web.browser import SharedBrowser
from agentgym_envs.families.web.miniwob import START_JS, MiniWoBEnv
from agentgym_envs.families.web.shop import WebShopEnv
from benchmarks.throughput.common import Row, head_to_head, measured


@contextlib.contextmanager
def _native_page(env: MiniWoBEnv, task: str) -> Iterator[Any]:
    """A plain Playwright page on ``task``, in the environment's browser (its own context, closed afterwards)."""
    context = SharedBrowser.current().browser.new_context()
    try:
        page = context.new_page()
        page.goto(env.server.url(f"miniwob/{task}.html"))
        page.wait_for_function("typeof core !== 'undefined' && core.cover_div !== null")
        yield page
    finally:
        context.close()


def _head_to_head(ours: Callable[[], float], native: Callable[[], float], n: int, quick: bool):
    """Both sides of a row: ``n`` calls of ``ours`` and of ``native`` a repetition, interleaved; each call returns
    the seconds it waited for a frame before its click (left out of the time)."""

    def times(action: Callable[[], float]) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            return n, sum(action() for _ in range(n))

        return run

    return head_to_head(times(ours), times(native), repeats=3 if quick else 5)


#: Resolves at the page's next animation frame.
NEXT_FRAME_JS = "() => new Promise(resolve => requestAnimationFrame(() => resolve(null)))"


def _next_frame(page: Any) -> float:
    """Wait for ``page``'s next animation frame; the seconds waited."""
    start = time.perf_counter()
    page.evaluate(NEXT_FRAME_JS)
    return time.perf_counter() - start



#: What MiniWoB's own environment reads after every action and reset (``get_state``): the elements
#: (``core.getDOMInfo``) and the reward globals.
NATIVE_STATE_JS = "[core.getDOMInfo(), WOB_DONE_GLOBAL, WOB_REWARD_GLOBAL, WOB_RAW_REWARD_GLOBAL]"


def _clicks(quick: bool) -> list[Row]:
    env = MiniWoBEnv("click-checkboxes", split="test", max_steps=10_000)
    try:
        env.reset(options={"task": "click-checkboxes/1"})
        box = env.find_node(role="checkbox").id
        with _native_page(env, "click-checkboxes") as page:
            page.evaluate(START_JS, ["1", "test", 10**9])
            n = 10 if quick else 30
            assert env.session is not None
            our_page = env.session.page

            def native_step() -> float:
                waited = _next_frame(page)
                page.click("#ch0")
                page.evaluate(NATIVE_STATE_JS)
                return waited

            def bare_native_step() -> float:
                waited = _next_frame(page)
                page.click("#ch0")
                return waited

            def our_step() -> float:
                waited = _next_frame(our_page)
                env.step(f"click({box})")
                return waited

            same = _head_to_head(our_step, native_step, n, quick)
            bare = _head_to_head(our_step, bare_native_step, n, quick)
        aligned = "; each step timed from the start of an animation frame"
        return [
            Row.compared("web", "MiniWoB click-checkboxes: click and read the page", same, "actions/s",
                         "ours = click + element listing + task state; native = page.click + getDOMInfo + reward"
                         + aligned,
                         leaves_out="native: our element probe before the click and the text listing; both: the "
                         "wait for the frame before each step"),
            Row.compared("web", "MiniWoB click-checkboxes: click vs bare page.click", bare, "actions/s",
                         "ours = click + element listing + task state; native = page.click only" + aligned,
                         leaves_out="native: reading the page and the reward (the cost of an observation); both: "
                         "the wait for the frame before each step"),
        ]
    finally:
        env.close()


def _episodes(quick: bool) -> list[Row]:
    env = MiniWoBEnv("click-test", split="train")
    kept_env = MiniWoBEnv("click-test", split="train", reuse_page=True)
    try:
        env.reset(seed=0)
        kept_env.reset(seed=0)
        seeds = iter(range(10**6))

        def episode(on: MiniWoBEnv) -> Callable[[], float]:
            def run() -> float:
                on.reset(options={"task": f"click-test/{100 + next(seeds) % 1000}"})
                assert on.session is not None
                waited = _next_frame(on.session.page)
                on.step(f"click({on.find_node(role='button').id})")
                return waited

            return run

        ours, ours_kept = episode(env), episode(kept_env)

        with _native_page(env, "click-test") as page:
            url = env.server.url("miniwob/click-test.html")

            def native_episode() -> float:
                page.evaluate(START_JS, [str(next(seeds)), "train", 10**9])
                page.evaluate("core.getUtterance()")
                page.evaluate(NATIVE_STATE_JS)
                waited = _next_frame(page)
                page.click("#subbtn")
                page.evaluate(NATIVE_STATE_JS)
                return waited

            def native_fresh_page() -> float:
                page.goto(url)
                page.wait_for_function("typeof core !== 'undefined' && core.cover_div !== null")
                return native_episode()

            n = 5 if quick else 15
            fresh = _head_to_head(ours, native_fresh_page, n, quick)
            kept = _head_to_head(ours, native_episode, n, quick)
            both_kept = _head_to_head(ours_kept, native_episode, n, quick)
        return [
            Row.compared("web", "MiniWoB click-test: episode, a fresh page on both sides", fresh, "episodes/s",
                         "ours = reset (page load, listing) + click step; native = goto + task API + page.click "
                         "+ getDOMInfo and reward after each",
                         leaves_out="native: our element numbering, probe and text listing; both: the wait for a "
                         "frame between reset and click"),
            Row.compared("web", "MiniWoB click-test: episode, native keeps its page", kept, "episodes/s",
                         "as above, but native restarts the task in the page it has (MiniWoB's default); ours "
                         "loads the page afresh every episode so that a task and seed give the same episode",
                         leaves_out="native: the page load (the cost of our fresh page per episode); both: the wait "
                         "for a frame between reset and click"),
            Row.compared("web", "MiniWoB click-test: episode, both sides keep their page (reuse_page=True)",
                         both_kept, "episodes/s",
                         "ours = MiniWoBEnv(reuse_page=True): reset restarts the task in the page it has (focus, "
                         "scroll cleared; listing) + click step; native = task API + page.click + getDOMInfo and "
                         "reward after each, in its kept page",
                         leaves_out="native: our element numbering, probe and text listing; both: the wait for a "
                         "frame between reset and click"),
        ]
    finally:
        env.close()
        kept_env.close()


def _shop(quick: bool) -> Row:
    env = WebShopEnv(split="test", expert_actions=True)
    try:
        tasks = iter(range(200))

        def ours() -> int:
            steps = 0
            for _ in range(1 if quick else 2):
                obs, info = env.reset(options={"task": next(tasks)})
                while True:
                    obs, r, term, trunc, info = env.step(info["expert_action"])
                    steps += 1
                    if term or trunc:
                        break
            return steps

        return Row.compared("web", "WebShop expert episodes", measured(ours, 3), "steps/s",
                            "search, product, options, cart, checkout; page listing each step",
                            leaves_out="no native counterpart (the shop is this project's)")
    finally:
        env.close()


def _pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except (psutil.Error, AttributeError):
            continue
    return total / 2**20


def _memory(quick: bool) -> Row:
    k = 3 if quick else 6
    envs = [MiniWoBEnv("click-checkboxes", split="test") for _ in range(k)]
    try:
        envs[0].reset(seed=0)
        shared = SharedBrowser.current()
        one = _pss_mb(shared.pids())
        for env in envs[1:]:
            env.reset(seed=0)
        many = _pss_mb(shared.pids())
        per_env = (many - one) / (k - 1)
        return Row("web", f"browser memory per extra MiniWoB env ({k} envs, one Chromium)", per_env, None, "MB",
                   f"Chromium PSS: {one:.0f} MB with 1 env, {many:.0f} MB with {k}")
    finally:
        for env in envs:
            env.close()


def rows(quick: bool) -> list[Row]:
    return [*_clicks(quick), *_episodes(quick), _shop(quick), _memory(quick)]
