"""The TextWorld family on real generated games: generation, caching, the expert, on-demand infos."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import gymnasium as gym
import pytest

from agentgym_envs.families.textworld import CONFIGS, TextWorldConfig, TextWorldEnv, clean_feedback, game_path


def expert_episode(env: TextWorldEnv, task: int) -> dict:
    _, info = env.reset(options={"task": task})
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(env.expert_action())
        done = terminated or truncated
    # The interpreter's end menu offers RESTART/RESTORE/UNDO, which the environment refuses: never shown.
    assert "RESTART" not in obs and "UNDO" not in obs, obs
    return info


@pytest.mark.parametrize("config,tasks", [("w2-o3-q4", range(10001, 10011)), ("w4-o6-q8", [10001, 10002])])
def test_the_expert_wins_every_game_it_is_given(config: str, tasks) -> None:
    env = TextWorldEnv(config, split="test", expert_actions=True)
    for task in tasks:
        info = expert_episode(env, task)
        assert info["won"] and info["score"] == info["max_score"], (config, task, info)
        assert info["step"] <= CONFIGS[config].max_steps
    env.close()


def test_the_expert_recovers_after_the_agent_wanders_off() -> None:
    env = TextWorldEnv(split="test", tasks=[10004])  # no tracking: the expert starts from the walkthrough
    _, info = env.reset()
    first = env.expert_action()
    env.step("go north")
    env.step("inventory")
    # Off the walkthrough: the expert switches to TextWorld's planner by replaying the episode.
    plan_step = env.expert_action()
    assert plan_step
    info = {}
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(env.expert_action())
        done = terminated or truncated
    assert info["won"]
    assert first


def test_admissible_actions_on_demand_match_the_tracked_ones() -> None:
    lazy = TextWorldEnv(split="test", tasks=[10005])
    tracked = TextWorldEnv(split="test", tasks=[10005], admissible_actions=True)
    lazy.reset()
    _, info = tracked.reset()
    for action in ("look", info["admissible_actions"][0]):
        lazy.step(action)
        *_, info = tracked.step(action)
    assert lazy.admissible_actions() == info["admissible_actions"] != []
    lazy.close()
    tracked.close()


def _generate(args):
    cache, seed = args
    os.environ["AGENTGYM_CACHE"] = cache
    path = game_path(TextWorldConfig.parse("w2-o3-q4"), seed)
    return str(path), path.read_bytes()


def test_generation_is_cached_deterministic_and_safe_across_processes(tmp_path, monkeypatch) -> None:
    shared = tmp_path / "shared"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        (path_a, bytes_a), (path_b, bytes_b) = pool.map(_generate, [(str(shared), 10099), (str(shared), 10099)])
        # Another cache, another process: the same seed gives the same game.
        (_, bytes_c) = pool.apply(_generate, ((str(tmp_path / "other"), 10099),))
    assert path_a == path_b and bytes_a == bytes_b
    folder = shared / "textworld" / "w2-o3-q4"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["10099.json", "10099.z8"]
    game_a = json.loads((folder / "10099.json").read_text())
    game_c = json.loads((tmp_path / "other" / "textworld" / "w2-o3-q4" / "10099.json").read_text())
    assert game_a["metadata"]["walkthrough"] == game_c["metadata"]["walkthrough"] and bytes_c
    mtime = os.path.getmtime(path_a)
    monkeypatch.setenv("AGENTGYM_CACHE", str(shared))
    assert os.path.getmtime(game_path(TextWorldConfig.parse("w2-o3-q4"), 10099)) == mtime  # reused, not remade


def test_configurations_and_cleaning() -> None:
    assert set(CONFIGS) == {"w2-o3-q4", "w8-o3-q4", "w2-o12-q4", "w8-o12-q4", "w4-o6-q8"}
    assert CONFIGS["w2-o3-q4"].max_steps == 12 and CONFIGS["w4-o6-q8"].max_steps == 24
    with pytest.raises(ValueError, match="w2-o3-q4"):
        TextWorldConfig.parse("two rooms")
    assert clean_feedback(" $$$$ | $$\n\nHello.\n\n>" + " " * 30 + "-= Hall =-0/1") == "Hello."
    env = gym.make("agentgym/TextWorld-w2-o3-q4-v0", split="test", tasks=[10001])
    obs, _ = env.reset()
    assert "$$" not in obs and "-=" in obs and not obs.rstrip().endswith(">")
    env.close()


def test_interpreter_commands_are_refused_and_write_no_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the interpreter writes saves and transcripts into the working directory
    env = TextWorldEnv(split="test", tasks=[10001], max_steps=50)
    env.reset()
    for command in ("save", "Save", "script", "transcript on", "look then script", "look. save", "restart", "quit",
                    "\\help", "go east. open chest", "\U0001f600" * 50):
        obs, reward, terminated, truncated, info = env.step(command)
        assert info["action"] is None and info["parse_error"], command
        assert obs.startswith("Invalid action:") and reward == 0.0 and not terminated, command
    assert list(tmp_path.iterdir()) == []
    # A fresh episode cannot restore another one's state either: it must play the whole walkthrough.
    other = TextWorldEnv(split="test", tasks=[10001], max_steps=50)
    other.reset()
    *_, info = other.step("restore")
    assert info["action"] is None and info["score"] == 0
    *_, info = other.step("look")
    assert info["action"] == "look" and info["parse_error"] is None and info["step"] == 2
    env.close()
    other.close()


def _generate_forever(cache: str, seed: int) -> None:
    os.environ["AGENTGYM_CACHE"] = cache
    game_path(TextWorldConfig.parse("w2-o3-q4"), seed)


def test_a_generation_killed_half_way_leaves_no_temporary_folder(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "textworld" / "w2-o3-q4"
    ctx = multiprocessing.get_context("spawn")
    victim = ctx.Process(target=_generate_forever, args=(str(tmp_path), 10098))
    victim.start()
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(p.is_dir() for p in folder.iterdir())):  # its work folder exists
        assert victim.is_alive() and time.monotonic() < deadline, "the generation never started"
        time.sleep(0.05)
    victim.kill()
    victim.join()
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path))
    game_path(TextWorldConfig.parse("w2-o3-q4"), 10098)
    assert [p.name for p in folder.iterdir() if p.is_dir()] == []
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["10098.json", "10098.z8"]
