"""The environment contract, the registry and the reward wrappers, on real generated TextWorld games."""

from __future__ import annotations

import re
import subprocess
import sys

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit

import agentgym_envs
from agentgym_envs import (
    INFO_KEYS,
    DenseReward,
    FormatPenalty,
    MissingDependencyError,
    SparseReward,
    SplitLeakError,
    StepPenalty,
    TaskSplits,
    UnknownSplitError,
    UnknownTaskError,
)
from agentgym_envs.registry import Family

ENV_ID = "agentgym/TextWorld-w2-o3-q4-v0"
# A few fixed held-out games keep the suite fast (each is generated once and cached).
TASKS = [10001, 10002, 10003]


def make(**kwargs):
    kwargs.setdefault("split", "test")
    kwargs.setdefault("tasks", TASKS)
    return gym.make(ENV_ID, **kwargs)


def play_expert(env, seed):
    obs, info = env.reset(seed=seed)
    trace = [(obs, info["task_id"])]
    done = False
    total = 0.0
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        trace.append((obs, reward))
        total += reward
        done = terminated or truncated
    return trace, total, info


def test_spaces_and_the_five_tuple() -> None:
    env = make()
    assert isinstance(env.observation_space, gym.spaces.Text)
    assert isinstance(env.action_space, gym.spaces.Text)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and obs
    assert set(INFO_KEYS) <= set(info)
    result = env.step("look")
    assert len(result) == 5
    obs, reward, terminated, truncated, info = result
    assert isinstance(obs, str) and isinstance(reward, float)
    assert terminated is False and truncated is False
    assert info["action"] == "look" and info["raw_action"] == "look" and info["parse_error"] is None
    assert info["step"] == 1
    env.close()


def test_gymnasium_env_checker_passes() -> None:
    env = make()
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_seeds_make_episodes_reproducible() -> None:
    env = make()
    a = play_expert(env, seed=7)
    b = play_expert(env, seed=7)
    assert a == b
    tasks = {env.reset(seed=s)[1]["task_id"] for s in range(12)}
    assert tasks == set(TASKS)  # the seed picks among the configured tasks
    env.close()


def test_reset_with_an_explicit_task_and_unknown_tasks() -> None:
    env = make()
    _, info = env.reset(options={"task": 10002})
    assert info["task_id"] == 10002 and info["split"] == "test" and info["family"] == "textworld"
    with pytest.raises(UnknownTaskError):
        env.reset(options={"task": 30001})  # a training seed is not a test task
    env.close()
    with pytest.raises(UnknownTaskError):
        gym.make(ENV_ID, split="test", tasks=[30001])
    with pytest.raises(UnknownSplitError):
        gym.make(ENV_ID, split="dev")


def test_splits_are_disjoint_and_leaks_are_caught() -> None:
    from agentgym_envs.families.textworld import TEST_SEEDS, TRAIN_SEEDS, VALID_SEEDS

    assert len(TEST_SEEDS) == 100 and TRAIN_SEEDS[0] == 30001 and TRAIN_SEEDS[-1] == 35000
    assert not set(TEST_SEEDS) & set(TRAIN_SEEDS) and not set(VALID_SEEDS) & set(TRAIN_SEEDS)
    with pytest.raises(SplitLeakError, match="train and test"):
        TaskSplits(train=[1, 2, 3], valid=[4], test=[3]).assert_disjoint()
    env = gym.make(ENV_ID, split="train", seed_range=(30001, 30010))
    assert env.unwrapped.task_ids == list(range(30001, 30011))
    env.close()


def test_invalid_action_text_is_an_in_episode_outcome_with_a_format_penalty() -> None:
    env = make(format_penalty=0.25, action_format="tags")
    obs0, info = env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step("take key")  # no <action> block
    assert reward == -0.25 and not terminated and not truncated
    assert "Invalid action" in obs and "<action>" in obs
    assert info["parse_error"] and info["action"] is None and info["raw_action"] == "take key"
    # The game was not stepped: the expert's plan is unchanged and still wins.
    _, total, info = play_expert_from_here(env)
    assert info["won"] and total == 1.0
    env.close()


def play_expert_from_here(env):
    total, done, info = 0.0, False, {}
    while not done:
        action = env.unwrapped.parser.format_command(env.unwrapped.expert_action())
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    return None, total, info


def test_step_limit_truncates_and_stepping_after_the_end_needs_a_reset() -> None:
    env = make(max_steps=3)
    env.reset(seed=0)
    outcomes = [env.step("wait")[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]
    with pytest.raises(gym.error.ResetNeeded):
        env.step("look")
    env.close()
    env = make(max_steps=1)
    env.reset(seed=0)
    *_, truncated, info = env.step("")  # an invalid action also uses up a step
    assert truncated and info["truncation_reason"] == "step_limit" and info["parse_error"]
    env.close()


def test_admissible_and_expert_info_only_when_asked() -> None:
    env = make()
    _, info = env.reset(seed=0)
    assert info["admissible_actions"] is None and info["expert_action"] is None
    env.close()
    env = make(admissible_actions=True, expert_actions=True)
    _, info = env.reset(seed=0)
    assert info["expert_action"] in info["admissible_actions"]
    env.close()


def test_projection_onto_admissible_actions() -> None:
    env = make(project_to_admissible=True, expert_actions=True)
    _, info = env.reset(seed=0)
    expert = info["expert_action"]
    sloppy = expert.upper() + " please"
    _, _, _, _, info = env.step(sloppy)
    assert info["action"] == expert and info["raw_action"] == sloppy
    env.close()


def test_reward_wrappers_compose() -> None:
    native = make(reward="native")
    _, total, info = play_expert(native, seed=0)
    assert info["won"] and total == info["max_score"]
    sparse = make(reward="sparse")
    trace, total, _ = play_expert(sparse, seed=0)
    assert total == 1.0 and [r for _, r in trace[1:]][-1] == 1.0 and all(r == 0 for _, r in trace[1:-1])
    dense = make(reward="dense")
    _, total, _ = play_expert(dense, seed=0)
    assert total == pytest.approx(1.0)
    stepped = make(reward="sparse", step_penalty=0.1)
    trace, total, _ = play_expert(stepped, seed=0)
    steps = len(trace) - 1
    assert total == pytest.approx(1.0 - 0.1 * steps)
    for env in (native, sparse, dense, stepped):
        env.close()

    # Wrappers stack by hand too, and with Gymnasium's own wrappers.
    env = RecordEpisodeStatistics(
        TimeLimit(FormatPenalty(StepPenalty(DenseReward(make(reward="native")), 0.05), 0.5), max_episode_steps=2)
    )
    env.reset(seed=0)
    _, r1, *_ = env.step("")
    _, r2, terminated, truncated, info = env.step("look")
    assert r1 == pytest.approx(-0.55) and r2 == pytest.approx(-0.05)
    assert truncated and info["episode"]["r"] == pytest.approx(-0.6) and info["episode"]["l"] == 2
    env.close()
    assert isinstance(make(reward="sparse"), gym.Wrapper) and isinstance(SparseReward, type)
    with pytest.raises(ValueError, match="reward must be one of"):
        make(reward="shaped")
    with pytest.raises(ValueError, match=">= 0"):
        StepPenalty(make(), -1.0)


def test_registry_lists_families_and_missing_dependencies_name_the_extra() -> None:
    rows = agentgym_envs.list_environments("textworld")
    assert {r.env_id for r in rows} >= {
        "agentgym/TextWorld-w2-o3-q4-v0",
        "agentgym/TextWorld-w8-o3-q4-v0",
        "agentgym/TextWorld-w2-o12-q4-v0",
        "agentgym/TextWorld-w8-o12-q4-v0",
        "agentgym/TextWorld-w4-o6-q8-v0",
    }
    assert all(r.installed and r.splits == ("train", "valid", "test") for r in rows)
    family = Family("ghost", extra="ghost", requires=("no_such_module_agentgym",))
    assert not family.installed()
    from agentgym_envs.errors import install_command

    with pytest.raises(MissingDependencyError, match=re.escape(install_command("ghost"))):
        family.check()
    with pytest.raises(gym.error.Error):
        gym.make("agentgym/NoSuchEnv-v0")
    assert gym.make(ENV_ID, split="test", max_steps=5).unwrapped.max_steps == 5


def test_import_stays_light() -> None:
    code = (
        "import sys, agentgym_envs; heavy = [m for m in ('torch', 'textworld', 'playwright', 'py4j', 'jpype',"
        " 'scienceworld', 'transformers') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_list_and_rollout(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "list", "--family", "textworld"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "agentgym/TextWorld-w2-o3-q4-v0" in out
    report = tmp_path / "rollout.json"
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "rollout", ENV_ID, "--policy", "expert,random",
         "--episodes", "2", "--json", str(report)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "expert on" in result.stdout and "success 100.0%" in result.stdout and "steps/s" in result.stdout
    assert report.exists()
    bad = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "rollout", ENV_ID, "--policy", "genius"],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "unknown policy" in bad.stderr


def test_play_reads_commands_from_the_terminal() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "play", ENV_ID, "--seed", "0"],
        input=":admissible\n:expert\nlook\n:quit\n", capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # The task is stated once (in the first observation here, so without a separate "Task:" line).
    assert "entered TextWorld" in result.stdout and "inventory" in result.stdout
    assert "[reward +0.00, return 0.00, step 1]" in result.stdout


def test_a_users_time_limit_sets_the_truncation_reason() -> None:
    """Gymnasium's TimeLimit truncates without telling the environment; info still says why (issue 23, item 15)."""
    from agentgym_envs.wrappers import FormatPenalty

    def play(env, actions):
        env.reset(seed=0)
        rows = [env.step(action)[2:] for action in actions]
        env.close()
        return [(terminated, truncated, info["truncation_reason"]) for terminated, truncated, info in rows]

    # Outside gym.make's wrappers, under others, with valid and invalid actions: the last step says "step_limit".
    user = RecordEpisodeStatistics(TimeLimit(gym.make("agentgym/TextCraft-v0", split="test"), max_episode_steps=3))
    assert play(user, ["inventory", "xyzzy", "inventory"]) == [(False, False, None)] * 2 + [(False, True, "step_limit")]
    for last in ("xyzzy", "inventory"):
        user = FormatPenalty(TimeLimit(gym.make("agentgym/TextCraft-v0", split="test"), 2), 0.1)
        assert play(user, ["inventory", last])[-1] == (False, True, "step_limit")
    # gym.make's own TimeLimit, shorter than the environment's limit.
    with pytest.warns(UserWarning, match=r"TimeLimit\(2\)"):
        cut = gym.make("agentgym/TextCraft-v0", split="test", max_episode_steps=2)
    assert play(cut, ["inventory", "inventory"]) == [(False, False, None), (False, True, "step_limit")]
    # A TimeLimit around another environment is not this one's.
    other = TimeLimit(gym.make("agentgym/TextCraft-v0", split="test"), 1)
    env = gym.make("agentgym/TextCraft-v0", split="test")
    other.reset(seed=0)
    env.reset(seed=0)
    assert env.step("inventory")[4]["truncation_reason"] is None
    other.close()
    env.close()


def test_gym_specs_declare_the_step_limit_and_an_explicit_larger_limit_is_kept() -> None:
    import warnings

    assert gym.spec("agentgym/TextCraft-v0").max_episode_steps == 30
    assert gym.spec(ENV_ID).max_episode_steps == 12
    assert gym.spec("agentgym/BabyAI-GoToSeq-v0").max_episode_steps is None  # per-task limits (1152 or 2304)

    def steps_to_the_end(env):
        env.reset(seed=0)
        for n in range(1, 100):
            *_, terminated, truncated, info = env.step("xyzzy")
            if terminated or truncated:
                env.close()
                return n, info["truncation_reason"]

    assert steps_to_the_end(gym.make("agentgym/TextCraft-v0", split="test")) == (30, "step_limit")
    assert steps_to_the_end(gym.make("agentgym/TextCraft-v0", split="test", max_steps=5)) == (5, "step_limit")
    with pytest.warns(UserWarning, match=r"TimeLimit\(30\)"):
        cut = gym.make("agentgym/TextCraft-v0", split="test", max_steps=40)
    assert steps_to_the_end(cut) == (30, "step_limit")  # gym.make's TimeLimit cuts it, as the warning says
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kept = gym.make("agentgym/TextCraft-v0", split="test", max_steps=40, max_episode_steps=40)
        ours = agentgym_envs.make("agentgym/TextCraft-v0", split="test", max_steps=40)
        direct = agentgym_envs.make_env("agentgym/TextCraft-v0", split="test", max_steps=40)  # no TimeLimit at all
    assert steps_to_the_end(kept) == steps_to_the_end(ours) == steps_to_the_end(direct) == (40, "step_limit")
