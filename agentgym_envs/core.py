"""The environment contract shared by every agentgym family.

A family subclasses :class:`TextEnv` and implements five small hooks
(``_task_splits``, ``_start``, ``_execute``, and optionally ``_admissible`` and
``_expert``).  The base class does everything else the same way for all
families: task selection and seeding, parsing model text into actions, the
step limit, the ``info`` schema, and turning crashes of an external simulator
into truncated episodes.

The ``info`` schema (every key is present after every ``reset`` and ``step``):

==========================  ===========================================================
key                         meaning
==========================  ===========================================================
``instruction``             the task, in words (also at the top of the first observation)
``task_id``                 the task (game seed, game file, goal, ...) being played
``split``                   the split the task came from
``family``                  the environment family
``admissible_actions``      list of valid commands, or ``None`` unless requested with
                            ``admissible_actions=True`` (often the costliest part of a step)
``expert_action``           the expert's next command, or ``None`` unless requested with
                            ``expert_actions=True``
``score`` / ``max_score``   the family's score so far and its maximum (``max_score`` is 1
                            for families that only know win/lose)
``won`` / ``lost``          the task was completed / failed
``action``                  the command actually executed (after parsing and projection),
                            ``None`` if nothing was executed
``raw_action``              the text the agent sent
``parse_error``             why the text could not be turned into an action, else ``None``
``step``                    number of ``step`` calls in this episode
``truncation_reason``       why the episode was truncated, one of :data:`TRUNCATION_REASONS`
                            (``"step_limit"``, ``"time_limit"``, ``"crash"``,
                            ``"site_unavailable"``), else ``None``
``error``                   description of a crash of the simulator, else ``None``
==========================  ===========================================================

Optional capabilities are protocols: :class:`SupportsSnapshot` (save and reload an episode,
for AEPO's branching rollouts).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/TextWorld-w2-o3-q4-v0")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                       # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step("look")  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import copy
import sys
from collections.abc import Container, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType, ModuleType
from typing import Any, ClassVar, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory
from gymnasium.wrappers import TimeLimit

from agentgym_envs.errors import (
    EnvironmentCrashedError,
    SplitLeakError,
    UnknownSplitError,
    UnknownTaskError,
)
from agentgym_envs.parsing import ACT_TOOL, ActionParser, ParsedAction, ToolCall, ToolSpec, closest_action

INFO_KEYS = (
    "instruction",
    "task_id",
    "split",
    "family",
    "admissible_actions",
    "expert_action",
    "score",
    "max_score",
    "won",
    "lost",
    "action",
    "raw_action",
    "parse_error",
    "step",
    "truncation_reason",
    "error",
)

SPLITS = ("train", "valid", "test")

#: Every value ``info["truncation_reason"]`` takes when ``truncated`` is true:
#: ``"step_limit"`` (``max_steps`` reached, or a Gymnasium ``TimeLimit`` around the environment), ``"time_limit"``
#: (a web episode's wall-clock limit, ``WebLimits.episode_time_limit_s``), ``"crash"`` (the simulator died;
#: ``info["error"]`` says why) and ``"site_unavailable"`` (a web site the task needs does not answer, see
#: docs/webarena.md).
TRUNCATION_REASONS = ("step_limit", "time_limit", "crash", "site_unavailable")


class TextSpace(gym.spaces.Text):
    """A :class:`gymnasium.spaces.Text` that holds any Unicode string up to ``max_length``.

    Gymnasium's ``Text`` only admits an alphanumeric charset by default; game
    observations and model actions contain punctuation, newlines and Unicode.

    Example:
        >>> TextSpace(100).contains("You see a door.\\n> ")
        True
    """

    def __init__(self, max_length: int, min_length: int = 0, seed: int | None = None):
        charset = "".join(chr(c) for c in range(32, 127)) + "\n\t"
        super().__init__(max_length=max_length, min_length=min_length, charset=charset, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace({self.min_length}, {self.max_length})"


# ---- shared memory for gymnasium's AsyncVectorEnv -----------------------------------------------
# Gymnasium stores a `Text` observation as one int32 index per character of the space's charset and
# reads the shared buffer only once, when the vector env is built, into immutable strings: every later
# observation is lost (and characters outside the charset cannot be written at all).  A TextSpace
# slot instead holds the UTF-8 bytes behind an 8-byte length, and the batch that is read back is a
# live view that decodes the current bytes on access.
_LENGTH_BYTES = 8


def _slot_bytes(space: TextSpace) -> int:
    # UTF-8 needs at most 4 bytes per character (3 for a lone surrogate written with "surrogatepass").
    return _LENGTH_BYTES + 4 * space.max_length


class SharedTexts(Sequence[str]):
    """The strings an :class:`~gymnasium.vector.AsyncVectorEnv` workers wrote to shared memory.

    What ``read_from_shared_memory`` returns for a :class:`TextSpace`: a read-only sequence that
    decodes the current content of each slot when indexed, so it follows every ``reset`` and
    ``step`` like gymnasium's numpy views do for arrays.  ``copy.deepcopy`` (what the vector env
    does with ``copy=True``, the default) and ``tuple(...)`` give plain tuples of ``str``, the same
    type as :class:`~gymnasium.vector.SyncVectorEnv` returns.

    Example:
        >>> import multiprocessing as mp
        >>> space = TextSpace(10)
        >>> buffer = create_shared_memory(space, n=2, ctx=mp)
        >>> batch = read_from_shared_memory(space, buffer, n=2)
        >>> write_to_shared_memory(space, 1, "héllo", buffer)
        >>> tuple(batch)
        ('', 'héllo')
    """

    def __init__(self, space: TextSpace, shared_memory: Any, n: int):
        self._bytes = np.frombuffer(shared_memory.get_obj(), dtype=np.uint8).reshape(n, _slot_bytes(space))

    def __len__(self) -> int:
        return len(self._bytes)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        slot = self._bytes[index]
        size = int(slot[:_LENGTH_BYTES].view(np.int64)[0])
        return slot[_LENGTH_BYTES : _LENGTH_BYTES + size].tobytes().decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list, SharedTexts)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable content

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return repr(tuple(self))


@create_shared_memory.register(TextSpace)
def _create_text_shared_memory(space: TextSpace, n: int = 1, ctx: ModuleType | Any = None) -> Any:
    import multiprocessing

    return (ctx or multiprocessing).Array("B", n * _slot_bytes(space))


@read_from_shared_memory.register(TextSpace)
def _read_text_shared_memory(space: TextSpace, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(space, shared_memory, n)


@write_to_shared_memory.register(TextSpace)
def _write_text_shared_memory(space: TextSpace, index: int, value: str, shared_memory: Any) -> None:
    data = np.frombuffer(value.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    size = _slot_bytes(space)
    if len(data) > size - _LENGTH_BYTES:
        raise ValueError(f"a text of {len(value)} characters does not fit {space!r}")
    slot = np.frombuffer(shared_memory.get_obj(), dtype=np.uint8)[index * size : (index + 1) * size]
    slot[_LENGTH_BYTES : _LENGTH_BYTES + len(data)] = data
    slot[:_LENGTH_BYTES] = np.array([len(data)], dtype=np.int64).view(np.uint8)


@dataclass(frozen=True)
class TaskSplits:
    """The disjoint train / valid / test task lists of one family configuration.

    Example:
        >>> s = TaskSplits(train=[1, 2], valid=[3], test=[4])
        >>> s.assert_disjoint()
        >>> s.get("test")
        [4]
    """

    train: Sequence[Hashable]
    valid: Sequence[Hashable]
    test: Sequence[Hashable]

    def get(self, split: str) -> Sequence[Hashable]:
        if split not in SPLITS:
            raise UnknownSplitError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def assert_disjoint(self) -> None:
        """Raise :class:`SplitLeakError` if any task is in two splits."""
        sets = {name: set(self.get(name)) for name in SPLITS}
        for a, b in (("train", "test"), ("train", "valid"), ("valid", "test")):
            shared = sets[a] & sets[b]
            if shared:
                example = sorted(map(str, shared))[:3]
                raise SplitLeakError(f"{len(shared)} task(s) are in both {a} and {b}, e.g. {example}")


@dataclass
class TaskStart:
    """What a family's ``_start`` returns: the first observation and the task."""

    observation: str
    instruction: str
    max_score: float = 1.0
    score: float = 0.0


@dataclass
class Transition:
    """What a family's ``_execute`` returns for one executed command."""

    observation: str
    score: float
    won: bool = False
    lost: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class TextEnv(gym.Env[str, str], abc.ABC):
    """Base class of every agentgym environment: text in, text out, Gymnasium 1.x semantics.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        seed_range: ``(first, last)`` inclusive: restrict the split to tasks whose
            index (or, for generated families, generator seed) lies in the range.
        tasks: an explicit list of task ids from the split (overrides ``seed_range``).
        max_steps: step limit; reaching it truncates the episode.
        action_format: how model text is parsed, see :mod:`agentgym_envs.parsing`.
        admissible_actions: compute ``info["admissible_actions"]`` on every step.
        expert_actions: compute ``info["expert_action"]`` on every step.
        project_to_admissible: execute the admissible action closest to the model's text.
        max_action_chars: longer action texts are rejected as malformed.

    Subclasses set ``family`` and implement the hooks.  ``reset(options={"task": id})``
    plays a specific task.

    Example:
        >>> class Echo(TextEnv):                     # a complete, if trivial, family
        ...     family = "echo"
        ...     def _task_splits(self): return TaskSplits([0], [1], [2])
        ...     def _start(self, task): return TaskStart("Say hi.", "Say hi.")
        ...     def _execute(self, cmd): return Transition(cmd, float(cmd == "hi"), won=cmd == "hi")
        >>> env = Echo()
        >>> obs, info = env.reset(seed=0)
        >>> env.step("hi")[1:3]
        (1.0, True)
    """

    # Text has no frame rate, but gymnasium's env checker warns without a positive render_fps;
    # 4 is what gymnasium's own text games (FrozenLake, Taxi) declare.
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}
    family: ClassVar[str] = "text"
    tools: ClassVar[tuple[ToolSpec, ...]] = (ACT_TOOL,)
    default_max_steps: ClassVar[int] = 50
    max_observation_chars: ClassVar[int] = 1_000_000

    @classmethod
    def registered_step_limit(cls, **kwargs: Any) -> int | None:
        """The step limit of an environment built with these constructor keywords, or ``None`` if it varies by task.

        This is what the registry gives Gymnasium as the id's ``max_episode_steps`` (so ``gym.make``
        adds a ``TimeLimit`` equal to the environment's own limit, and the environment, stepping first,
        sets ``truncation_reason="step_limit"``).  Families whose limit depends on the id override it.

        Example:
            >>> TextEnv.registered_step_limit(), TextEnv.registered_step_limit(max_steps=8)
            (50, 8)
        """
        return int(kwargs["max_steps"]) if kwargs.get("max_steps") is not None else cls.default_max_steps

    def __init__(
        self,
        split: str = "train",
        seed_range: tuple[int, int] | None = None,
        tasks: Sequence[Hashable] | None = None,
        max_steps: int | None = None,
        action_format: str = "plain",
        admissible_actions: bool = False,
        expert_actions: bool = False,
        project_to_admissible: bool = False,
        max_action_chars: int = 4000,
        render_mode: str | None = None,
    ):
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, not {render_mode!r}")
        self.render_mode = render_mode
        self.split = split
        self.max_steps = int(max_steps if max_steps is not None else self.default_max_steps)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.parser = ActionParser(action_format, self.tools, max_chars=max_action_chars)
        self.want_admissible = admissible_actions
        self.want_expert = expert_actions
        self.project_to_admissible = project_to_admissible
        self.observation_space = TextSpace(self.max_observation_chars)
        self.action_space = TextSpace(max_action_chars)

        splits = self._task_splits()
        splits.assert_disjoint()
        split_tasks = splits.get(split)
        available = list(split_tasks)
        if tasks is not None:
            known = set(available)
            unknown = [t for t in tasks if t not in known]
            if unknown:
                raise UnknownTaskError(f"tasks not in the {split!r} split: {unknown[:5]}")
            available = list(tasks)
        elif seed_range is not None:
            available = self._select_range(available, seed_range)
        if not available:
            raise UnknownTaskError(f"no tasks left in split {split!r} with seed_range={seed_range}")
        self.task_ids: list[Hashable] = available
        # Built once: reset checks membership on every call (a range answers it without a set of its own).
        whole_range = isinstance(split_tasks, range) and len(available) == len(split_tasks)
        self._known_tasks: Container[Hashable] = split_tasks if whole_range else frozenset(available)
        self.task_id: Hashable | None = None
        self._instruction = ""
        self._score = 0.0
        self._max_score = 1.0
        self._steps = 0
        self._done = True
        self._history: list[str] = []
        self._last_observation = ""

    # ---- hooks for families -------------------------------------------------------
    @abc.abstractmethod
    def _task_splits(self) -> TaskSplits:
        """The family's disjoint task splits for this configuration."""

    @abc.abstractmethod
    def _start(self, task_id: Hashable) -> TaskStart:
        """Start ``task_id``; seeding within the task comes from ``self.np_random``."""

    @abc.abstractmethod
    def _execute(self, command: str) -> Transition:
        """Execute one command in the simulator.  May raise :class:`EnvironmentCrashedError`."""

    def _admissible(self) -> list[str]:
        """Valid commands in the current state (families without the notion return ``[]``)."""
        return []

    def _expert(self) -> str | None:
        """The expert's next command, or ``None`` if the family has no expert."""
        return None

    def _refuse(self, command: str) -> str | None:
        """Why this family will not execute ``command`` (e.g. an interpreter's ``save``), else ``None``.

        Called on every decoded, sanitised command before it reaches the simulator; a refused command
        is an invalid action (explanatory observation, no reward, the step counts, nothing executed).
        """
        return None

    def _execute_call(self, call: ToolCall) -> Transition:
        """Execute a parsed tool call; multi-tool families (web) override this."""
        return self._execute(self.parser.command_text(call))

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [t for i, t in enumerate(available) if lo <= i <= hi]

    # ---- public API ----------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return self._instruction

    def instructions_for_agent(self) -> str:
        """The task instruction plus how to format actions (what a model should be told)."""
        return f"{self._instruction}\n\n{self.parser.instructions()}"

    def admissible_actions(self) -> list[str]:
        """The valid commands now (computed on demand)."""
        return list(self._admissible())

    def expert_action(self) -> str | None:
        """The expert's next command now (computed on demand)."""
        return self._expert()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        if "task" in options:
            task = options["task"]
            if task not in self._known_tasks:
                raise UnknownTaskError(f"task {task!r} is not among this environment's {self.split!r} tasks")
        else:
            task = self.task_ids[int(self.np_random.integers(len(self.task_ids)))]
        self.task_id = task
        start = self._start(task)
        self._instruction = start.instruction
        self._score = float(start.score)
        self._max_score = float(start.max_score)
        self._steps = 0
        self._done = False
        self._history = []
        self._last_observation = start.observation
        info = self._info(action=None, raw_action=None, parse_error=None)
        return start.observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise gym.error.ResetNeeded("the episode is over: call reset() before step()")
        self._steps += 1
        parsed = self.parser.parse(action)
        raw = parsed.raw
        if not parsed.ok:
            return self._rejected(parsed)
        call = parsed.call
        assert call is not None
        if self.project_to_admissible:
            projected = closest_action(self.parser.command_text(call), self._admissible())
            if projected is not None:
                call = self.parser.to_call(projected)
        command = parsed.command if call is parsed.call else None
        if command is None:  # projected, or a parser that does not fill it in
            command = self.parser.command_text(call)
        refusal = self._refuse(command)
        if refusal is not None:
            return self._rejected(ParsedAction(raw=raw, error=refusal, thought=parsed.thought), format_help=False)
        try:
            if type(self)._execute_call is TextEnv._execute_call:  # the default: the command is already written
                transition = self._execute(command)
            else:
                transition = self._execute_call(call)
        except EnvironmentCrashedError as exc:
            self._done = True
            return crash_outcome(self._info(action=command, raw_action=raw, parse_error=None, lazy=False), str(exc))
        reward = transition.score - self._score
        self._score = transition.score
        self._history.append(command)
        self._last_observation = transition.observation
        terminated = bool(transition.won or transition.lost)
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        info = self._info(action=command, raw_action=raw, parse_error=None, lazy=not self._done)
        info["won"], info["lost"] = bool(transition.won), bool(transition.lost)
        info.update(transition.extra)
        if truncated or (not terminated and wrapping_time_limit_ends_step(self)):
            info["truncation_reason"] = "step_limit"
        return transition.observation, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        return render_text(self.render_mode, self._last_observation)

    # ---- helpers -----------------------------------------------------------------
    def _rejected(
        self, parsed: ParsedAction, format_help: bool = True
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        truncated = self._steps >= self.max_steps
        self._done = truncated
        info = self._info(action=None, raw_action=parsed.raw, parse_error=parsed.error, lazy=not truncated)
        if truncated or wrapping_time_limit_ends_step(self):
            info["truncation_reason"] = "step_limit"
        obs = f"Invalid action: {parsed.error}. Nothing happened."
        if format_help:  # a malformed reply gets the format again; a refused command was well formed
            obs += f"\n{self.parser.instructions()}"
        return obs, 0.0, False, truncated, info

    def _info(self, action: str | None, raw_action: str | None, parse_error: str | None, lazy: bool = True) -> dict[str, Any]:
        return {
            "instruction": self._instruction,
            "task_id": self.task_id,
            "split": self.split,
            "family": self.family,
            "admissible_actions": self.admissible_actions() if (self.want_admissible and lazy) else None,
            "expert_action": self.expert_action() if (self.want_expert and lazy) else None,
            "score": self._score,
            "max_score": self._max_score,
            "won": False,
            "lost": False,
            "action": action,
            "raw_action": raw_action,
            "parse_error": parse_error,
            "step": self._steps,
            "truncation_reason": None,
            "error": None,
        }


def wrapping_time_limit_ends_step(env: gym.Env) -> bool:
    """Whether a Gymnasium ``TimeLimit`` around ``env`` truncates the step ``env`` is taking now.

    ``TimeLimit`` (``gym.make``'s, or one a user adds) sets ``truncated`` without telling the environment,
    whose ``info`` would then say ``truncation_reason=None``; so the environment looks at the wrappers
    whose ``step`` is calling it (a few frames up) for a ``TimeLimit`` at its last step (``gym.make``'s
    and a user's may both be there).

    Example:
        >>> from gymnasium.wrappers import TimeLimit
        >>> env = TimeLimit(gym.make("agentgym/TextCraft-v0", split="test"), 1)  # doctest: +SKIP
        >>> env.reset(seed=0); env.step("look")[4]["truncation_reason"]       # doctest: +SKIP
        'step_limit'
    """
    frame = sys._getframe(1)
    for _ in range(_TIME_LIMIT_SEARCH_FRAMES):
        frame = frame.f_back
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name != "step" or "self" not in code.co_varnames:
            continue
        # Reading f_locals copies the frame's locals: each step method's code is looked at once, and only
        # the steps of TimeLimit (or of its subclasses) are read again.
        if _STEP_OF_TIME_LIMIT.get(code) is False:
            continue
        caller = frame.f_locals.get("self")
        is_limit = _STEP_OF_TIME_LIMIT[code] = isinstance(caller, TimeLimit)
        if not is_limit:
            continue
        elapsed = caller._elapsed_steps  # incremented after the inner step returns
        # The limit first: walking down to the unwrapped environment costs more, and is rarely needed.
        if elapsed is not None and elapsed + 1 >= caller._max_episode_steps and caller.unwrapped is env:
            return True
    return False


# Deep enough for gym.make's stack (checker, order, limit) under a user's wrappers; beyond it nothing is found.
_TIME_LIMIT_SEARCH_FRAMES = 24
#: Whether a ``step`` method's code belongs to a TimeLimit (filled as frames are first seen).
_STEP_OF_TIME_LIMIT: dict[CodeType, bool] = {}


def render_text(render_mode: str | None, text: str) -> str | None:
    """A text environment's ``render()``: nothing without a mode, ``text`` printed for ``"human"``, else returned.

    Example:
        >>> render_text("ansi", "You are in a kitchen.")
        'You are in a kitchen.'
    """
    if render_mode is None:
        return None
    if render_mode == "human":
        print(text)
        return None
    return text


def crash_observation(error: str) -> str:
    """The observation of a step or reset that the simulator (or its process, or its connection) did not survive."""
    return f"The environment stopped working: {error}"


def crash_info(last_info: Mapping[str, Any] | None, raw_action: str | None, error: str, reason: str = "crash") -> dict:
    """The ``info`` of a step that never happened because the environment was lost: the last ``info`` with the loss
    recorded (nothing executed, no admissible or expert action, the step counted when there was an action).

    Every key of :data:`INFO_KEYS` is present, as after any step.

    Example:
        >>> crash_info(None, "look", "RuntimeError: boom")["truncation_reason"]
        'crash'
    """
    info: dict[str, Any] = {key: None for key in INFO_KEYS}
    info.update(last_info or {})
    step = info.get("step")
    info.update(
        admissible_actions=None,
        expert_action=None,
        won=False,
        lost=False,
        action=None,
        raw_action=raw_action,
        parse_error=None,
        step=(step + 1 if isinstance(step, int) and raw_action is not None else step),
        truncation_reason=reason,
        error=error,
    )
    return info


def crash_outcome(
    info: dict[str, Any], error: str, reason: str = "crash"
) -> tuple[str, float, bool, bool, dict[str, Any]]:
    """The ``step`` result that ends an episode the environment did not survive: truncated, no reward, ``info``
    with ``truncation_reason`` (``"crash"``, or ``"time_limit"`` for a hung one) and ``error``.

    Example:
        >>> obs, reward, terminated, truncated, info = crash_outcome({}, "JVM exited")
        >>> truncated, info["truncation_reason"], obs
        (True, 'crash', 'The environment stopped working: JVM exited')
    """
    info.update(truncation_reason=reason, error=error)
    return crash_observation(error), 0.0, False, True, info


def gold_path_position(moves: Sequence[tuple[str, bool]], gold: Sequence[str]) -> int | None:
    """How far an episode has followed a gold action sequence, skipping its no-ops.

    ``moves`` are the executed commands, each with whether it was a no-op (a command the simulator
    did not understand, or one that only reports, like ``inventory``).  Returns the index in
    ``gold`` of the next command to play, or ``None`` once a move that changed the world left the
    path.  Experts built on fixed gold paths use it so that one invalid command does not end them.

    Example:
        >>> gold = ["open door", "go north", "take key"]
        >>> gold_path_position([("open door", False), ("xyzzy", True), ("go north", False)], gold)
        2
        >>> gold_path_position([("go south", False)], gold) is None
        True
    """
    position = 0
    for command, no_op in moves:
        if position < len(gold) and command == gold[position]:
            position += 1
        elif not no_op:
            return None
    return position


def as_text_env(env: gym.Env) -> TextEnv:
    """The :class:`TextEnv` under any stack of wrappers (``env.unwrapped`` with a type check)."""
    inner = env.unwrapped
    if not isinstance(inner, TextEnv):
        raise TypeError(f"{type(inner).__name__} is not an agentgym TextEnv")
    return inner


@runtime_checkable
class SupportsSnapshot(Protocol):
    """An environment whose episode can be saved at any step and reloaded, as often as needed.

    AEPO's branching rollouts use it to fork an episode at a tool call; families without it
    are copied with ``copy.deepcopy`` instead.  Check with ``isinstance(env.unwrapped, SupportsSnapshot)``.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> env = gym.make("agentgym/TextCraft-v0", split="test")
        >>> isinstance(env.unwrapped, SupportsSnapshot)
        True
        >>> _ = env.reset(seed=0); snap = env.unwrapped.snapshot()
        >>> _ = env.step("inventory"); env.unwrapped.restore(snap)
        >>> env.unwrapped.snapshot()["_steps"]
        0
    """

    def snapshot(self) -> Any:
        """The episode state at this step (the simulator's shared read-only data is not copied)."""

    def restore(self, snapshot: Any) -> None:
        """Return to a state taken by :meth:`snapshot`."""


class StateSnapshots:
    """:class:`SupportsSnapshot` for a family whose episode state is its attributes (pure-Python simulators).

    ``snapshot()`` deep-copies every attribute except the read-only ones named in ``_SHARED``
    (recipe books, corpora, the parser, the spaces), which snapshots and ``copy.deepcopy(env)``
    share instead of copying.  Put it before :class:`TextEnv` in the bases.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> env = gym.make("agentgym/TextCraft-v0", split="test").unwrapped
        >>> _ = env.reset(seed=1); snap = env.snapshot(); _ = env.step("get 1 oak logs"); env.restore(snap)
        >>> env.state.inventory
        Counter()
        >>> copy.deepcopy(env).book is env.book
        True
    """

    _SHARED: ClassVar[tuple[str, ...]] = ("parser", "observation_space", "action_space")

    def snapshot(self) -> dict[str, Any]:
        """The episode state (step count, history, RNG, the simulator's state, ...) at this step."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in self._SHARED}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Return to a :meth:`snapshot` (it can be restored any number of times)."""
        self.__dict__.update(copy.deepcopy(dict(snapshot)))

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = v if k in self._SHARED else copy.deepcopy(v, memo)
        return new
