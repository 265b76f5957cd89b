"""MiniWoB++ and the shop, in real headless Chromium: tasks solved through the tool-call interface."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest
from web_checks import skip_without_chromium

pytest.importorskip("miniwob")
skip_without_chromium()

import agentgym_envs  # noqa: E402,F401
from agentgym_envs.families.web.miniwob import MiniWoBEnv, task_names  # noqa: E402
from agentgym_envs.families.web.shop import WebShopEnv, make_goal  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTGYM_CACHE", str(tmp_path_factory.mktemp("agc")))
        yield


@pytest.fixture(scope="module")
def miniwob():
    env = MiniWoBEnv(
        ["click-test", "click-button", "enter-text", "login-user", "click-checkboxes", "choose-list", "focus-text"],
        split="test",
    )
    yield env
    env.close()


def _quoted(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text)


def _solve(env: MiniWoBEnv) -> list[str]:
    """A scripted solver that reads the listing (env.nodes) and the instruction, as an agent would."""
    name = str(env.task_id).split("/")[0]
    utterance = env.instruction
    button = lambda n: env.find_node(role="button", name=n).id  # noqa: E731
    boxes = [n.id for n in env.nodes if n.role == "textbox"]
    if name == "click-test":
        return [f"click({button('Click Me!')})"]
    if name == "click-button":
        return [f"click({button(_quoted(utterance)[0])})"]
    if name == "enter-text":
        return [f'type({boxes[0]}, "{_quoted(utterance)[0]}")', f"click({button('Submit')})"]
    if name == "login-user":
        user, password = _quoted(utterance)
        return [f'type({boxes[0]}, "{user}")', f'type({boxes[1]}, "{password}")', f"click({button('Login')})"]
    if name == "click-checkboxes":
        wanted = re.match(r"Select (.*) and click Submit", utterance).group(1)
        names = [] if wanted == "nothing" else [w.strip() for w in wanted.split(",")]
        clicks = [f"click({env.find_node(role='checkbox', name=n).id})" for n in names]
        return [*clicks, f"click({button('Submit')})"]
    if name == "choose-list":
        item = re.match(r"Select (.*) from the list", utterance).group(1)
        combo = env.find_node(role="combobox")
        return [f'select({combo.id}, "{item}")', f"click({button('Submit')})"]
    if name == "focus-text":
        return [f"click({boxes[0]})"]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "task", ["click-test", "click-button", "enter-text", "login-user", "click-checkboxes", "choose-list", "focus-text"]
)
def test_miniwob_tasks_solved_through_tool_calls(miniwob, task):
    for seed in (3, 4):
        obs, info = miniwob.reset(options={"task": f"{task}/{seed}"})
        assert obs.startswith(f"Task: {info['instruction']}") and "[" in obs
        assert info["miniwob_raw_reward"] == 0.0 and info["blocked_requests"] == 0
        for action in _solve(miniwob):
            obs, reward, terminated, truncated, info = miniwob.step(action)
            assert info["action_error"] is None, info["action_error"]
        assert terminated and info["won"], (task, info["miniwob_reason"], obs)
        assert info["miniwob_raw_reward"] == 1.0 and reward == 1.0


def test_miniwob_same_seed_same_task(miniwob):
    first = miniwob.reset(options={"task": "click-button/7"})[0]
    miniwob.reset(options={"task": "click-button/8"})
    assert miniwob.reset(options={"task": "click-button/7"})[0] == first


def test_miniwob_bad_actions_are_outcomes(miniwob):
    obs, info = miniwob.reset(options={"task": "enter-text/1"})
    submit = miniwob.find_node(role="button", name="Submit").id
    cases = {
        "click(999)": "there is no element [999]",
        "click(submit)": "is not an element id",
        f'type({submit}, "x")': "is not a text box",
        f'select({submit}, "x")': "is not a drop-down",
        "press(NoSuchKey)": "unknown key",
        "scroll(sideways)": "scroll direction",
    }
    for action, expected in cases.items():
        obs, reward, terminated, truncated, info = miniwob.step(action)
        assert expected in info["action_error"], (action, info["action_error"])
        assert obs.startswith("Action failed:") and not (terminated or truncated) and reward == 0.0
    obs, reward, terminated, truncated, info = miniwob.step("click(")
    assert info["parse_error"] and info["action"] is None and not terminated
    obs, reward, terminated, truncated, info = miniwob.step("scroll(down)")
    assert info["action_error"] is None
    obs, reward, terminated, truncated, info = miniwob.step('stop("done")')
    assert terminated and info["lost"] and not info["won"]


def test_miniwob_hidden_element_is_an_outcome(miniwob):
    miniwob.reset(options={"task": "click-test/2"})
    button = miniwob.find_node(role="button")
    miniwob.session.page.evaluate("document.getElementById('subbtn').style.display = 'none'")
    obs, reward, terminated, truncated, info = miniwob.step(f"click({button.id})")
    assert "is hidden" in info["action_error"] and not terminated


def test_miniwob_registration_and_reward_wrappers():
    assert len(task_names("all")) >= 120 and "click-test" in task_names("standard")
    ids = {row.env_id for row in agentgym_envs.list_environments("miniwob")}
    assert {"agentgym/MiniWoB-standard-v0", "agentgym/MiniWoB-all-v0", "agentgym/MiniWoB-click-test-v0"} <= ids
    env = gym.make("agentgym/MiniWoB-click-test-v0", split="test", reward="sparse", action_format="hermes",
                   screenshots=True)
    try:
        obs, info = env.reset(seed=0)
        node = env.unwrapped.find_node(role="button")
        obs, reward, terminated, truncated, info = env.step(
            f'<tool_call>{{"name": "click", "arguments": {{"element_id": "{node.id}"}}}}</tool_call>'
        )
        assert terminated and reward == 1.0
        assert info["screenshot"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        env.close()


def test_shop_tasks_solved_by_the_expert():
    env = gym.make("agentgym/WebShop-v0", split="test", reward="dense", expert_actions=True)
    try:
        for task in (0, 1, 2):
            obs, info = env.reset(options={"task": task})
            assert info["instruction"] == make_goal(task).instruction() and "Search products" in obs
            total = 0.0
            for _ in range(20):
                obs, reward, terminated, truncated, info = env.step(info["expert_action"])
                total += reward
                assert info["action_error"] is None and info["parse_error"] is None
                if terminated or truncated:
                    break
            assert terminated and info["won"] and total == pytest.approx(1.0)
            assert "Order #1 is placed" in obs and len(info["purchased"]) == 1
            assert info["blocked_requests"] == 0
    finally:
        env.close()


def test_shop_partial_purchase_gets_partial_dense_reward():
    env = WebShopEnv(split="test", catalogue_size=300, expert_actions=True)
    try:
        obs, info = env.reset(options={"task": 5})
        goal = env.goal
        # Follow the expert to the product page, then buy it in another colour: a partial match.
        while info["url"] != f"/product/{goal.source_product}":
            obs, reward, terminated, truncated, info = env.step(env.expert_action())
        other = next(c for c in env._products[goal.source_product].colors if c != goal.color)
        steps = [
            f"select({env.find_node(role='combobox', name='Color').id}, {other!r})",
            f"select({env.find_node(role='combobox', name='Size').id}, {goal.size!r})",
        ]
        for action in steps:
            obs, reward, terminated, truncated, info = env.step(action)
        for role, name in (("button", "Add to cart"), ("link", "Proceed to checkout"), ("button", "Place order")):
            obs, reward, terminated, truncated, info = env.step(f"click({env.find_node(role=role, name=name).id})")
        assert terminated and not info["won"] and info["lost"]
        expected = (len(goal.features) + 2) / (len(goal.features) + 3)
        assert info["score"] == pytest.approx(expected)
    finally:
        env.close()


def test_shop_splits_and_filters():
    env = WebShopEnv(split="train", catalogue_size=300)
    try:
        assert 0 not in env.task_ids and 400 in env.task_ids
        env.reset(options={"task": 400})
        page = env.session.page
        page.goto(env.server.url("/search?category=shoes&color=red&max_price=100"))
        env._observe()
        text = env._observation()
        assert "products, page 1 of" in text
        by_title = {p.title: p for p in env._products.values()}
        results = [by_title[n.name] for n in env.nodes if n.role == "link" and n.name in by_title]
        assert results and all(p.category == "shoes" and p.price <= 100 and "red" in p.colors for p in results)
        obs, reward, terminated, truncated, info = env.step(f"click({env.find_node(role='link', name='Cart (0)').id})")
        assert info["url"] == "/cart" and "Your cart is empty" in obs
    finally:
        env.close()


def test_miniwob_reset_reloads_the_page(miniwob):
    # Focus, typed text and page state of one episode must not reach the next (issue 16 item 12).
    first, info = miniwob.reset(options={"task": "enter-text/5"})
    box = miniwob.find_node(role="textbox")
    obs = miniwob.step(f'type({box.id}, "left over")')[0]
    assert "(focused)" in obs and 'value="left over"' in obs
    again, info = miniwob.reset(options={"task": "enter-text/5"})
    assert again == first and "(focused)" not in again and "left over" not in again
    assert "elapsed_s" not in info and miniwob.elapsed_s >= 0.0
