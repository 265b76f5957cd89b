"""TextCraft throughput: the Gymnasium environment against the bare game on the same expert commands.

There is no installable "native" TextCraft (ADaPT's and AgentGym's are repository code, not packages), so
the native column is this family's own game core: the same :class:`RecipeBook` and command execution
(``_start`` / ``_run``, seeded like ``reset(seed=...)``, and the win check that gives the reward) without
parsing, the ``info`` dict, Gymnasium's wrappers and bookkeeping.  The ratio is the cost of the environment
layer.  The third row asks for the expert's command and the valid commands on every step on both sides.

AgentGym's TextCraft environment (``agentenv_textcraft.TextCraftEnv``, the one AgentGym-RL trains on) is the
native API, where it is here: set ``AGENTGYM_TEXTCRAFT`` to AgentGym's ``agentenv-textcraft`` folder (a clone of
https://github.com/WooooDyy/AgentGym), or install that folder.  Two more rows then play the same goals and
expert commands there: whole episodes (each side's own reset to the goal, then the commands) and the commands
alone (both sides' environments reset beforehand, untimed).  Its game differs from the spec's on a few goals
(it can craft gold and iron ingots from nuggets, so it refuses ``get`` for them); those episodes are left out
of both sides, and the row's note says how many.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import gymnasium as gym
from gymnasium.utils import seeding

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.families.textcraft import TextCraftEnv
from benchmarks.throughput.common import Row, head_to_head

#: Where AgentGym's TextCraft is (its ``agentenv-textcraft`` folder), when it is not installed.
AGENTGYM_TEXTCRAFT = "AGENTGYM_TEXTCRAFT"


def _episodes(n: int) -> list[tuple[str, int, list[str]]]:
    """(goal, seed, expert commands) of ``n`` test goals."""
    env = TextCraftEnv(split="test", expert_actions=True)
    out = []
    for i, goal in enumerate(env.task_ids[:n]):
        _, info = env.reset(seed=i, options={"task": goal})
        actions = []
        while True:
            actions.append(info["expert_action"])
            _, _, term, trunc, info = env.step(actions[-1])
            if term or trunc:
                break
        out.append((goal, i, actions))
    return out


def rows(quick: bool) -> list[Row]:
    episodes = _episodes(20 if quick else 110)
    n_steps = sum(len(a) for _, _, a in episodes)
    ours_env = gym.make("agentgym/TextCraft-v0", split="test")
    core = TextCraftEnv(split="test")

    def native_start(goal: str, seed: int) -> None:
        core._np_random, _ = seeding.np_random(seed)  # what reset(seed=...) does: the same distractors and order
        core._start(goal)

    def ours() -> int:
        for goal, seed, actions in episodes:
            ours_env.reset(seed=seed, options={"task": goal})
            for a in actions:
                ours_env.step(a)
        return n_steps

    def native() -> int:
        for goal, seed, actions in episodes:
            native_start(goal, seed)
            for a in actions:
                core._run(a)
                _won = core.state.inventory[goal] > 0  # the reward and the end of the episode
        return n_steps

    def ours_resets() -> int:
        for goal, seed, _ in episodes:
            ours_env.reset(seed=seed, options={"task": goal})
        return len(episodes)

    def native_resets() -> int:
        for goal, seed, _ in episodes:
            native_start(goal, seed)
        return len(episodes)

    expert_env = gym.make("agentgym/TextCraft-v0", split="test", expert_actions=True, admissible_actions=True)

    def ours_with_expert() -> int:
        for goal, seed, actions in episodes:
            expert_env.reset(seed=seed, options={"task": goal})
            for a in actions:
                expert_env.step(a)
        return n_steps

    def native_with_expert() -> int:
        for goal, seed, actions in episodes:
            native_start(goal, seed)
            core.plan(), core._admissible()
            for a in actions:
                core._run(a)
                if core.state.inventory[goal] == 0:  # the environment asks nothing of a finished episode
                    core.plan(), core._admissible()
        return n_steps

    repeats = 3 if quick else 5
    note = f"{len(episodes)} test goals, {n_steps} expert steps, resets included; native = bare game core"
    core_rows = [
        Row.compared("textcraft", "expert commands", head_to_head(ours, native, repeats), note=note,
                     leaves_out="native: parsing, info dict, Gymnasium wrappers (that is the difference measured)"),
        Row.compared("textcraft", "reset", head_to_head(ours_resets, native_resets, repeats), "resets/s",
                     "recipe tree + distractors + shuffle, seeded on both sides",
                     leaves_out="native: the info dict and Gymnasium's wrappers"),
        Row.compared("textcraft", "expert commands, expert+admissible info",
                     head_to_head(ours_with_expert, native_with_expert, repeats), note=note,
                     leaves_out="native: parsing, info dict, wrappers; plan and valid commands on both sides"),
    ]
    return core_rows + _agentgym_rows(episodes, repeats)


def agentgym_textcraft() -> types.ModuleType | None:
    """AgentGym's ``agentenv_textcraft.environment`` module, or ``None`` where AgentGym's TextCraft is not here.

    Found at ``$AGENTGYM_TEXTCRAFT`` (AgentGym's ``agentenv-textcraft`` folder, or the package folder in it), else
    as an installed ``agentenv_textcraft``.  Its game modules are imported without the package's ``__init__``,
    which imports the package's FastAPI server as well.

    Example:
        >>> module = agentgym_textcraft()  # doctest: +SKIP
        >>> env = module.TextCraftEnv(module.CraftingTree(minecraft_dir=module.RECIPES_DIR), "", "")  # doctest: +SKIP
    """
    given = os.environ.get(AGENTGYM_TEXTCRAFT)
    if given:
        root = Path(given).expanduser()
        folder = next((d for d in (root / "agentenv_textcraft", root) if (d / "environment.py").is_file()), None)
        if folder is None:
            raise FileNotFoundError(f"${AGENTGYM_TEXTCRAFT}={given} holds no agentenv_textcraft/environment.py")
    else:
        spec = importlib.util.find_spec("agentenv_textcraft")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / "recipes").is_dir():
        raise FileNotFoundError(f"AgentGym's TextCraft at {folder} has no recipes/ folder")
    package = types.ModuleType("_agentgym_textcraft")
    package.__path__ = [str(folder)]
    sys.modules[package.__name__] = package
    module = importlib.import_module("_agentgym_textcraft.environment")
    module.CraftingTree = importlib.import_module("_agentgym_textcraft.crafting_tree").CraftingTree
    module.RECIPES_DIR = str(folder) + os.sep  # CraftingTree reads <dir>/recipes/
    return module


def _agentgym_rows(episodes: list[tuple[str, int, list[str]]], repeats: int) -> list[Row]:
    module = agentgym_textcraft()
    if module is None:
        print(f"[textcraft] AgentGym's TextCraft is not here (set ${AGENTGYM_TEXTCRAFT} to its agentenv-textcraft "
              "folder): rows against it left out", file=sys.stderr)
        return []
    tree = module.CraftingTree(minecraft_dir=module.RECIPES_DIR)
    # AgentGym's reset picks its goal by index into its goals sorted by depth.
    goal_order = [item for item, _ in sorted(tree.item_recipes_min_depth(1), key=lambda pair: pair[1])]
    index = {item: i for i, item in enumerate(goal_order)}

    def their_goal(goal: str) -> str:
        return "minecraft:" + goal.replace(" ", "_")

    def their_reset(env, goal: str, seed: int) -> None:
        env.reset(seed=seed, data_idx=index[their_goal(goal)])

    # The episodes both games play alike: every expert command succeeds there and only the last one wins.
    probe = module.TextCraftEnv(tree, "", "")
    same = []
    for goal, seed, actions in episodes:
        if their_goal(goal) not in index:
            continue
        their_reset(probe, goal, seed)
        if probe.goal != their_goal(goal):
            raise RuntimeError(f"AgentGym's reset picked {probe.goal}, not {their_goal(goal)}")
        for i, action in enumerate(actions):
            observation, _, terminated, _, _ = probe.step(action)
            if not observation.startswith(("Got ", "Crafted ", "Inventory")) or terminated != (i == len(actions) - 1):
                break
        else:
            same.append((goal, seed, actions))
    n_steps = sum(len(actions) for _, _, actions in same)
    ours_env = gym.make("agentgym/TextCraft-v0", split="test")
    theirs = module.TextCraftEnv(tree, "", "")

    def ours_episodes() -> int:
        for goal, seed, actions in same:
            ours_env.reset(seed=seed, options={"task": goal})
            for action in actions:
                ours_env.step(action)
        return len(same)

    def their_episodes() -> int:
        for goal, seed, actions in same:
            their_reset(theirs, goal, seed)
            for action in actions:
                theirs.step(action)
        return len(same)

    # One environment per episode, reset before each repetition, so that the second row times steps alone.
    ours_pool = [gym.make("agentgym/TextCraft-v0", split="test") for _ in same]
    their_pool = [module.TextCraftEnv(tree, "", "") for _ in same]

    def reset_ours_pool() -> None:
        for env, (goal, seed, _) in zip(ours_pool, same, strict=True):
            env.reset(seed=seed, options={"task": goal})

    def reset_their_pool() -> None:
        for env, (goal, seed, _) in zip(their_pool, same, strict=True):
            their_reset(env, goal, seed)

    def ours_steps() -> int:
        for env, (_, _, actions) in zip(ours_pool, same, strict=True):
            for action in actions:
                env.step(action)
        return n_steps

    def their_steps() -> int:
        for env, (_, _, actions) in zip(their_pool, same, strict=True):
            for action in actions:
                env.step(action)
        return n_steps

    left = len(episodes) - len(same)
    note = (f"{len(same)} test goals ({left} left out: AgentGym's game differs on them), {n_steps} expert steps; "
            "native = AgentGym's TextCraftEnv")
    return [
        Row.compared("textcraft", "episodes: reset to the goal + expert commands (AgentGym)",
                     head_to_head(ours_episodes, their_episodes, repeats), "episodes/s", note,
                     leaves_out="native: the info dict, parsing beyond its regexes, Gymnasium's wrappers"),
        Row.compared("textcraft", "expert commands alone (AgentGym)",
                     head_to_head(ours_steps, their_steps, repeats, prepare=(reset_ours_pool, reset_their_pool)),
                     note=note, leaves_out="resets on both sides (done before each repetition, untimed); native: "
                     "the info dict, Gymnasium's wrappers"),
    ]
