"""TextWorld: games generated with TextWorld's own generator.

Description
-----------
Configurations follow the Practitioner's Guide (arXiv 2510.01132): ``wX-oY-qZ`` is
X rooms, Y objects and a Z-step quest, as ``tw-make custom --world-size X
--nb-objects Y --quest-length Z``.  Games are generated on first use and cached under
``<cache>/textworld/<config>/`` (see :mod:`agentgym_envs.cache`), so later runs and
other processes reuse them.  Ids: ``agentgym/TextWorld-<config>-v0`` for the configurations
in :data:`CONFIGS`.

Tasks and splits
----------------
A task is a generator seed.  Train seeds 30001-35000 (the guide's), validation seeds
20001-20100 and a held-out test set of seeds 10001-10100.

Actions
-------
One TextWorld command per step (``go north``, ``take key``, ``open chest``, ...), through
the ``act`` tool in any action format.

Observation
-----------
The game's text: the objective and room description at reset, then the game's reply to
each command.

Rewards
-------
The game's score (TextWorld awards points for completing quests); ``reward="dense"`` pays
the score deltas over the maximum score, ``"sparse"`` 1 on ``won``.

Expert
------
TextWorld's ``policy_commands`` (a winning plan from the current state) when state
tracking is on, else the game's walkthrough while the episode has followed it.

Termination
-----------
Terminated when TextWorld reports the game won or lost; truncated at the configuration's
step limit (three steps per quest step: 12 for ``q4``, 24 for ``q8``).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/TextWorld-w2-o3-q4-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                      # doctest: +SKIP
    >>> obs, r, term, trunc, info = env.step(info["expert_action"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym_envs.cache import build_once, cache_dir, file_lock
from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.errors import EnvironmentCrashedError, ExpertUnavailableError
from agentgym_envs.parsing import interpreter_refusal
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "textworld",
    extra="textworld",
    requires=("textworld",),
    description="Generated TextWorld games (Practitioner's Guide configurations).",
)

TRAIN_SEEDS = range(30001, 35001)
VALID_SEEDS = range(20001, 20101)
TEST_SEEDS = range(10001, 10101)


@dataclass(frozen=True)
class TextWorldConfig:
    """A game configuration: rooms, objects, quest length and the step limit.

    Example:
        >>> TextWorldConfig.parse("w2-o3-q4")
        TextWorldConfig(rooms=2, objects=3, quest_length=4, max_steps=12)
    """

    rooms: int
    objects: int
    quest_length: int
    max_steps: int

    @property
    def name(self) -> str:
        return f"w{self.rooms}-o{self.objects}-q{self.quest_length}"

    @classmethod
    def parse(cls, name: str, max_steps: int | None = None) -> TextWorldConfig:
        m = re.fullmatch(r"w(\d+)-o(\d+)-q(\d+)", name)
        if not m:
            raise ValueError(f"a TextWorld configuration looks like 'w2-o3-q4', not {name!r}")
        rooms, objects, quest = map(int, m.groups())
        # The guide's limits are 12 steps for q4 and 24 for q8: three steps per quest step.
        return cls(rooms, objects, quest, max_steps if max_steps is not None else 3 * quest)


#: The Practitioner's Guide configurations.
CONFIGS = {c.name: c for c in map(TextWorldConfig.parse, ("w2-o3-q4", "w8-o3-q4", "w2-o12-q4", "w8-o12-q4", "w4-o6-q8"))}


def game_path(config: TextWorldConfig, seed: int) -> Path:
    """Generate (once) and return the compiled game file of ``config`` and ``seed``.

    Safe when several processes ask for the same game at once: one generates it under a
    file lock, in a temporary folder moved into place; the others wait and reuse it.
    """
    folder = cache_dir("textworld", config.name)

    def generate(tmp_game: Path) -> None:
        import textworld

        options = textworld.GameOptions()
        options.seeds = int(seed)
        options.nb_rooms = config.rooms
        options.nb_objects = config.objects
        options.quest_length = config.quest_length
        options.quest_breadth = 1
        _remove_stale_work_folders(folder)
        # A fixed name per seed (not mkdtemp): a generation killed half-way leaves a folder that the next
        # generation, holding the same lock, finds and removes.
        work = folder / f".{seed}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            options.path = str(work / f"{seed}.z8")
            options.file_ext = ".z8"
            with contextlib.redirect_stdout(io.StringIO()):
                made, _ = textworld.make(options)
            made_path = Path(made)
            # The .json holds the game's logic (needed for state tracking); move it first so
            # that the .z8, whose presence marks a finished entry, is never alone.
            shutil.move(made_path.with_suffix(".json"), folder / f"{seed}.json")
            os.replace(made_path, tmp_game)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return build_once(folder / f"{seed}.z8", generate, lock=folder / f".{seed}.lock")


def _remove_stale_work_folders(folder: Path) -> None:
    """Remove work folders of generations that were killed (their lock is free again)."""
    for stale in folder.glob(".*.tmp"):
        seed = stale.name[1:-4]
        with contextlib.suppress(OSError), file_lock(folder / f".{seed}.lock", blocking=False) as held:
            if held:
                shutil.rmtree(stale, ignore_errors=True)


_BANNER_CHARS = set(" $|\\/_<>")
# Jericho appends the prompt and the status bar ("-= Room =-0/1") to every reply.
_PROMPT_LINE = re.compile(r"^>(\s{8,}.*)?\s*$")
# The interpreter's end-of-game menu offers commands the environment refuses (the episode is over).
_END_MENU_LINE = re.compile(r"^\s*Would you like to RESTART\b")


def clean_feedback(text: str) -> str:
    """Drop TextWorld's ASCII-art banner, the ``>`` prompt, the status bar and the end-of-game menu from game text.

    Example:
        >>> clean_feedback("You see a door.\\n\\n>" + " " * 20 + "-= Hall =-0/1")
        'You see a door.'
        >>> clean_feedback("*** The End ***\\n\\nWould you like to RESTART, RESTORE a saved game, QUIT or UNDO?")
        '*** The End ***'
    """
    lines = [
        ln for ln in text.splitlines()
        if not (ln.strip() and set(ln) <= _BANNER_CHARS) and not _PROMPT_LINE.match(ln)
        and not _END_MENU_LINE.match(ln)
    ]
    return "\n".join(lines).strip()


@contextlib.contextmanager
def _quiet_jericho():
    # Jericho warns that TextWorld's games are "not fully supported": it cannot detect their
    # score itself, which TextWorld does instead.  The warning says nothing to our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not fully supported.*")
        yield


class TextWorldEnv(TextEnv):
    """A generated TextWorld game per task (seed).

    Args:
        config: a configuration name such as ``"w2-o3-q4"``.
        **kwargs: see :class:`~agentgym_envs.core.TextEnv`.  ``seed_range`` selects
            generator seeds, e.g. ``seed_range=(30001, 30100)``.

    Example:
        >>> env = TextWorldEnv("w2-o3-q4", split="test", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": 10001})                     # doctest: +SKIP
    """

    family = "textworld"

    @classmethod
    def registered_step_limit(cls, **kwargs: Any) -> int | None:
        if kwargs.get("max_steps") is not None:
            return int(kwargs["max_steps"])
        name = kwargs.get("config", "w2-o3-q4")
        return (CONFIGS.get(name) or TextWorldConfig.parse(name)).max_steps

    def __init__(self, config: str = "w2-o3-q4", **kwargs: Any):
        self.config = CONFIGS.get(config) or TextWorldConfig.parse(config)
        kwargs.setdefault("max_steps", self.config.max_steps)
        self._games: dict[bool, Any] = {}  # tracking? -> textworld environment
        self._game: Any = None
        self._state: Any = None
        self._walkthrough: list[str] = []
        super().__init__(**kwargs)

    # ---- splits -------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        return TaskSplits(train=TRAIN_SEEDS, valid=VALID_SEEDS, test=TEST_SEEDS)

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [s for s in available if lo <= int(s) <= hi]  # type: ignore[call-overload]

    # ---- simulator ----------------------------------------------------------------
    def _open(self, path: Path, admissible: bool, plan: bool) -> Any:
        import textworld

        key = (admissible, plan)
        game = self._games.get(key)
        if game is None:
            infos = textworld.EnvInfos(
                score=True,
                max_score=True,
                won=True,
                lost=True,
                objective=True,
                admissible_commands=admissible,
                policy_commands=plan,
                extras=["walkthrough"],
            )
            with _quiet_jericho():
                game = self._games[key] = textworld.start(str(path), request_infos=infos)
        else:
            with _quiet_jericho():
                game.load(str(path))
        return game

    def _start(self, task_id: Hashable) -> TaskStart:
        path = game_path(self.config, int(task_id))  # type: ignore[call-overload]
        admissible = self.want_admissible or self.project_to_admissible
        self._game = self._open(path, admissible=admissible, plan=self.want_expert)
        self._path = path
        self._state = self._game.reset()
        self._walkthrough = list(self._state.get("extra.walkthrough") or [])
        return TaskStart(
            observation=clean_feedback(self._state.feedback),
            instruction=self._state.objective.strip(),
            max_score=float(self._state.max_score or 1),
            score=float(self._state.score or 0),
        )

    def _refuse(self, command: str) -> str | None:
        # The story files read ZSCII: non-ASCII text is cut mid-character in the reply (UnicodeDecodeError).
        odd = sorted({c for c in command if not (" " <= c <= "~")})
        if odd:
            return f"TextWorld understands plain ASCII English commands; {command[:40]!r} contains {''.join(odd[:5])!r}"
        return interpreter_refusal(command)

    def _execute(self, command: str) -> Transition:
        try:
            self._state, _, _ = self._game.step(command)
        except UnicodeError as exc:
            # Not reachable from model text (see _refuse); if the interpreter's reply is still garbled,
            # its state is unknown: end the episode and start a fresh interpreter at the next reset.
            self._games = {k: g for k, g in self._games.items() if g is not self._game}
            with contextlib.suppress(Exception):
                self._game.close()
            raise EnvironmentCrashedError(f"TextWorld's interpreter returned undecodable text: {exc}") from exc
        return Transition(
            observation=clean_feedback(self._state.feedback),
            score=float(self._state.score or 0),
            won=bool(self._state.won),
            lost=bool(self._state.lost),
        )

    def _ensure_tracked(self, key: str) -> None:
        """Make sure TextWorld tracks ``key`` (``admissible_commands`` or ``policy_commands``).

        Tracking costs time on every step, so it is on only for what was requested at
        construction; asking for more on demand switches this episode to a game that tracks
        it, by replaying the episode's commands once.
        """
        if key in self._state:
            return
        admissible = "admissible_commands" in self._state or key == "admissible_commands"
        plan = "policy_commands" in self._state or key == "policy_commands"
        game = self._open(self._path, admissible=admissible, plan=plan)
        state = game.reset()
        for command in self._history:
            state, _, _ = game.step(command)
        self._game, self._state = game, state

    def _admissible(self) -> list[str]:
        self._ensure_tracked("admissible_commands")
        return list(self._state.admissible_commands or [])

    def _expert(self) -> str | None:
        if "policy_commands" not in self._state:
            n = len(self._history)
            if self._history == self._walkthrough[:n] and n < len(self._walkthrough):
                return self._walkthrough[n]
        self._ensure_tracked("policy_commands")
        plan = self._state.policy_commands
        if not plan:
            raise ExpertUnavailableError("TextWorld has no winning plan from this state (the game may be lost)")
        return plan[0]

    def close(self) -> None:
        for game in self._games.values():
            game.close()
        self._games.clear()
        super().close()


def registrations() -> list[Registration]:
    return [
        Registration(
            name=f"TextWorld-{name}",
            family=FAMILY,
            entry_point="agentgym_envs.families.textworld:TextWorldEnv",
            kwargs={"config": name},
            description=f"{c.rooms} rooms, {c.objects} objects, {c.quest_length}-step quest; {c.max_steps} steps",
        )
        for name, c in CONFIGS.items()
    ]
