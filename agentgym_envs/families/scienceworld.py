"""ScienceWorld: the 30 science-experiment tasks of Wang et al. (2022), on their JVM simulator.

Description
-----------
``agentgym/ScienceWorld-<task-name>-v0`` plays one task, ``agentgym/ScienceWorld-v0`` all
of them (a reset draws the task uniformly, then a variation, so tasks with 1,386
variations do not drown those with 10).

Speed: the stock ``ScienceWorldEnv.step`` asks the simulator for every valid action
(and the look-around, inventory and task texts) after every step, which is most of its
cost.  This environment calls the simulator's ``step`` directly and enumerates valid
actions only when they are asked for (``admissible_actions=True`` or
:meth:`~agentgym_envs.core.TextEnv.admissible_actions`).  It also loads a task without
the stock ``reset``, which would rebuild the task a second time.

The JVM: one per environment, heap capped by ``max_memory_mb`` (1024 by default),
stopped by ``close()``.

Tasks and splits
----------------
A task id is ``"<task-name>:<variation>"`` (e.g. ``"boil:21"``); the splits are
ScienceWorld's own train / dev / test variations of each task (``dev`` is our ``valid``).

Actions
-------
ScienceWorld's commands (``open door to kitchen``, ``focus on thermometer``, ``look
around``, ...), through the ``act`` tool.

Observation
-----------
The task description and the opening ``look around`` at reset, then the simulator's reply
to each command.

Rewards
-------
Scores run 0-100 (``max_score`` 100); a negative score means the task failed (e.g.
focusing on the wrong object).  ``reward="dense"`` pays score deltas / 100, ``"sparse"``
1 on completion, ``"native"`` the raw deltas.

Expert
------
The simulator's gold action sequence, which it only computes when a task is loaded with
``generateGoldPath=True`` (0.2-15 s per load), so it is generated only when the expert is
wanted: at reset with ``expert_actions=True``, else on the first :meth:`expert_action`
call of an episode (the task is then reloaded and the episode's commands replayed).  The
expert follows the gold path while the episode has; once the agent deviates there is no
expert action (``info["expert_action"]`` is ``None``).

Termination
-----------
Terminated on completion or on a negative score (``info["lost"]``); truncated after 200
steps by default, or when the JVM dies during a step (``info["truncation_reason"] ==
"crash"``, the cause in ``info["error"]``; the next ``reset`` starts a new JVM).

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/ScienceWorld-boil-v0", split="test", reward="dense")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                 # doctest: +SKIP
    >>> obs, r, term, trunc, info = env.step("look around")          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import gymnasium as gym

from agentgym_envs.core import TaskSplits, TaskStart, Transition
from agentgym_envs.errors import UnknownTaskError
from agentgym_envs.families._jvm import JVMConfig, JVMTextEnv, Simulator
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "scienceworld",
    extra="scienceworld",
    requires=("scienceworld", "py4j"),
    description="ScienceWorld's 30 science tasks (JVM simulator), with ScienceWorld's variation splits.",
    worker="process",  # a JVM simulator: 1.5-1.9x the episodes/s in worker processes (docs/workers.md)
)

#: The 30 task names (as the simulator spells them), fixed here so that registering the
#: environments needs neither the package nor a JVM.  Checked against the simulator in tests.
TASK_NAMES = (
    "boil",
    "change-the-state-of-matter-of",
    "chemistry-mix",
    "chemistry-mix-paint-secondary-color",
    "chemistry-mix-paint-tertiary-color",
    "find-animal",
    "find-living-thing",
    "find-non-living-thing",
    "find-plant",
    "freeze",
    "grow-fruit",
    "grow-plant",
    "identify-life-stages-1",
    "identify-life-stages-2",
    "inclined-plane-determine-angle",
    "inclined-plane-friction-named-surfaces",
    "inclined-plane-friction-unnamed-surfaces",
    "lifespan-longest-lived",
    "lifespan-longest-lived-then-shortest-lived",
    "lifespan-shortest-lived",
    "measure-melting-point-known-substance",
    "measure-melting-point-unknown-substance",
    "melt",
    "mendelian-genetics-known-plant",
    "mendelian-genetics-unknown-plant",
    "power-component",
    "power-component-renewable-vs-nonrenewable-energy",
    "test-conductivity",
    "test-conductivity-of-unknown-substances",
    "use-thermometer",
)

#: The simulator's package and the Java class Python talks to.
SIMULATOR = Simulator("scienceworld", "scienceworld.runtime.pythonapi.PythonInterface")
# Gold paths reach ~190 steps (inclined-plane-friction-unnamed-surfaces); the stock limit is 100.
DEFAULT_MAX_STEPS = 200


#: ScienceWorld's reply to a command it cannot parse (nothing happens).
UNKNOWN_COMMAND_REPLY = "No known action matches that input."
#: Commands that only report: the expert steps over them (and over unknown commands) on its gold path.
READ_ONLY_COMMANDS = frozenset({"look around", "inventory", "task"})


def canonical_listing(text: str) -> str:
    """Sort the tab-indented object lists of a ScienceWorld observation (``In it, you see:`` ...).

    The simulator lists a room's objects in an order that changes when the same variation is
    loaded again; sorting each list (an item keeps its more deeply indented lines) makes the same
    seed give the same observation.

    Example:
        >>> canonical_listing("In it, you see:\\n\\tthe agent\\n\\ta cup\\nYou also see:\\n\\tA door")
        'In it, you see:\\n\\ta cup\\n\\tthe agent\\nYou also see:\\n\\tA door'
    """
    out: list[str] = []
    items: list[list[str]] = []

    def flush() -> None:
        for item in sorted(items):
            out.extend(item)
        items.clear()

    for line in text.split("\n"):
        if line.startswith("\t\t") and items:
            items[-1].append(line)
        elif line.startswith("\t"):
            items.append([line])
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


def task_id(task: str, variation: int) -> str:
    """The task id of a task's variation.

    Example:
        >>> task_id("boil", 21)
        'boil:21'
    """
    return f"{task}:{int(variation)}"


def parse_task_id(tid: Hashable) -> tuple[str, int]:
    """``"boil:21"`` -> ``("boil", 21)``.

    Example:
        >>> parse_task_id("boil:21")
        ('boil', 21)
    """
    task, sep, variation = str(tid).rpartition(":")
    if not sep or task not in TASK_NAMES or not variation.isdigit():
        raise UnknownTaskError(f"a ScienceWorld task id looks like 'boil:21', not {tid!r}")
    return task, int(variation)


def variation_splits(config: JVMConfig | None = None) -> dict[str, dict[str, list[int]]]:
    """ScienceWorld's own variation splits of every task: ``{task: {"train": [...], "valid": ..., "test": ...}}``.

    Asked of the simulator once (it takes a JVM and ~10 s), then read from the cache.

    Example:
        >>> variation_splits()["boil"]["test"][:3]  # doctest: +SKIP
        [21, 22, 23]
    """
    return SIMULATOR.splits(
        "splits",
        config or JVMConfig(),
        names=lambda jvm, server: jvm.call(server.getTaskNames),
        load=lambda jvm, server, task: jvm.call(server.load, task, 0, "", False),
        getter="getVariations",
    )


class ScienceWorldEnv(JVMTextEnv):
    """ScienceWorld, one task or all of them, with lazy valid actions and a capped JVM.

    Args:
        task: a task name (see :data:`TASK_NAMES`), or ``None`` for all 30 tasks.
        simplifications: ScienceWorld's simplification string, e.g. ``"easy"`` or
            ``"openDoors,selfWateringFlowerPots"``.
        max_memory_mb: the JVM heap cap.
        balance_tasks: with several tasks, a reset draws the task uniformly and then a
            variation (else every variation is equally likely).
        jvm: further JVM settings (overrides ``max_memory_mb`` if given).
        **kwargs: see :class:`~agentgym_envs.core.TextEnv`; ``seed_range=(lo, hi)``
            keeps the variations numbered ``lo`` to ``hi``.

    Example:
        >>> env = ScienceWorldEnv("boil", split="test", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(options={"task": "boil:21"})              # doctest: +SKIP
        >>> info["expert_action"]                                            # doctest: +SKIP
        'open door to kitchen'
        >>> env.close()                                                      # doctest: +SKIP
    """

    family = "scienceworld"
    default_max_steps = DEFAULT_MAX_STEPS
    simulator = SIMULATOR

    def __init__(
        self,
        task: str | None = None,
        simplifications: str = "",
        max_memory_mb: int = 1024,
        balance_tasks: bool = True,
        jvm: JVMConfig | None = None,
        **kwargs: Any,
    ):
        if task is not None and task not in TASK_NAMES:
            raise UnknownTaskError(f"unknown ScienceWorld task {task!r}; choose one of {', '.join(TASK_NAMES)}")
        self.task = task
        self.simplifications = simplifications
        self.balance_tasks = balance_tasks
        self._loaded: tuple[str, int] | None = None
        super().__init__(jvm or JVMConfig(max_memory_mb=max_memory_mb), **kwargs)

    # ---- splits -------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        splits = variation_splits(self.jvm_config)
        tasks = [self.task] if self.task else list(TASK_NAMES)
        return TaskSplits(
            **{name: [task_id(t, v) for t in tasks for v in splits[t][name]] for name in ("train", "valid", "test")}
        )

    def _select_range(self, available: list[Hashable], seed_range: tuple[int, int]) -> list[Hashable]:
        lo, hi = seed_range
        return [t for t in available if lo <= parse_task_id(t)[1] <= hi]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        options = dict(options or {})
        if "task" not in options and self.balance_tasks and self.task is None:
            # Seed first, then draw task-uniformly, then let the base class run the chosen task.
            gym.Env.reset(self, seed=seed)  # seeds self.np_random; the base reset below then keeps it
            options["task"] = self._draw_balanced(self.task_ids)
            seed = None
        return super().reset(seed=seed, options=options)

    def _draw_balanced(self, ids: Sequence[Hashable]) -> Hashable:
        by_task: dict[str, list[Hashable]] = {}
        for tid in ids:
            by_task.setdefault(parse_task_id(tid)[0], []).append(tid)
        names = sorted(by_task)
        chosen = by_task[names[int(self.np_random.integers(len(names)))]]
        return chosen[int(self.np_random.integers(len(chosen)))]

    # ---- simulator ----------------------------------------------------------------
    def _forget_loaded(self) -> None:
        self._loaded = None

    def _load(self, task: str, variation: int, gold: bool) -> None:
        message = self._call("load", task, variation, self.simplifications, gold)
        if message:
            raise ValueError(f"ScienceWorld refused to load {task}:{variation} with {self.simplifications!r}: {message}")
        self._gold = [str(a) for a in self._call("getGoldActionSequence")] if gold else None
        self._loaded = (task, variation)

    def _open_episode(self, task_id: Hashable) -> TaskStart:
        task, variation = parse_task_id(task_id)
        self._load(task, variation, gold=self.want_expert)
        description = str(self._call("getTaskDescription")).strip()
        # Like the stock reset: the first observation is a (time-consuming) "look around".
        look = canonical_listing(str(self._call("step", "look around")))
        # Some variations start with points already earned (e.g. a paint already in the room): the
        # episode starts from that score, so that the first step gets no reward for nothing.
        return TaskStart(f"{description}\n\n{look}", description, max_score=100.0, score=self._read_score())

    def _read_score(self) -> float:
        return float(round(100 * float(self._call("getScore"))))

    def _execute(self, command: str) -> Transition:
        observation = canonical_listing(str(self._call("step", command)))
        score = self._read_score()
        lost = score < 0
        won = bool(self._call("getCompleted")) and not lost
        no_op = observation.strip() == UNKNOWN_COMMAND_REPLY or command in READ_ONLY_COMMANDS
        self._moves.append((command, no_op))
        return Transition(observation=observation, score=score, won=won, lost=lost)

    def _admissible(self) -> list[str]:
        return [str(a) for a in self._call("getValidActionObjectCombinations")]

    def _regenerate_with_gold(self) -> None:
        """Reload this episode's task with a gold path and replay the episode's commands."""
        assert self._loaded is not None
        task, variation = self._loaded
        self._load(task, variation, gold=True)
        self._call("step", "look around")
        for command in self._history:
            self._call("step", command)


def registrations() -> list[Registration]:
    regs = [
        Registration(
            name="ScienceWorld",
            family=FAMILY,
            entry_point="agentgym_envs.families.scienceworld:ScienceWorldEnv",
            kwargs={"task": None},
            description="all 30 ScienceWorld tasks (task drawn uniformly, then a variation)",
        )
    ]
    regs += [
        Registration(
            name=f"ScienceWorld-{name}",
            family=FAMILY,
            entry_point="agentgym_envs.families.scienceworld:ScienceWorldEnv",
            kwargs={"task": name},
            description=f"ScienceWorld task {name!r}",
        )
        for name in TASK_NAMES
    ]
    return regs
