"""TextWorld: our environment against ``textworld.start`` doing the same steps, same games.

Both sides load the same cached games and send the same commands (the walkthrough padded
with harmless commands to a fixed length, so no episode ends early); both request the
same information from TextWorld (score, won, lost, and admissible commands in the
"with admissible" setting).
"""

from __future__ import annotations

import warnings

from benchmarks.throughput.common import Row, head_to_head

FILLER = ["look", "inventory", "examine room", "go north", "go south", "go east", "go west", "wait"]


def _commands(walkthrough: list[str], length: int) -> list[str]:
    # Everything but the winning last step, then filler: the episode never ends early.
    commands = list(walkthrough[:-1])
    i = 0
    while len(commands) < length:
        commands.append(FILLER[i % len(FILLER)])
        i += 1
    return commands


def rows(quick: bool = False) -> list[Row]:
    import textworld

    from agentgym_envs.families.textworld import TextWorldConfig, TextWorldEnv, game_path

    warnings.filterwarnings("ignore", message=".*is not fully supported.*")
    config = TextWorldConfig.parse("w2-o3-q4")
    seeds = list(range(10001, 10004 if quick else 10011))
    length = 30 if quick else 60
    paths = {s: game_path(config, s) for s in seeds}
    result = []
    for admissible in (False, True):
        ours = TextWorldEnv(split="test", tasks=seeds, max_steps=10_000, admissible_actions=admissible)
        infos = textworld.EnvInfos(
            score=True, max_score=True, won=True, lost=True, objective=True,
            admissible_commands=admissible, extras=["walkthrough"],
        )
        native = textworld.start(str(paths[seeds[0]]), request_infos=infos)
        plans = {}
        for s in seeds:
            native.load(str(paths[s]))
            plans[s] = _commands(native.reset()["extra.walkthrough"], length)

        def run_ours(ours=ours, plans=plans) -> int:
            n = 0
            for s in seeds:
                ours.reset(options={"task": s})
                for command in plans[s]:
                    ours.step(command)
                    n += 1
            return n

        def run_native(native=native, plans=plans) -> int:
            n = 0
            for s in seeds:
                native.load(str(paths[s]))
                native.reset()
                for command in plans[s]:
                    native.step(command)
                    n += 1
            return n

        pair = head_to_head(run_ours, run_native, repeats=3 if quick else 5)
        ours.close()
        native.close()
        setting = "w2-o3-q4, with admissible actions" if admissible else "w2-o3-q4, no admissible actions"
        both = "admissible commands on both sides" if admissible else "admissible commands on neither side"
        result.append(Row.compared("textworld", setting, pair,
                                   note=f"{len(seeds)} games x {length} steps, resets included; {both}",
                                   leaves_out="native: parsing, the info dict, Gymnasium's wrappers"))
    return result
