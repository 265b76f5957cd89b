"""agentgym/WebArena-v0: WebArena's evaluator rules on its own examples, and the embedded sites in real Chromium."""

from __future__ import annotations

import json

import pytest
from web_checks import skip_without_chromium

from agentgym_envs.families.web.webarena.env import load_task_configs, resolve_placeholders
from agentgym_envs.families.web.webarena.evaluators import (
    EvaluationConfigError,
    evaluate,
    exact_match,
    must_include,
    program_html,
    string_match,
    url_match,
)
from agentgym_envs.families.web.webarena.suite import SUITE_PATH, build_suite

# ---- evaluators, on cases from WebArena's config_files/test.raw.json ----------------------------------
# Task 0 (exact_match 'Quest Lumaflex™ Band'), task 3 (must_include of two products), task 1 ('Sprite').
TOP1 = {"exact_match": "Quest Lumaflex™ Band"}
TOP2 = {"must_include": ["Quest Lumaflex™ Band", "Sprite Stasis Ball 65 cm"]}


def test_partial_answer_fails_exact_match_and_passes_must_include():
    answer = "The best sellers are Quest Lumaflex™ Band and Sprite Stasis Ball 65 cm"
    assert string_match(TOP1, answer, intent="top-1").score == 0.0
    assert string_match(TOP2, answer, intent="top-2").score == 1.0
    assert string_match(TOP2, "Quest Lumaflex™ Band", intent="top-2").score == 0.0  # one of two is not enough
    assert string_match(TOP1, ' "quest lumaflex™ band" ', intent="top-1").score == 1.0  # quotes and case cleaned
    # One single-character reference is matched as a token (the harness's word_tokenize rule) ...
    assert string_match({"must_include": ["0"]}, "10", intent="n").score == 0.0
    assert string_match({"must_include": ["0"]}, "There are 0 reviews.", intent="n").score == 1.0
    # ... but not inside program_html or with several references.
    assert must_include("0", "10") == 1.0 and exact_match("Sprite", "sprite") == 1.0


def test_fuzzy_match_without_a_judge_is_unavailable_not_passed():
    outcome = string_match({"fuzzy_match": ["$25.99"]}, "$25.99", intent="How much?")
    assert (outcome.score, outcome.unavailable, outcome.passed) == (0.0, ["fuzzy_match"], False)
    # "N/A" tasks: an exact N/A passes, anything else needs the judge's ua_match.
    assert string_match({"fuzzy_match": "N/A"}, "N/A", intent="?").passed
    assert string_match({"fuzzy_match": "N/A"}, "cannot be done", intent="?").unavailable == ["ua_match"]


def test_url_match_follows_gold_in_pred():
    ref = "http://h:7780/admin/sales/order?status=pending |OR| http://h:7780/admin/sales/order/?status=new"
    assert url_match(ref, "http://h:7780/admin/sales/order?q=&status=pending").score == 1.0
    assert url_match(ref, "http://h:7780/admin/sales/order?status=complete").score == 0.0
    assert url_match("http://h:9999/forums/all", "http://h:9999/forums/all/").score == 1.0  # WebArena example 4
    with pytest.raises(EvaluationConfigError):
        url_match(ref, "http://h:7780/", url_note="EXACT")


class RecordedPage:
    """A page recorded from a WebArena-style post: its URL, HTML and what its locators return."""

    def __init__(self, url, html, located):
        self.url, self.html, self.located, self.visited = url, html, located, []

    def goto(self, url):
        self.visited.append(url)
        self.url = url

    def evaluate(self, expression):
        return self.located[expression.removeprefix("() => ")]

    def content(self):
        return self.html


def test_program_html_runs_locators_on_the_target_page():
    page = RecordedPage("http://h:9999/f/books/12/my-title/comment/4", "<p>A &amp; B</p>",
                        {"document.querySelector('.submission__title').outerText": "Weekly books thread"})
    target = {"url": "func:reddit_get_post_url('__last_url__')",
              "locator": "document.querySelector('.submission__title').outerText",
              "required_contents": {"exact_match": "weekly books thread"}}
    assert program_html([target], page).score == 1.0
    assert page.visited == ["http://h:9999/f/books/12/"]
    html_target = {"url": "last", "locator": "", "required_contents": {"must_include": ["a & b", "x |OR| b"]}}
    assert program_html([html_target], page).score == 1.0  # HTML entities unescaped, |OR| alternatives
    api = {"url": "last", "locator": "func:shopping_get_sku_latest_review_rating('B0')",
           "required_contents": {"exact_match": "80"}}
    assert program_html([api], page).unavailable  # the harness's REST helpers are not faked
    config = {"intent": "?", "eval": {"eval_types": ["string_match", "program_html"], "program_html": [html_target],
                                      "reference_answers": {"exact_match": "yes"}}}
    assert evaluate(config, "yes", page).score == 1.0 and evaluate(config, "no", page).score == 0.0


def test_configs_load_from_a_webarena_file_with_placeholders(tmp_path):
    raw = {"sites": ["reddit"], "task_id": 4, "start_url": "__REDDIT__/", "intent": "list all subreddits",
           "storage_state": "./.auth/reddit_state.json", "require_reset": False,
           "eval": {"eval_types": ["url_match"], "reference_url": "__REDDIT__/forums/all"}}
    (tmp_path / "4.json").write_text(json.dumps(raw))
    [config] = load_task_configs(tmp_path)
    resolved = resolve_placeholders(config, {"reddit": "http://10.0.0.2:9999/"})
    assert resolved["eval"]["reference_url"] == "http://10.0.0.2:9999/forums/all"
    assert resolved["start_url"] == "http://10.0.0.2:9999/"


def test_stored_suite_is_current_and_well_formed():
    stored = json.loads(SUITE_PATH.read_text())
    assert stored == build_suite()
    assert len(stored) >= 100
    kinds = {t for task in stored for t in task["eval"]["eval_types"]}
    assert kinds == {"string_match", "url_match", "program_html"}
    assert {task["agentgym_split"] for task in stored} == {"train", "valid", "test"}
    assert any(len(task["sites"]) > 1 for task in stored)


# ---- real Chromium on the embedded sites ------------------------------------------------------------
@pytest.fixture(scope="module")
def env():
    skip_without_chromium(module_level=False)
    from agentgym_envs.families.web.webarena.env import WebArenaEnv

    env = WebArenaEnv(split="test", expert_actions=True)
    yield env
    env.close()


def _task(env, template):
    return next(t for t, c in env.configs.items() if c["intent_template"] == template and t in env.task_ids)


def _play_expert(env, task):
    obs, info = env.reset(options={"task": task})
    while True:
        obs, reward, terminated, truncated, info = env.step(info["expert_action"])
        if terminated or truncated:
            return reward, info


@pytest.mark.parametrize("template", ["shop_add_to_cart", "admin_set_price", "reddit_comment"])
def test_expert_wins_and_state_changes_see_a_fresh_database(env, template):
    task = _task(env, template)
    reward, info = _play_expert(env, task)
    assert info["won"] and reward == 1.0 and info["eval_score"] == 1.0
    # The change is on the site; after reset the seeded state is back and the check fails again.
    env.reset(options={"task": task})
    obs, reward, terminated, _, info = env.step('stop("")')
    assert terminated and not info["won"] and info["eval_score"] == 0.0


def test_a_reset_that_switches_sites_keeps_the_browser(env):
    from agentgym_envs.families.web.browser import SharedBrowser

    shop, forum = _task(env, "shop_brand"), _task(env, "reddit_comment")
    env.reset(options={"task": shop})
    browser = SharedBrowser.current().browser
    env.reset(options={"task": forum})  # other origins: a new session (network policy), the same Chromium
    assert SharedBrowser.current().browser is browser and browser.is_connected()


def test_information_task_grades_the_answer(env):
    task = _task(env, "shop_brand")
    brand = env.configs[task]["eval"]["reference_answers"]["exact_match"]
    env.reset(options={"task": task})
    assert env.step(f'stop("{brand} makes it")')[4]["won"] is False  # exact_match: a partial answer fails
    env.reset(options={"task": task})
    assert env.step(f'stop("{brand}")')[4]["won"] is True


def test_requests_outside_the_task_sites_are_blocked_and_counted(env):
    task = _task(env, "shop_product_page")  # a shopping-only task: the forum is another origin
    env.reset(options={"task": task})
    obs, _, terminated, truncated, info = env.step('goto("http://reddit.embedded/forums")')  # the forum, as shown
    assert "blocked" in info["action_error"] and info["blocked_requests"] == 1
    assert not (terminated or truncated) and info["url"].startswith("http://shopping.embedded/")
    forum = env.sites.urls["reddit"]
    # A link the page itself follows to that origin is stopped by the browser's policy too.
    env.session.evaluate(f"() => {{ location.href = '{forum}/'; }}")
    obs, *_, info = env.step("scroll(down)")
    assert info["blocked_requests"] >= 2 and forum in " ".join(info["blocked_urls"])


def test_a_site_that_is_down_truncates_the_episode():
    skip_without_chromium(module_level=False)
    import socket

    from agentgym_envs.families.web.webarena.env import WebArenaEnv

    env = WebArenaEnv(split="test")
    try:
        task = _task(env, "reddit_open_forum")
        env.reset(options={"task": task})
        env.sites.servers["reddit"].close()
        *_, terminated, truncated, info = env.step("scroll(down)")
        assert truncated and not terminated and info["truncation_reason"] == "site_unavailable"
    finally:
        env.close()
    # Hosted sites: a WA_* URL nobody answers on is found at reset, and the first step truncates.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    hosted = WebArenaEnv(tasks=SUITE_PATH, site_urls={"reddit": f"http://127.0.0.1:{port}"}, split="test")
    try:
        obs, info = hosted.reset(options={"task": task})
        assert f"127.0.0.1:{port} does not answer" in obs
        *_, truncated, info = hosted.step("scroll(down)")
        assert truncated and info["truncation_reason"] == "site_unavailable"
    finally:
        hosted.close()
