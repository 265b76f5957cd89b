"""TextCraft throughput: the Gymnasium environment against the bare game on the same expert commands.

There is no installable "native" TextCraft (ADaPT's and AgentGym's are repository code, not packages), so
the native column is this family's own game core: the same :class:`RecipeBook` and command execution
(``_start`` / ``_run``) without parsing, the ``info`` dict, wrappers and bookkeeping.  The ratio is the
cost of the environment layer.
"""

from __future__ import annotations

import gymnasium as gym

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.families.textcraft import TextCraftEnv
from benchmarks.throughput.common import Row, interleaved


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
    core.reset(seed=0)  # gives the core an RNG for _start

    def ours() -> int:
        for goal, seed, actions in episodes:
            ours_env.reset(seed=seed, options={"task": goal})
            for a in actions:
                ours_env.step(a)
        return n_steps

    def native() -> int:
        for goal, _, actions in episodes:
            core._start(goal)
            for a in actions:
                core._run(a)
        return n_steps

    def ours_resets() -> int:
        for goal, seed, _ in episodes:
            ours_env.reset(seed=seed, options={"task": goal})
        return len(episodes)

    def native_resets() -> int:
        for goal, _, _ in episodes:
            core._start(goal)
        return len(episodes)

    expert_env = gym.make("agentgym/TextCraft-v0", split="test", expert_actions=True, admissible_actions=True)

    def ours_with_expert() -> int:
        for goal, seed, actions in episodes:
            expert_env.reset(seed=seed, options={"task": goal})
            for a in actions:
                expert_env.step(a)
        return n_steps

    repeats = 3 if quick else 5
    a, b = interleaved(ours, native, repeats)
    ra, rb = interleaved(ours_resets, native_resets, repeats)
    c, _ = interleaved(ours_with_expert, native, repeats)
    note = f"{len(episodes)} test goals, {n_steps} expert steps; native = bare game core (no native package)"
    return [
        Row("textcraft", "expert commands", a, b, "steps/s", note),
        Row("textcraft", "reset", ra, rb, "resets/s", "recipe tree + distractors + shuffle"),
        Row("textcraft", "expert commands, expert+admissible info", c, b, "steps/s", "info computed every step"),
    ]
