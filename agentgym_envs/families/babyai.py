"""BabyAI: the language-conditioned grid-world levels of ``minigrid``, played as text.

Description
-----------
Every BabyAI level that minigrid ships is registered as ``agentgym/BabyAI-<Level>-v0``
(e.g. ``agentgym/BabyAI-GoToRedBall-v0``, ``agentgym/BabyAI-BossLevel-v0``).  The
instruction is the level's mission, e.g. ``"go to the red ball"``.

Tasks and splits
----------------
A task is a level-generator seed: the same seed always builds the same grid and mission.
Test seeds 0-999, valid seeds 1000-1999, train seeds 100000-199999.

Actions
-------
``turn left``, ``turn right``, ``go forward``, ``pick up``, ``drop``, ``toggle`` (open a
door or a box) and ``done``; a few aliases (``left``, ``forward``, ``pickup``, ``open``)
are accepted.  Any other text costs a step and leaves the world unchanged;
``info["invalid_action"]`` is then true.

Observation
-----------
A description of the agent's 7x7 egocentric partial view: the object in front of it,
every visible object with its colour, state (doors: open / closed / locked) and position
relative to the agent ("2 steps forward and 1 step left"), the nearest wall ahead, left
and right, and what the agent carries.  The view itself (minigrid's ``obs["image"]``) is computed
by :func:`agentgym_envs.families.babyai_view.fast_gen_obs`, an exact and faster port of
minigrid's ``gen_obs``.

Rewards
-------
The score is the fraction of the mission's sub-instructions completed (``"go to X and
then pick up Y"`` has two), 1.0 on success; ``won`` is minigrid's success, ``lost`` its
failure (e.g. a wrong object was put down).  ``reward="sparse"`` pays 1 on success,
``reward="dense"`` the progress deltas.

Expert
------
minigrid's ``BabyAIBot``; created on the first request in an episode and then kept in
step with every executed action.

Termination
-----------
Terminated on success or failure; truncated at the level's own step limit (minigrid's
``max_steps`` for the task) unless ``max_steps`` is given.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/BabyAI-GoToRedBall-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                  # doctest: +SKIP
    >>> obs, r, term, trunc, info = env.step(info["expert_action"])    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Hashable
from typing import Any

from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "babyai",
    extra="babyai",
    requires=("minigrid",),
    description="BabyAI grid-world levels (minigrid) rendered as text.",
)

TRAIN_SEEDS = range(100_000, 200_000)
VALID_SEEDS = range(1_000, 2_000)
TEST_SEEDS = range(0, 1_000)

#: BabyAI levels shipped by minigrid 3.x, as ``level name -> minigrid id``.  Listed here (and
#: checked against minigrid's registry by the tests) so that ``import agentgym_envs`` need not
#: import minigrid.
LEVELS: dict[str, str] = {
    name: f"BabyAI-{name}-v1" if name == "GoToObjS6" else f"BabyAI-{name}-v0"
    for name in (
        "GoToRedBallGrey GoToRedBall GoToRedBallNoDists GoToObj GoToObjS4 GoToObjS6 GoToLocal GoToLocalS5N2 "
        "GoToLocalS6N2 GoToLocalS6N3 GoToLocalS6N4 GoToLocalS7N4 GoToLocalS7N5 GoToLocalS8N2 GoToLocalS8N3 "
        "GoToLocalS8N4 GoToLocalS8N5 GoToLocalS8N6 GoToLocalS8N7 GoTo GoToOpen GoToObjMaze GoToObjMazeOpen "
        "GoToObjMazeS4R2 GoToObjMazeS4 GoToObjMazeS5 GoToObjMazeS6 GoToObjMazeS7 GoToImpUnlock GoToSeq "
        "GoToSeqS5R2 GoToRedBlueBall GoToDoor GoToObjDoor Open OpenRedDoor OpenDoor OpenDoorDebug OpenDoorColor "
        "OpenDoorLoc OpenTwoDoors OpenRedBlueDoors OpenRedBlueDoorsDebug OpenDoorsOrderN2 OpenDoorsOrderN4 "
        "OpenDoorsOrderN2Debug OpenDoorsOrderN4Debug Pickup UnblockPickup PickupLoc PickupDist PickupDistDebug "
        "PickupAbove PutNextLocal PutNextLocalS5N3 PutNextLocalS6N4 PutNextS4N1 PutNextS5N2 PutNextS5N1 "
        "PutNextS6N3 PutNextS7N4 PutNextS5N2Carrying PutNextS6N3Carrying PutNextS7N4Carrying Unlock UnlockLocal "
        "UnlockLocalDist KeyInBox UnlockPickup UnlockPickupDist BlockedUnlockPickup UnlockToUnlock ActionObjDoor "
        "FindObjS5 FindObjS6 FindObjS7 KeyCorridor KeyCorridorS3R1 KeyCorridorS3R2 KeyCorridorS3R3 "
        "KeyCorridorS4R3 KeyCorridorS5R3 KeyCorridorS6R3 OneRoomS8 OneRoomS12 OneRoomS16 OneRoomS20 "
        "MoveTwoAcrossS5N2 MoveTwoAcrossS8N9 Synth SynthS5R2 SynthLoc SynthSeq MiniBossLevel BossLevel "
        "BossLevelNoUnlock"
    ).split()
}

#: Text commands in minigrid's action order (``Actions.left`` = 0, ..., ``Actions.done`` = 6).
ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done")
_ALIASES = {
    "left": 0, "turn left": 0, "rotate left": 0,
    "right": 1, "turn right": 1, "rotate right": 1,
    "forward": 2, "go forward": 2, "move forward": 2, "go straight": 2, "move": 2,
    "pick up": 3, "pickup": 3, "pick": 3, "take": 3, "pick it up": 3,
    "drop": 4, "put down": 4, "drop it": 4,
    "toggle": 5, "open": 5, "open door": 5, "open the door": 5, "open box": 5, "unlock": 5,
    "done": 6, "stop": 6,
}

# minigrid's encoding (minigrid.core.constants), inlined so rendering needs no lookups.
_OBJECTS = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")
_COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
_DOOR_STATES = ("open", "closed", "locked")
_OUT_OF_REACH = 1 << 30  # minigrid's max_steps while we play: our own limit ends episodes
_VIEW = 7  # BabyAI's agent_view_size; the agent sits at (3, 6) of the view, facing -y.


def normalize_command(text: str) -> int | None:
    """minigrid's action index of a text command, or ``None`` if it is not one.

    Example:
        >>> normalize_command("Turn LEFT."), normalize_command("go forward"), normalize_command("fly")
        (0, 2, None)
    """
    exact = _ALIASES.get(text)  # the usual case, a command as listed (normalising would give the same action)
    if exact is not None:
        return exact
    key = re.sub(r"[^a-z ]+", " ", text.lower())
    key = " ".join(w for w in key.split() if w not in ("the", "a", "an"))
    return _ALIASES.get(key)


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def _where(forward: int, right: int) -> str:
    parts = []
    if right:
        parts.append(_steps(abs(right), "right" if right > 0 else "left"))
    if forward:
        parts.append(_steps(forward, "forward"))
    return " and ".join(parts) if parts else "here"


def _name(kind: int, color: int, state: int) -> str:
    obj = _OBJECTS[kind]
    if obj == "door":
        return f"{_DOOR_STATES[state]} {_COLORS[color]} door"
    if obj in ("key", "ball", "box"):
        return f"{_COLORS[color]} {obj}"
    return obj


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


#: Descriptions already written, by view and carried object: an agent that turns, bumps into walls or
#: tries an action that does nothing sees the same view again, and describing one costs about a tenth of
#: minigrid's own step.  Cleared when full.
_DESCRIBED: dict[tuple[bytes, tuple[int, ...], str, tuple[str, str] | None], str] = {}
_DESCRIBED_MAX = 1 << 16


def describe_view(image: Any, carrying: Any = None) -> str:
    """Describe minigrid's encoded egocentric view (``obs["image"]``, shape 7x7x3) in words.

    Args:
        image: the ``(7, 7, 3)`` array of ``(object, colour, state)`` codes, indexed ``[x, y]``
            with the agent at ``(3, 6)`` looking towards ``y = 0``.
        carrying: the object the agent holds (a minigrid ``WorldObj``) or ``None``.

    Example:
        >>> import numpy as np
        >>> view = np.zeros((7, 7, 3), dtype=np.uint8); view[:, :, 0] = 1   # all empty floor
        >>> view[3, 4] = (6, 0, 0)                                            # a red ball ahead
        >>> print(describe_view(view))
        You see a red ball 2 steps forward.
        You carry nothing.
    """
    held = None if carrying is None else (str(carrying.type), str(carrying.color))
    key = (image.tobytes(), image.shape, image.dtype.str, held)
    text = _DESCRIBED.get(key)
    if text is None:
        if len(_DESCRIBED) >= _DESCRIBED_MAX:
            _DESCRIBED.clear()
        text = _DESCRIBED[key] = describe_view_uncached(image, carrying)
    return text


def describe_view_uncached(image: Any, carrying: Any = None) -> str:
    """:func:`describe_view` without its memory of views already described (for measuring the rendering).

    Example:
        >>> import numpy as np
        >>> view = np.zeros((7, 7, 3), dtype=np.uint8); view[:, :, 0] = 1
        >>> describe_view_uncached(view).splitlines()[-1]
        'You carry nothing.'
    """
    cells = image.tolist()  # one C-level conversion; indexing numpy per cell is ~10x slower
    lines = []
    front = cells[3][5]
    if front[0] not in (0, 1, 3):
        lines.append(f"In front of you is {_article(_name(*front))}.")
    seen: list[tuple[int, int, str]] = []
    for x in range(_VIEW):
        column = cells[x]
        for y in range(_VIEW):
            kind = column[y][0]
            if kind <= 3 or kind == 10 or (x == 3 and y == 6):  # unseen, empty, wall, floor, agent
                continue
            forward, right = 6 - y, x - 3
            seen.append((forward + abs(right), x, f"{_article(_name(*column[y]))} {_where(forward, right)}"))
    # Walls: only the nearest one straight ahead, to the left and to the right, as BabyAI-Text does.
    for label, ray in (("forward", [(3, y) for y in range(5, -1, -1)]),
                       ("left", [(x, 6) for x in range(2, -1, -1)]),
                       ("right", [(x, 6) for x in range(4, _VIEW)])):
        for dist, (x, y) in enumerate(ray, start=1):
            kind = cells[x][y][0]
            if kind == 2:
                seen.append((dist, x, f"a wall {_steps(dist, label)}"))
                break
            if kind == 0:
                break
    seen.sort()
    if seen:
        items = [text for _, _, text in seen]
        lines.append("You see " + (items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]) + ".")
    else:
        lines.append("You see nothing but empty floor.")
    if carrying is None:
        lines.append("You carry nothing.")
    else:
        lines.append(f"You carry {_article(_name(_OBJECTS.index(carrying.type), _COLORS.index(carrying.color), 0))}.")
    return "\n".join(lines)


def _leaf_count(instr: Any) -> int:
    if hasattr(instr, "instr_a"):
        return _leaf_count(instr.instr_a) + _leaf_count(instr.instr_b)
    return 1


def mission_progress(instr: Any) -> int:
    """How many leaf instructions of a BabyAI mission (a verifier tree) are completed."""
    if not hasattr(instr, "instr_a"):
        return 0
    done = 0
    for sub, status in ((instr.instr_a, instr.a_done), (instr.instr_b, instr.b_done)):
        done += _leaf_count(sub) if status == "success" else mission_progress(sub)
    return done


class BabyAIEnv(TextEnv):
    """A BabyAI level as text; one task per level-generator seed.

    Args:
        level: a key of :data:`LEVELS`, e.g. ``"GoToRedBall"``.
        max_steps: the step limit; ``None`` (default) uses the level's own limit for each task.
        **kwargs: see :class:`~agentgym_envs.core.TextEnv`.  ``seed_range`` selects seeds,
            e.g. ``split="train", seed_range=(100000, 100999)``.

    Example:
        >>> env = BabyAIEnv("GoToRedBall", split="test")            # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": 7})                # doctest: +SKIP
        >>> obs, reward, terminated, truncated, info = env.step("turn left")  # doctest: +SKIP
    """

    family = "babyai"
    default_max_steps = 64

    @classmethod
    def registered_step_limit(cls, **kwargs: Any) -> int | None:
        # Without max_steps each task keeps its level's own limit, which varies by task (GoToSeq: 1152
        # or 2304; BossLevel: up to 2880): a fixed TimeLimit would cut some tasks short, so none is declared.
        return int(kwargs["max_steps"]) if kwargs.get("max_steps") is not None else None

    def __init__(self, level: str = "GoToRedBall", max_steps: int | None = None, **kwargs: Any):
        if level not in LEVELS:
            raise ValueError(f"unknown BabyAI level {level!r}; choose one of {', '.join(LEVELS)}")
        self.level = level
        self._level_limit = max_steps is None
        self._sim: Any = None
        self._bot: Any = None
        self._suggestion: int | None = None
        self._leaves = 1
        self._native_limit = self.default_max_steps
        super().__init__(max_steps=max_steps, **kwargs)

    # ---- splits -------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        return TaskSplits(train=TRAIN_SEEDS, valid=VALID_SEEDS, test=TEST_SEEDS)

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [s for s in available if lo <= int(s) <= hi]  # type: ignore[call-overload]

    # ---- simulator ----------------------------------------------------------------
    def _make_sim(self) -> Any:
        with contextlib.redirect_stderr(io.StringIO()):  # minigrid's import may print a notice
            import minigrid  # noqa: F401 - registers the BabyAI ids
        import gymnasium as gym

        from agentgym_envs.families.babyai_view import install_fast_view

        # The raw level, without gym.make's checker wrappers: they cost time on every step.
        sim = gym.make(LEVELS[self.level], disable_env_checker=True).unwrapped
        # minigrid's gen_obs is most of each step; ours computes the identical view several times faster.
        install_fast_view(sim)
        return sim

    def _start(self, task_id: Hashable) -> TaskStart:
        if self._sim is None:
            self._sim = self._make_sim()
        # Level generation prints "Sampling rejected: ..." while it rejection-samples.
        with contextlib.redirect_stdout(io.StringIO()):
            obs, _ = self._sim.reset(seed=int(task_id))  # type: ignore[call-overload]
        # Levels either recompute max_steps on every reset or keep the constructor's value, which
        # we overwrite below; remember that one.
        if self._sim.max_steps != _OUT_OF_REACH:
            self._native_limit = int(self._sim.max_steps)
        if self._level_limit:
            self.max_steps = self._native_limit
        # Our step limit governs; minigrid's own truncation would end episodes behind our back.
        self._sim.max_steps = _OUT_OF_REACH
        self._bot = None
        self._suggestion = None
        self._leaves = _leaf_count(self._sim.instrs)
        mission = str(self._sim.mission)
        observation = f"Your mission: {mission}.\n{describe_view(obs['image'], self._sim.carrying)}"
        return TaskStart(observation=observation, instruction=mission, max_score=1.0, score=0.0)

    def _execute(self, command: str) -> Transition:
        action = normalize_command(command)
        if action is None:
            return Transition(
                observation=f"'{command[:80]}' is not an action here. Valid actions: {', '.join(ACTIONS)}.\n"
                + describe_view(self._sim.gen_obs()["image"], self._sim.carrying),
                score=self._score,
                extra={"invalid_action": True},
            )
        obs, reward, terminated, _, _ = self._sim.step(action)
        # minigrid pays a positive reward exactly on success (its max_steps is out of reach, see _start).
        won = bool(terminated and reward > 0)
        lost = bool(terminated and not won)
        score = 1.0 if won else mission_progress(self._sim.instrs) / self._leaves
        if self._bot is not None and not (won or lost):
            self._advance_bot(action)
        return Transition(
            observation=describe_view(obs["image"], self._sim.carrying),
            score=score,
            won=won,
            lost=lost,
            extra={"invalid_action": False},
        )

    def _admissible(self) -> list[str]:
        return list(ACTIONS)

    # ---- expert -------------------------------------------------------------------
    def _advance_bot(self, action: int | None) -> None:
        try:
            self._suggestion = int(self._bot.replan(action))
        except Exception:  # noqa: BLE001 - the bot asserts on states it does not handle; start afresh
            self._bot, self._suggestion = None, None

    def _expert(self) -> str | None:
        if self._done or self._sim is None:
            return None
        if self._bot is None:
            from minigrid.utils.baby_ai_bot import BabyAIBot

            self._bot = BabyAIBot(self._sim)
            self._advance_bot(None)
        return None if self._suggestion is None else ACTIONS[self._suggestion]

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None
        super().close()


def registrations() -> list[Registration]:
    return [
        Registration(
            name=f"BabyAI-{level}",
            family=FAMILY,
            entry_point="agentgym_envs.families.babyai:BabyAIEnv",
            kwargs={"level": level},
            description=f"minigrid {native} as text",
        )
        for level, native in LEVELS.items()
    ]
