"""BabyAI family: the contract, text rendering, splits, expert and hostile input, on real minigrid levels."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import agentgym_envs
from agentgym_envs import INFO_KEYS, UnknownTaskError, as_text_env
from agentgym_envs.families import babyai
from agentgym_envs.families.babyai import ACTIONS, LEVELS, BabyAIEnv, describe_view, normalize_command

pytest.importorskip("minigrid")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path / "cache"))


def _play_expert(env: gym.Env, task: int) -> dict:
    obs, info = env.reset(options={"task": task})
    while True:
        action = info["expert_action"]
        assert action in ACTIONS
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return info


def test_levels_match_minigrid_registry():
    import minigrid  # noqa: F401

    shipped = {k for k in gym.registry if k.startswith("BabyAI-")}
    assert set(LEVELS.values()) == shipped
    ids = {row.env_id for row in agentgym_envs.list_environments("babyai")}
    assert ids == {f"agentgym/BabyAI-{name}-v0" for name in LEVELS}
    assert all(row.installed for row in agentgym_envs.list_environments("babyai"))


def test_contract_info_schema_and_spaces():
    env = gym.make("agentgym/BabyAI-GoToLocal-v0", split="test", admissible_actions=True, expert_actions=True)
    obs, info = env.reset(seed=3)
    assert set(INFO_KEYS) <= set(info)
    assert info["family"] == "babyai" and info["split"] == "test"
    assert info["instruction"].startswith("go to the ")
    assert f"Your mission: {info['instruction']}." in obs
    assert env.observation_space.contains(obs)
    assert info["admissible_actions"] == list(ACTIONS)
    assert info["expert_action"] in ACTIONS
    assert info["max_score"] == 1.0 and info["score"] == 0.0
    obs, reward, terminated, truncated, info = env.step("turn left")
    assert set(INFO_KEYS) <= set(info)
    assert info["action"] == "turn left" and info["invalid_action"] is False
    assert isinstance(reward, float)
    env.close()


def test_reset_is_deterministic_under_seed_and_task():
    env = gym.make("agentgym/BabyAI-BossLevel-v0", split="valid")
    obs_a, info_a = env.reset(seed=11)
    trace_a = [env.step(a)[0] for a in ("go forward", "turn right", "go forward", "toggle")]
    obs_b, info_b = env.reset(seed=11)
    trace_b = [env.step(a)[0] for a in ("go forward", "turn right", "go forward", "toggle")]
    assert (obs_a, info_a["task_id"], trace_a) == (obs_b, info_b["task_id"], trace_b)
    first = env.reset(options={"task": 1000})[0]
    second = env.reset(options={"task": 1001})[0]
    assert first != second
    assert env.reset(options={"task": 1000})[0] == first


def test_splits_are_disjoint_and_selectable():
    env = BabyAIEnv("GoToRedBall", split="train", seed_range=(100_000, 100_009))
    assert env.task_ids == list(range(100_000, 100_010))
    assert set(babyai.TEST_SEEDS).isdisjoint(babyai.TRAIN_SEEDS)
    assert set(babyai.VALID_SEEDS).isdisjoint(babyai.TRAIN_SEEDS)
    assert set(babyai.VALID_SEEDS).isdisjoint(babyai.TEST_SEEDS)
    with pytest.raises(UnknownTaskError):
        BabyAIEnv("GoToRedBall", split="test", tasks=[100_000])
    with pytest.raises(ValueError, match="unknown BabyAI level"):
        BabyAIEnv("NoSuchLevel")


@pytest.mark.parametrize("level", ["GoToLocal", "PickupLoc", "PutNextLocal", "Unlock", "GoToSeq", "BossLevel"])
def test_expert_wins_held_out_tasks(level):
    env = gym.make(f"agentgym/BabyAI-{level}-v0", split="test", expert_actions=True)
    results = [_play_expert(env, task) for task in (0, 1, 2)]
    assert all(info["won"] for info in results), [(i["task_id"], i["step"]) for i in results]
    assert all(info["score"] == 1.0 for info in results)


def test_expert_on_demand_after_off_policy_steps():
    env = gym.make("agentgym/BabyAI-PickupLoc-v0", split="test")
    inner = as_text_env(env)
    obs, info = env.reset(options={"task": 5})
    assert info["expert_action"] is None  # not requested
    for action in ("turn left", "go forward", "turn left"):
        env.step(action)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(inner.expert_action())
        if terminated or truncated:
            break
    assert info["won"] and reward == 1.0


def test_dense_reward_pays_progress_on_sequence_missions():
    env = gym.make("agentgym/BabyAI-GoToSeq-v0", split="test", reward="dense", expert_actions=True)
    for task in range(20):
        obs, info = env.reset(options={"task": task})
        if " and " not in info["instruction"] and " then " not in info["instruction"]:
            continue
        rewards, scores = [], []
        while True:
            obs, reward, terminated, truncated, info = env.step(info["expert_action"])
            rewards.append(reward)
            scores.append(info["score"])
            if terminated or truncated:
                break
        assert info["won"]
        assert any(0 < s < 1 for s in scores), "a two-part mission shows partial progress"
        assert sum(rewards) == pytest.approx(1.0)
        return
    pytest.fail("no sequence mission among 20 GoToSeq tasks")


def test_sparse_reward_only_on_success():
    env = gym.make("agentgym/BabyAI-GoToLocal-v0", split="test", reward="sparse", expert_actions=True)
    obs, info = env.reset(options={"task": 4})
    rewards = []
    while True:
        obs, reward, terminated, truncated, info = env.step(info["expert_action"])
        rewards.append(reward)
        if terminated or truncated:
            break
    assert info["won"] and rewards[-1] == 1.0 and set(rewards[:-1]) <= {0.0}


@pytest.mark.parametrize(
    "text",
    ["", "   ", "fly to the moon", "turn left\ndrop", "\x00\x01", "💥" * 50, "x" * 10_000, b"turn left", None, 7,
     "<tool_call>{}</tool_call>", "turn left; rm -rf /"],
)
def test_hostile_action_text_is_a_defined_outcome(text):
    env = gym.make("agentgym/BabyAI-GoToLocal-v0", split="test")
    obs0, info0 = env.reset(options={"task": 2})
    obs, reward, terminated, truncated, info = env.step(text)
    assert not terminated and not truncated and reward == 0.0
    assert info["parse_error"] is not None or info["invalid_action"] is True
    assert info["won"] is False and info["step"] == 1
    # The world did not change: the view is what it was.
    assert obs0.split("\n", 1)[1] in obs or info["parse_error"]
    obs, *_ = env.step("turn left")
    assert "You carry nothing." in obs


def test_aliases_and_normalization():
    assert normalize_command("Turn LEFT.") == 0
    assert normalize_command("  go   forward ") == 2
    assert normalize_command("pick up the ball") is None  # objects are not part of BabyAI actions
    assert normalize_command("pickup") == 3
    assert normalize_command("open the door") == 5
    assert normalize_command("fly") is None


def test_pick_up_then_carry_is_described():
    env = gym.make("agentgym/BabyAI-PickupLoc-v0", split="test", expert_actions=True)
    info = _play_expert(env, 3)
    assert info["won"]
    inner = as_text_env(env)
    assert inner._sim.carrying is not None
    carried = f"{inner._sim.carrying.color} {inner._sim.carrying.type}"
    assert f"You carry a {carried}." in inner._last_observation


def test_describe_view_positions_walls_and_doors():
    view = np.zeros((7, 7, 3), dtype=np.uint8)
    view[:, :, 0] = 1  # empty
    view[:, 0, 0] = 2  # a wall row 6 steps ahead
    view[3, 5] = (4, 2, 2)  # a locked blue door right in front
    view[1, 6] = (5, 4, 0)  # a yellow key 2 steps to the left
    view[6, 2] = (7, 1, 0)  # a green box 3 right, 4 forward
    text = describe_view(view)
    assert "In front of you is a locked blue door." in text
    assert "a yellow key 2 steps left" in text
    assert "a green box 3 steps right and 4 steps forward" in text
    assert "a wall 6 steps forward" in text
    assert "You carry nothing." in text
    # Unseen cells hide everything behind them.
    view[3, 2] = (0, 0, 0)
    assert "a wall 6 steps forward" not in describe_view(view)


def test_step_limit_truncates_and_level_limit_is_default():
    env = gym.make("agentgym/BabyAI-GoToLocal-v0", split="test", max_steps=3)
    env.reset(options={"task": 0})
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step("turn left")
    assert truncated and not terminated and info["truncation_reason"] == "step_limit"
    default = gym.make("agentgym/BabyAI-KeyCorridorS3R1-v0", split="test")
    default.reset(options={"task": 0})
    limit = as_text_env(default).max_steps
    default.reset(options={"task": 1})
    assert as_text_env(default).max_steps == limit < 10_000


def test_generation_prints_stay_off_stdout(capfd):
    env = gym.make("agentgym/BabyAI-BossLevel-v0", split="test")
    for task in range(8):  # some BossLevel seeds rejection-sample ("Sampling rejected: ...")
        env.reset(options={"task": task})
    out, err = capfd.readouterr()
    assert out == ""


def test_close_releases_and_env_can_be_reset_again():
    env = gym.make("agentgym/BabyAI-GoToRedBall-v0", split="test")
    env.reset(options={"task": 0})
    env.close()
    assert as_text_env(env)._sim is None
    obs, info = env.reset(options={"task": 0})
    assert "red ball" in info["instruction"]
    env.close()
