"""TextWorld-Express family, on the real simulator (a JVM per environment)."""

from __future__ import annotations

import gymnasium as gym
import pytest
from jvm_checks import assert_capped_jvms_close, kill_jvm

pytest.importorskip("textworld_express")

import agentgym_envs  # noqa: E402
from agentgym_envs import INFO_KEYS, SparseReward, UnknownTaskError, as_text_env  # noqa: E402
from agentgym_envs.families import textworld_express as twx  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """An isolated cache for this module (the seed folds are computed once, here)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTGYM_CACHE", str(tmp_path_factory.mktemp("agc-twx")))
        yield


@pytest.fixture(scope="module")
def env():
    e = as_text_env(gym.make("agentgym/TWX-cookingworld-v0", split="test", reward="native"))
    yield e
    e.close()


def test_registry_and_folds():
    from textworld_express import GAME_NAMES

    ids = {row.env_id for row in agentgym_envs.list_environments("textworld_express")}
    assert ids == {f"agentgym/TWX-{g}-v0" for g in GAME_NAMES} and set(twx.GAMES) == set(GAME_NAMES)
    folds = twx.seed_folds()
    for game in GAME_NAMES:
        f = folds[game]
        assert f["train"] and f["valid"] and f["test"]
        assert not (set(f["train"]) & set(f["test"]) or set(f["valid"]) & set(f["test"]) or set(f["train"]) & set(f["valid"]))
    e = twx.TextWorldExpressEnv("coin", split="test", seed_range=(20000, 20009))
    assert e.task_ids == list(range(20000, 20010)) and e.jvm_pid is None  # no JVM before the first reset
    with pytest.raises(UnknownTaskError):
        twx.TextWorldExpressEnv("chess")
    with pytest.raises(UnknownTaskError):
        e.reset(options={"task": 5})  # a train seed


def test_contract_and_determinism(env):
    obs1, info1 = env.reset(seed=11)
    assert set(INFO_KEYS) <= set(info1) and info1["family"] == "textworld_express" and info1["max_score"] == 1.0
    assert info1["task_id"] in range(20000, 21000) and obs1.startswith(info1["instruction"])
    assert env.observation_space.contains(obs1)
    valid = env.admissible_actions()
    assert "look around" in valid and "inventory" in valid
    steps1 = [env.step(a)[0] for a in ("look around", "take cookbook", "inventory")]
    obs2, info2 = env.reset(seed=11)
    steps2 = [env.step(a)[0] for a in ("look around", "take cookbook", "inventory")]
    assert (obs1, info1["task_id"], steps1) == (obs2, info2["task_id"], steps2)
    obs, reward, terminated, truncated, info = env.step("look around")
    assert set(INFO_KEYS) <= set(info) and info["step"] == 4 and isinstance(reward, float)
    assert info["admissible_actions"] is None  # only computed when requested


def test_same_observations_and_scores_as_the_stock_api(env):
    from textworld_express import TextWorldExpressEnv as StockEnv

    stock = StockEnv(envStepLimit=100)
    try:
        stock.reset(seed=20003, gameFold="test", gameName="cookingworld", gameParams="", generateGoldPath=True)
        gold = stock.getGoldActionSequence()
        env.reset(options={"task": 20003})
        for action in gold:
            s_obs, _, s_done, s_info = stock.step(action)
            o_obs, _, terminated, _, info = env.step(action)
            assert o_obs == s_obs and info["score"] == s_info["score"]
            assert sorted(env.admissible_actions()) == sorted(s_info["validActions"])
            if terminated:
                break
        assert terminated and s_done and info["won"]
    finally:
        stock.close()


@pytest.mark.parametrize("game", list(twx.GAMES))
def test_expert_wins_held_out_games_and_repeats_itself(game):
    """The expert wins, and the same task and seed give the same expert episode (issue 23, item 14: the
    simulator searched gold paths with an unseeded RNG, so coin's expert took 27 steps one run, 19 the next)."""
    e = gym.make(f"agentgym/TWX-{game}-v0", split="test", expert_actions=True, reward="dense")
    try:
        episodes = []
        for seed in (0, 1, 0, 0):
            obs, info = e.reset(seed=seed)
            transcript = [obs]
            total, terminated, truncated = 0.0, False, False
            while not (terminated or truncated):
                assert info["expert_action"], info
                obs, reward, terminated, truncated, info = e.step(info["expert_action"])
                transcript += [info["action"], obs]
                total += reward
            assert terminated and info["won"] and not info["lost"] and info["score"] == 1.0
            assert total == pytest.approx(1.0)
            episodes.append(transcript)
        assert episodes[0] == episodes[2] == episodes[3]
        # The expert asked for on demand (the game regenerated with its gold path) takes the same path.
        lazy = twx.TextWorldExpressEnv(game, split="test", jvm=as_text_env(e).jvm_config)
        try:
            obs, info = lazy.reset(seed=0)
            transcript = [obs]
            while len(transcript) < len(episodes[0]):
                obs, *_ = lazy.step(lazy.expert_action())
                transcript += [lazy._history[-1], obs]
            assert transcript == episodes[0]
        finally:
            lazy.close()
    finally:
        e.close()


@pytest.mark.parametrize("game", list(twx.GAMES))
def test_expert_steps_over_invalid_and_read_only_commands(game):
    """One invalid command (or an ``inventory``) must not end the expert's help for the episode."""
    e = twx.TextWorldExpressEnv(game, split="test", expert_actions=True)
    try:
        obs, info = e.reset(options={"task": e.task_ids[0]})
        detours = ["xyzzy", "inventory", "take the moon", "look around"]
        terminated = truncated = False
        while not (terminated or truncated):
            if detours and info["step"] % 2 == 1:
                obs, reward, terminated, truncated, info = e.step(detours.pop())
                continue
            assert info["expert_action"], (game, info["step"], obs)
            obs, reward, terminated, truncated, info = e.step(info["expert_action"])
        assert info["won"], (game, obs)
    finally:
        e.close()


def test_lazy_expert_sparse_reward_and_params():
    e = twx.TextWorldExpressEnv("coin", params="numLocations=3,includeDoors=0", split="valid")
    try:
        sparse = SparseReward(e)
        obs, info = sparse.reset(seed=4)
        assert info["expert_action"] is None and e._gold is None
        sparse.step("look around")  # the gold path starts with it; the replay must keep up
        rewards, terminated = [], False
        while not terminated:
            obs, reward, terminated, truncated, info = sparse.step(e.expert_action())
            rewards.append(reward)
        assert info["won"] and rewards[-1] == 1.0 and sum(rewards) == 1.0
        e.reset(seed=4)
        first = e.expert_action()
        detour = next(a for a in e.admissible_actions() if a != first and a not in twx.READ_ONLY_COMMANDS)
        e.step(detour)
        assert e.expert_action() is None  # off the gold path: a move that changed the world
    finally:
        e.close()
    bad = twx.TextWorldExpressEnv("coin", params="bogus=1", split="valid")
    try:
        with pytest.raises(ValueError, match="bogus"):
            bad.reset(seed=0)
    finally:
        bad.close()


def test_failure_is_terminated_and_lost():
    """Simon says: doing anything but what Simon says fails the task."""
    e = twx.TextWorldExpressEnv("simonsays", split="test", expert_actions=True)
    try:
        obs, info = e.reset(options={"task": 20001})
        wrong = next(a for a in e.admissible_actions() if a not in (info["expert_action"], "look around", "inventory"))
        obs, reward, terminated, truncated, info = e.step(wrong)
        assert terminated and not truncated and info["lost"] and not info["won"] and "Incorrect" in obs
    finally:
        e.close()


@pytest.mark.parametrize(
    "text",
    ["", "x" * 5000, "xyzzy plugh", "take caf\u00e9", "look around\neat apple", '{"name": 1}', "\x00"],
)
def test_hostile_action_text_has_a_defined_outcome(env, text):
    env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(text)
    assert isinstance(obs, str) and obs and reward == 0.0 and not terminated and not truncated
    if info["parse_error"] is None:  # reached the simulator, which refused it
        assert info["action"] == text.strip() and "Unknown action" in obs
    else:
        assert info["action"] is None and obs.startswith("Invalid action")
    env.step("look around")


def test_close_leaves_no_jvm_and_memory_cap():
    envs = [twx.TextWorldExpressEnv("sorting", split="test", max_memory_mb=256) for _ in range(3)]
    assert_capped_jvms_close(envs, max_memory_mb=256)


def test_crash_mid_episode_truncates_then_recovers(env):
    env.reset(seed=2)
    env.step("look around")
    old = kill_jvm(env)
    obs, reward, terminated, truncated, info = env.step("inventory")
    assert truncated and not terminated and info["truncation_reason"] == "crash" and "JVM" in info["error"]
    obs, info = env.reset(seed=2)
    assert env.jvm_pid not in (None, old)
    assert env.step("look around")[4]["truncation_reason"] is None
