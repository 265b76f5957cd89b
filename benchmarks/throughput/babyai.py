"""BabyAI throughput: our text environment against minigrid's own API on the same actions.

Both sides play the same random action sequence from the same level seeds, in the same
process, interleaved (see :func:`benchmarks.throughput.common.interleaved`).  Native is
``gym.make("BabyAI-<Level>-v0")`` stepped with integer actions; ours is
``gym.make("agentgym/BabyAI-<Level>-v0")`` stepped with text commands.  Both run minigrid's level,
step and level generation; the observation differs in how it is computed: ours computes the same
egocentric view (an identical ``obs["image"]``) with its own exact implementation
(:mod:`agentgym_envs.families.babyai_view`, compared with minigrid's ``gen_obs`` after every step by
``tests/test_babyai_fast_view.py``) instead of minigrid's ``gen_obs``, which is most of a native step.
Ours adds parsing, text rendering (with its cache of views already seen) and the info dict.  A third row
times the text rendering alone, uncached.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from benchmarks.throughput.common import Row, benchmark_cache, head_to_head, measured

LEVELS = ("GoToLocal", "BossLevel")


def _workloads(level: str, steps: int, seed: int = 0):
    import gymnasium as gym

    import agentgym_envs  # noqa: F401
    from agentgym_envs.families.babyai import _DESCRIBED, ACTIONS
    from agentgym_envs.families.babyai import LEVELS as NATIVE_IDS

    with contextlib.redirect_stderr(io.StringIO()):
        import minigrid  # noqa: F401
    actions = np.random.default_rng(seed).integers(0, 6, steps).tolist()
    tasks = list(range(1000, 1000 + 50))  # valid seeds; resets are part of the work on both sides

    ours_env = gym.make(f"agentgym/BabyAI-{level}-v0", split="valid", max_steps=10**6)
    native_env = gym.make(NATIVE_IDS[level])
    # Our limit is out of reach above; give minigrid's the same so that neither side truncates.
    commands = [ACTIONS[a] for a in actions]

    def ours() -> int:
        _DESCRIBED.clear()  # every repetition sees its views for the first time, as a fresh rollout would
        t = 0
        ours_env.reset(options={"task": tasks[t]})
        for command in commands:
            _, _, terminated, truncated, _ = ours_env.step(command)
            if terminated or truncated:
                t += 1
                ours_env.reset(options={"task": tasks[t % len(tasks)]})
        return len(commands)

    def native() -> int:
        t = 0
        with contextlib.redirect_stdout(io.StringIO()):
            native_env.reset(seed=tasks[t])
            native_env.unwrapped.max_steps = 1 << 30
            for action in actions:
                _, _, terminated, truncated, _ = native_env.step(action)
                if terminated or truncated:
                    t += 1
                    native_env.reset(seed=tasks[t % len(tasks)])
                    native_env.unwrapped.max_steps = 1 << 30
        return len(actions)

    return ours, native, ours_env, native_env


def _render_work(level: str, n: int):
    import gymnasium as gym

    from agentgym_envs.families.babyai import LEVELS as NATIVE_IDS
    from agentgym_envs.families.babyai import describe_view_uncached

    env = gym.make(NATIVE_IDS[level]).unwrapped
    with contextlib.redirect_stdout(io.StringIO()):
        images = []
        for seed in range(20):
            obs, _ = env.reset(seed=seed)
            images.append(obs["image"])

    def work() -> int:
        for i in range(n):
            describe_view_uncached(images[i % len(images)], None)
        return n

    return work


def rows(quick: bool) -> list[Row]:
    with benchmark_cache():
        return _rows(quick)


def _rows(quick: bool) -> list[Row]:
    """Steps/s of ours vs minigrid on two levels, and text renders/s."""
    steps, repeats = (500, 3) if quick else (3000, 5)
    out = []
    for level in LEVELS:
        ours, native, ours_env, native_env = _workloads(level, steps)
        pair = head_to_head(ours, native, repeats)  # the warm-up covers imports and the first level generation
        ours_env.close()
        native_env.close()
        out.append(Row.compared("babyai", f"{level}, random actions, resets included", pair,
                                note=f"{steps} steps a repetition, 50 level seeds",
                                leaves_out="native: text rendering of the view, parsing, info dict; "
                                "ours computes the same view with its own exact (tested) gen_obs, not minigrid's"))
    render = measured(_render_work("BossLevel", 2000 if quick else 20000), repeats)
    out.append(Row.compared("babyai", "text rendering only (describe_view_uncached)", render, "renders/s",
                            "7x7 view -> text, 20 BossLevel views", leaves_out="the cache of views already described"))
    return out
