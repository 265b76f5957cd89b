"""TextWorld-Express: eight fast generated text games (Jansen & Côté, 2022) on their JVM simulator.

Description
-----------
Games: ``cookingworld``, ``twc``, ``coin``, ``mapreader``, ``arithmetic``, ``sorting``,
``simonsays`` and ``peckingorder``, registered as ``agentgym/TWX-<game>-v0``.  ``params``
sets the game's generation properties, e.g. ``"numLocations=5,includeDoors=1"``.

This is the family for quick RL iteration: a step is one call into the JVM
(``stepJSON``) and one JSON parse.  The stock wrapper makes a second call per step (the
task description); valid actions come with every step's answer, so
``admissible_actions`` costs nothing extra here.

Like ScienceWorld, each environment owns one JVM (heap capped by ``max_memory_mb``),
stopped by ``close()``.

Tasks and splits
----------------
A task is a generator seed; the splits are the simulator's own folds (train seeds 0-999,
dev 10000-10999, test 20000-20999), and the fold is also passed to the generator, which
uses it to pick disjoint object sets (e.g. in ``twc``).

Actions
-------
The game's commands (``move east``, ``open door to north``, ``take coin``, ...), through
the ``act`` tool; the valid ones are ``info["admissible_actions"]``.

Observation
-----------
The task description and the first room at reset, then the game's reply to each command.

Rewards
-------
Scores run 0-1 (``max_score`` 1); ``won`` is the game's ``tasksuccess``, ``lost`` its
``taskfailure`` (e.g. eating the wrong ingredient).

Expert
------
The generator's gold path (generated at reset with ``expert_actions=True``, else on the
first :meth:`expert_action` call, by regenerating the game and replaying the episode); it
is followed while the episode has, afterwards ``info["expert_action"]`` is ``None``.  The
gold agent runs with a generator seeded by the game's seed, so a game's path is always the same.

Termination
-----------
Terminated on success or failure; truncated at the game's step limit (:data:`GAMES`: 100
for ``cookingworld``, 50 otherwise), or when the JVM dies mid-episode
(``info["truncation_reason"] == "crash"``; the next reset starts a new one).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/TWX-coin-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                 # doctest: +SKIP
    >>> obs, r, term, trunc, info = env.step(info["expert_action"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

from agentgym_envs.core import TaskSplits, TaskStart, Transition
from agentgym_envs.errors import GenerationError, UnknownTaskError
from agentgym_envs.families._jvm import JavaProcess, JVMConfig, JVMTextEnv, Simulator
from agentgym_envs.registry import Family, Registration

try:  # the stock wrapper's faster JSON parser, when present
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    _loads = json.loads

FAMILY = Family(
    "textworld_express",
    extra="textworld_express",
    requires=("textworld_express", "py4j"),
    description="TextWorld-Express games (JVM simulator): fast text games for quick RL iteration.",
)

#: Game -> default step limit (cookingworld's gold paths reach ~50 steps with default settings).
GAMES: dict[str, int] = {
    "cookingworld": 100,
    "twc": 50,
    "coin": 50,
    "mapreader": 50,
    "arithmetic": 50,
    "sorting": 50,
    "simonsays": 50,
    "peckingorder": 50,
}

#: Game -> the simulator's gold agent (``textworldexpress.goldagent.<name>``), run here with a seeded RNG.
GOLD_AGENTS: dict[str, str] = {
    "cookingworld": "CookingWorldGoldAgent",
    "twc": "TWCGoldAgent",
    "coin": "CoinGoldAgent",
    "mapreader": "MapReaderGoldAgent",
    "arithmetic": "ArithmeticGoldAgent",
    "sorting": "SortingGoldAgent",
    "simonsays": "SimonSaysGoldAgent",
    "peckingorder": "PeckingOrderGoldAgent",
}

#: How many gold-path searches a game gets (the simulator's own generator also tries 50 times).
GOLD_ATTEMPTS = 50

#: Our split name -> the simulator's fold name.
FOLDS = {"train": "train", "valid": "dev", "test": "test"}
#: Commands that only report: the expert steps over them (and over invalid commands) on its gold path.
READ_ONLY_COMMANDS = frozenset({"look around", "inventory", "task"})

#: The simulator's package and the Java class Python talks to.
SIMULATOR = Simulator("textworld_express", "textworldexpress.runtime.PythonInterface")


def seed_folds(config: JVMConfig | None = None) -> dict[str, dict[str, list[int]]]:
    """Every game's train / valid / test seeds as the simulator defines them (cached after the first call).

    Example:
        >>> seed_folds()["coin"]["test"][:2]  # doctest: +SKIP
        [20000, 20001]
    """

    def load(jvm: JavaProcess, server: Any, game: str) -> None:
        message = jvm.call(server.load, game, "")
        if message:
            raise GenerationError(f"TextWorld-Express cannot load {game!r}: {message}")

    return SIMULATOR.splits(
        "folds",
        config or JVMConfig(max_memory_mb=512),
        names=lambda jvm, server: GAMES,
        load=load,
        getter="getSeeds",
    )


class TextWorldExpressEnv(JVMTextEnv):
    """One TextWorld-Express game; a task is a generator seed from the split's fold.

    Args:
        game: one of :data:`GAMES`.
        params: generation properties, e.g. ``"numLocations=5,includeDoors=1"``
            (unknown properties raise ``ValueError`` at the first reset).
        max_memory_mb: the JVM heap cap.
        jvm: further JVM settings (overrides ``max_memory_mb`` if given).
        **kwargs: see :class:`~agentgym_envs.core.TextEnv`; ``seed_range=(lo, hi)``
            keeps the seeds ``lo`` to ``hi``, e.g. ``(20000, 20099)`` on the test split.

    Example:
        >>> env = TextWorldExpressEnv("coin", split="test", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": 20000})                      # doctest: +SKIP
        >>> env.close()                                                          # doctest: +SKIP
    """

    family = "textworld_express"
    simulator = SIMULATOR

    @classmethod
    def registered_step_limit(cls, **kwargs: Any) -> int | None:
        if kwargs.get("max_steps") is not None:
            return int(kwargs["max_steps"])
        return GAMES.get(kwargs.get("game", "coin"), cls.default_max_steps)

    def __init__(
        self,
        game: str = "coin",
        params: str = "",
        max_memory_mb: int = 512,
        jvm: JVMConfig | None = None,
        **kwargs: Any,
    ):
        if game not in GAMES:
            raise UnknownTaskError(f"unknown TextWorld-Express game {game!r}; choose one of {', '.join(GAMES)}")
        self.game = game
        self.params = params
        kwargs.setdefault("max_steps", GAMES[game])
        self._game_loaded = False
        self._valid: list[str] = []
        super().__init__(jvm or JVMConfig(max_memory_mb=max_memory_mb), **kwargs)

    # ---- splits -------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        folds = seed_folds(self.jvm_config)[self.game]
        return TaskSplits(train=folds["train"], valid=folds["valid"], test=folds["test"])

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [s for s in available if lo <= int(s) <= hi]  # type: ignore[call-overload]

    # ---- simulator ----------------------------------------------------------------
    def _forget_loaded(self) -> None:
        self._game_loaded = False

    def _generate(self, seed: int, gold: bool) -> dict[str, Any]:
        if not self._game_loaded:
            message = self._call("load", self.game, self.params)
            if message:
                raise ValueError(f"TextWorld-Express cannot load {self.game!r} with params {self.params!r}: {message}")
            self._game_loaded = True
        fold = FOLDS[self.split]
        # The gold search first: making another game afterwards would disturb the one being played
        # (the simulator's games share object state; sorting's "take" then fails).
        self._gold = self._seeded_gold_path(seed, fold) if gold else None
        answer = _loads(self._call("generateNewGameJSON", int(seed), fold, False))
        self._valid = list(answer.get("validActions") or [])
        return answer

    def _seeded_gold_path(self, seed: int, fold: str) -> list[str]:
        """The gold path of game ``seed``, the same on every call.

        The simulator's generator searches for it with an unseeded ``scala.util.Random`` (coin's
        explores at random), so the same game got different paths run to run; here its gold agent
        searches a fresh copy of the game with a ``Random`` seeded by the game's seed.  Empty when no
        search finds one (the expert then has no action, as with the simulator's generator).
        """
        assert self._jvm is not None
        jvm, generator = self._jvm.gateway.jvm, self._call("gameGenerator")
        agent = getattr(jvm.textworldexpress.goldagent, GOLD_AGENTS[self.game])

        def search(attempt: int) -> list[str] | None:
            found = agent(generator.mkGame(seed, fold)).mkGoldPath(
                jvm.scala.util.Random(seed * GOLD_ATTEMPTS + attempt)
            )
            return [str(a) for a in found._2()] if found._1() else None

        for attempt in range(GOLD_ATTEMPTS):
            path = self._jvm.call(search, attempt)
            if path is not None:
                return path
        return []  # as the simulator's own generator gives up: no expert for this game

    def _open_episode(self, task_id: Hashable) -> TaskStart:
        answer = self._generate(int(task_id), gold=self.want_expert)  # type: ignore[call-overload]
        description = str(self._call("getTaskDescription")).strip()
        return TaskStart(
            observation=f"{description}\n\n{answer['observation'].strip()}",
            instruction=description,
            max_score=1.0,
            score=float(answer.get("score", 0.0)),
        )

    def _execute(self, command: str) -> Transition:
        # A command outside the valid ones changes nothing ("Unknown action"); the expert steps over it.
        no_op = command not in self._valid or command in READ_ONLY_COMMANDS
        answer = _loads(self._call("stepJSON", command))
        self._valid = answer.get("validActions") or []
        self._moves.append((command, no_op))
        return Transition(
            observation=answer["observation"],
            score=float(answer["score"]),
            won=bool(answer["tasksuccess"]),
            lost=bool(answer["taskfailure"]),
        )

    def _admissible(self) -> list[str]:
        return list(self._valid)

    def _regenerate_with_gold(self) -> None:
        """Regenerate this episode's game with its gold path and replay the episode's commands."""
        assert self.task_id is not None
        self._generate(int(self.task_id), gold=True)  # type: ignore[call-overload]
        for command in self._history:
            self._valid = _loads(self._call("stepJSON", command)).get("validActions") or []


def registrations() -> list[Registration]:
    return [
        Registration(
            name=f"TWX-{game}",
            family=FAMILY,
            entry_point="agentgym_envs.families.textworld_express:TextWorldExpressEnv",
            kwargs={"game": game},
            description=f"TextWorld-Express {game}; {limit} steps",
        )
        for game, limit in GAMES.items()
    ]
