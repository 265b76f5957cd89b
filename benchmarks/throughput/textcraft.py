"""TextCraft throughput: the Gymnasium environment against the bare game on the same expert commands.

There is no installable "native" TextCraft (ADaPT's and AgentGym's are repository code, not packages), so
the native column is this family's own game core: the same :class:`RecipeBook` and command execution
(``_start`` / ``_run``, seeded like ``reset(seed=...)``, and the win check that gives the reward) without
parsing, the ``info`` dict, Gymnasium's wrappers and bookkeeping.  The ratio is the cost of the environment
layer.  The third row asks for the expert's command and the valid commands on every step on both sides.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.utils import seeding

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.families.textcraft import TextCraftEnv
from benchmarks.throughput.common import Row, head_to_head


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
    return [
        Row.compared("textcraft", "expert commands", head_to_head(ours, native, repeats), note=note,
                     leaves_out="native: parsing, info dict, Gymnasium wrappers (that is the difference measured)"),
        Row.compared("textcraft", "reset", head_to_head(ours_resets, native_resets, repeats), "resets/s",
                     "recipe tree + distractors + shuffle, seeded on both sides",
                     leaves_out="native: the info dict and Gymnasium's wrappers"),
        Row.compared("textcraft", "expert commands, expert+admissible info",
                     head_to_head(ours_with_expert, native_with_expert, repeats), note=note,
                     leaves_out="native: parsing, info dict, wrappers; plan and valid commands on both sides"),
    ]
