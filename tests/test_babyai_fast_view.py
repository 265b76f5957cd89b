"""BabyAI's fast egocentric view: identical to minigrid's own ``gen_obs`` on real levels, states and edge cases."""

from __future__ import annotations

import contextlib
import copy
import io
import pickle
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest

from agentgym_envs.families.babyai import ACTIONS, LEVELS, describe_view
from agentgym_envs.families.babyai_view import FastView, fast_gen_obs, install_fast_view

minigrid = pytest.importorskip("minigrid")
from minigrid.minigrid_env import MiniGridEnv  # noqa: E402
from minigrid.utils.baby_ai_bot import BabyAIBot  # noqa: E402

# Forward-heavy random play with plenty of pick up / drop / toggle, so that doors get opened and
# objects carried, dropped and seen from every side.
_ACTION_WEIGHTS = np.array([0.15, 0.15, 0.35, 0.12, 0.1, 0.13])


def _native(level: str) -> MiniGridEnv:
    return gym.make(LEVELS[level], disable_env_checker=True).unwrapped


def _reset(sim: MiniGridEnv, seed: int) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # rejection sampling prints
        sim.reset(seed=seed)
    sim.max_steps = 1 << 30


def _assert_same_view(sim: MiniGridEnv, seen: Counter[str]) -> None:
    ours, theirs = fast_gen_obs(sim), MiniGridEnv.gen_obs(sim)
    assert set(ours) == set(theirs) == {"image", "direction", "mission"}
    assert ours["image"].dtype == theirs["image"].dtype and ours["image"].shape == theirs["image"].shape
    assert np.array_equal(ours["image"], theirs["image"]), (sim.agent_pos, sim.agent_dir)
    assert ours["direction"] == theirs["direction"] and ours["mission"] == theirs["mission"]
    image = theirs["image"]
    doors = image[..., 0] == 4
    seen["open door"] += int((doors & (image[..., 2] == 0)).any())
    seen["locked door"] += int((doors & (image[..., 2] == 2)).any())
    seen["box"] += int((image[..., 0] == 7).any())
    seen["carrying"] += int(sim.carrying is not None)
    seen["unseen"] += int((image[..., 0] == 0).any())
    view = sim.agent_view_size
    top_x, top_y, bot_x, bot_y = sim.get_view_exts()
    seen["border"] += int(top_x < 0 or top_y < 0 or bot_x > sim.grid.width or bot_y > sim.grid.height)
    seen[f"view {view}"] += 1


def _random_play(sim: MiniGridEnv, seed: int, steps: int, seen: Counter[str]) -> None:
    rng = np.random.default_rng(seed)
    _reset(sim, seed)
    _assert_same_view(sim, seen)
    for action in rng.choice(6, size=steps, p=_ACTION_WEIGHTS):
        _, _, terminated, _, _ = sim.step(int(action))
        _assert_same_view(sim, seen)
        if terminated:
            _reset(sim, seed + 1000)
            _assert_same_view(sim, seen)


def _expert_play(sim: MiniGridEnv, seed: int, seen: Counter[str]) -> None:
    """The bot's solution: it fetches keys, unlocks doors, opens boxes and carries objects."""
    _reset(sim, seed)
    _assert_same_view(sim, seen)
    bot = BabyAIBot(sim)
    action = None
    for _ in range(300):
        try:
            action = bot.replan(action)
        except AssertionError:  # the bot gives up on some states (a key hidden in a box); play stops there
            return
        _, _, terminated, _, _ = sim.step(int(action))
        _assert_same_view(sim, seen)
        if terminated:
            return


@pytest.mark.parametrize(
    ("level", "must_see"),
    [
        ("GoToLocal", {"border", "box"}),
        ("GoToRedBall", {"border"}),
        ("PickupLoc", {"border"}),
        ("Open", {"border", "open door"}),
        ("UnlockLocal", {"open door", "locked door"}),
        ("KeyInBox", {"locked door", "box"}),
        ("BlockedUnlockPickup", {"border", "open door", "locked door"}),
        ("BossLevel", {"border", "open door", "locked door", "box"}),
    ],
)
def test_fast_view_equals_minigrid_view_after_every_step(level, must_see):
    sim = _native(level)
    seen: Counter[str] = Counter()
    for seed in (0, 1):
        _random_play(sim, seed, 250, seen)
        _expert_play(sim, seed + 7, seen)
    # The comparisons covered the states where a port could go wrong: windows that leave the grid,
    # occluded cells, doors in every state, a carried object.
    assert {name for name, count in seen.items() if count} >= must_see | {"carrying", "unseen"}
    sim.close()


def test_fast_view_other_view_sizes_and_see_through_walls():
    sim = _native("BossLevel")
    seen: Counter[str] = Counter()
    for view in (3, 5, 9):
        sim.agent_view_size = view
        _random_play(sim, view, 120, seen)
    sim.agent_view_size = 7
    sim.see_through_walls = True
    _random_play(sim, 3, 120, seen)
    assert seen["view 3"] and seen["view 5"] and seen["view 9"]
    sim.close()


def test_our_env_uses_the_fast_view_and_its_text_is_unchanged():
    env = gym.make("agentgym/BabyAI-UnlockLocal-v0", split="valid")
    obs, info = env.reset(options={"task": 1003})
    sim = env.unwrapped._sim
    assert isinstance(sim.gen_obs, FastView) and sim.gen_obs.env is sim
    reference = describe_view(MiniGridEnv.gen_obs(sim)["image"], sim.carrying)
    assert obs == f"Your mission: {info['instruction']}.\n{reference}"
    for action in np.random.default_rng(5).choice(6, size=150, p=_ACTION_WEIGHTS):
        obs, _, terminated, truncated, info = env.step(ACTIONS[int(action)])
        assert obs == describe_view(MiniGridEnv.gen_obs(sim)["image"], sim.carrying)
        if terminated or truncated:
            break
    env.close()


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda sim: pickle.loads(pickle.dumps(sim))], ids=["deepcopy", "pickle"]
)
def test_a_copy_of_the_level_has_its_own_fast_view(clone):
    sim = _native("GoToLocal")
    assert install_fast_view(sim)
    _reset(sim, 4)
    twin = clone(sim)
    assert isinstance(twin.gen_obs, FastView) and twin.gen_obs.env is twin
    twin.step(1)  # turn right: only the copy's view changes
    assert np.array_equal(twin.gen_obs()["image"], MiniGridEnv.gen_obs(twin)["image"])
    assert np.array_equal(sim.gen_obs()["image"], MiniGridEnv.gen_obs(sim)["image"])
    assert twin.gen_obs()["direction"] != sim.gen_obs()["direction"]


def test_levels_with_their_own_view_code_keep_it():
    level_class = type(_native("GoToLocal"))

    class OwnView(level_class):  # a level that computes its observation its own way
        def gen_obs(self):
            return {"image": np.zeros((7, 7, 3), dtype=np.uint8), "direction": 0, "mission": ""}

    sim = OwnView()
    assert install_fast_view(sim) is False
    assert "gen_obs" not in vars(sim)
