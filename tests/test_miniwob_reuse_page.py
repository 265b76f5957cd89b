"""MiniWoB with ``reuse_page=True``: the task restarts in the page it has, and the agent sees what a fresh page shows."""

from __future__ import annotations

import gymnasium as gym
import pytest
from web_checks import skip_without_chromium

pytest.importorskip("miniwob")
skip_without_chromium()

import agentgym_envs  # noqa: E402,F401
from agentgym_envs.families.web.miniwob import MiniWoBEnv  # noqa: E402

TASKS = ["click-test", "click-checkboxes", "enter-text"]


@pytest.fixture(scope="module")
def fresh():
    env = MiniWoBEnv(TASKS, split="test")
    yield env
    env.close()


@pytest.fixture(scope="module")
def kept():
    env = MiniWoBEnv(TASKS, split="test", reuse_page=True)
    yield env
    env.close()


def _mark(env: MiniWoBEnv) -> None:
    """Leave a global in the loaded document: it survives an in-page restart and no page load."""
    env.session.evaluate("window.__kept_document = true")


def _same_document(env: MiniWoBEnv) -> bool:
    return env.session.evaluate("window.__kept_document === true")


def test_same_task_and_seed_restarts_in_the_page_as_a_fresh_page_would(fresh, kept):
    expected, expected_info = fresh.reset(options={"task": "click-checkboxes/3"})
    first, info = kept.reset(options={"task": "click-checkboxes/3"})
    _mark(kept)
    again, again_info = kept.reset(options={"task": "click-checkboxes/3"})
    assert _same_document(kept)
    assert first == again == expected
    assert again_info["instruction"] == expected_info["instruction"]
    other, _ = kept.reset(options={"task": "click-checkboxes/4"})
    assert _same_document(kept) and other == fresh.reset(options={"task": "click-checkboxes/4"})[0]


@pytest.mark.parametrize(
    "task, act, left_over",
    [
        ("click-checkboxes/5", lambda env: f"click({env.find_node(role='checkbox').id})", "(checked, focused)"),
        ("enter-text/5", lambda env: f'type({env.find_node(role="textbox").id}, "left over")',
         'value="left over" (focused)'),
    ],
)
def test_what_an_episode_changed_is_gone_after_the_restart(fresh, kept, task, act, left_over):
    kept.reset(options={"task": task})
    _mark(kept)
    assert left_over in kept.step(act(kept))[0]
    restarted, _ = kept.reset(options={"task": task})
    assert _same_document(kept)
    assert restarted == fresh.reset(options={"task": task})[0]
    assert "checked" not in restarted and "focused" not in restarted and "left over" not in restarted


def test_another_task_or_a_page_that_left_loads_afresh(fresh, kept):
    kept.reset(options={"task": "click-test/2"})
    _mark(kept)
    obs, _ = kept.reset(options={"task": "enter-text/2"})
    assert not _same_document(kept) and obs == fresh.reset(options={"task": "enter-text/2"})[0]
    # The page went elsewhere (here: another task page of the site) since the task started.
    kept.session.goto(kept.server.url("miniwob/click-test.html"))
    _mark(kept)
    obs, _ = kept.reset(options={"task": "enter-text/2"})
    assert not _same_document(kept) and obs == fresh.reset(options={"task": "enter-text/2"})[0]


def test_an_in_page_restart_still_scores_through_gym_make():
    env = gym.make("agentgym/MiniWoB-click-test-v0", split="test", reuse_page=True)
    try:
        assert env.unwrapped.reuse_page is True
        for seed in (0, 1):
            env.reset(options={"task": f"click-test/{seed}"})
            if seed == 1:
                assert _same_document(env.unwrapped)
            _mark(env.unwrapped)
            button = env.unwrapped.find_node(role="button", name="Click Me!")
            obs, reward, terminated, truncated, info = env.step(f"click({button.id})")
            assert (reward, terminated, info["won"], info["miniwob_raw_reward"]) == (1.0, True, True, 1.0)
    finally:
        env.close()


def test_reuse_page_must_be_a_bool():
    with pytest.raises(TypeError, match="reuse_page must be True or False"):
        MiniWoBEnv("click-test", reuse_page="yes")
