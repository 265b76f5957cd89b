"""The environment worker's interface, shared by every backend: the protocol, crash outcomes, groups.

The rollout engine talks to every environment through an :class:`EnvWorker`: it calls ``step_async`` on
every live episode, then ``step_wait`` on each, so environments living in other processes step in
parallel while the engine waits (or generates for episodes that are already back).

Failures are episode outcomes, never exceptions: an exception raised by the environment's ``reset`` or
``step``, or a worker process that dies, ends the episode with ``truncated=True``,
``info["truncation_reason"] == "crash"`` and ``info["error"] == "<type>: <message>"``; a call to a worker
process or a Ray actor that takes longer than its deadline (``timeout_s``; by default the family's
:attr:`~agentgym_envs.registry.Family.step_timeout_s`, :func:`step_deadline_s`) ends it with
``truncation_reason == "time_limit"`` (the process or actor is killed).
After such an outcome the worker wants a reset, which rebuilds the environment (``InProcessWorker`` with a
``rebuild`` factory, as ``make_workers`` gives it) or starts a fresh process.  A reset that fails returns
the message as observation with the same ``info`` keys: check ``info["truncation_reason"]`` after a reset.
Errors of the *caller* are still raised, with their own type: :data:`CALLER_ERRORS` (an unknown task or
split, a step after the episode ended) and a non-``str`` action (``TypeError``).

Example:
    >>> from agentgym_envs.workers import make_workers, reset_many, step_many
    >>> with make_workers("agentgym/TextCraft-v0", 2, split="test") as workers:
    ...     _ = reset_many(workers, seeds=[0, 1])
    ...     len(step_many(workers, ["inventory", "inventory"]))
    2
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym

from agentgym_envs.core import crash_info, crash_observation, crash_outcome
from agentgym_envs.errors import SplitLeakError, UnknownSplitError, UnknownTaskError

ResetResult = tuple[str, dict[str, Any]]
StepResult = tuple[str, float, bool, bool, dict[str, Any]]

#: Exceptions that are the caller's mistake, not the environment's failure: workers raise them (in the
#: caller's process, with their own type) instead of turning them into a crashed episode.
CALLER_ERRORS: tuple[type[BaseException], ...] = (
    gym.error.ResetNeeded,
    UnknownTaskError,
    UnknownSplitError,
    SplitLeakError,
)


@runtime_checkable
class EnvWorker(Protocol):
    """One environment, maybe in another process or a Ray actor, driven in two halves per call.

    ``reset_async``/``step_async`` hand the call over and return at once; ``reset_wait``/``step_wait``
    return its result.  ``step_wait`` never raises for a failure of the environment (see the module
    docstring); ``close`` leaves no process behind.
    A worker whose environment works between ``step_async`` and ``step_wait`` (another process, an actor)
    says so with ``steps_in_background = True`` and answers ``poll(timeout)`` (is the pending call's result
    here?); the engine then overlaps generation with its steps (``RolloutConfig.overlap``).

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> from agentgym_envs.workers import InProcessWorker
        >>> worker = InProcessWorker(gym.make("agentgym/TextCraft-v0", split="test"))
        >>> isinstance(worker, EnvWorker)
        True
        >>> worker.close()
    """

    def reset_async(self, seed: int | None = None, options: dict | None = None) -> None: ...

    def reset_wait(self) -> ResetResult: ...

    def step_async(self, action: str) -> None: ...

    def step_wait(self) -> StepResult: ...

    def close(self) -> None: ...


# ---- deadlines ---------------------------------------------------------------------------------------------
def default_step_timeout_s(env_id: str) -> float:
    """The deadline of one ``reset``/``step`` of ``env_id`` in a worker process or a Ray actor, in seconds: its
    family's :attr:`~agentgym_envs.registry.Family.step_timeout_s` (the ``"process"`` default for an id that is not
    an ``agentgym/`` one).

    Example:
        >>> default_step_timeout_s("agentgym/TextCraft-v0"), default_step_timeout_s("agentgym/ScienceWorld-v0")
        (60.0, 300.0)
    """
    from agentgym_envs.registry import DEFAULT_STEP_TIMEOUT_S, NAMESPACE, registration

    if not env_id.startswith(f"{NAMESPACE}/"):
        return DEFAULT_STEP_TIMEOUT_S["process"]
    return registration(env_id).family.step_timeout_s  # type: ignore[return-value]


def step_deadline_s(env_id: str, timeout_s: float | None) -> float | None:
    """The deadline a worker applies: ``timeout_s``, the family's default when it is ``None``, and no deadline
    (``None``) for ``math.inf``.

    Raises:
        ValueError: ``timeout_s`` is not a number of seconds above 0.

    Example:
        >>> step_deadline_s("agentgym/TextCraft-v0", None), step_deadline_s("agentgym/TextCraft-v0", 5)
        (60.0, 5.0)
        >>> step_deadline_s("agentgym/TextCraft-v0", float("inf")) is None
        True
    """
    if timeout_s is None:
        return default_step_timeout_s(env_id)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a number of seconds > 0 (math.inf: no deadline), got {timeout_s!r}")
    return None if math.isinf(timeout_s) else float(timeout_s)


# ---- outcomes shared by every worker ----------------------------------------------------------------------
def error_text(exc: BaseException) -> str:
    """``"<type>: <message>"``, what ``info["error"]`` holds after a crash."""
    return f"{type(exc).__name__}: {exc}"


def _crash_step(last_info: dict | None, action: str, error: str, reason: str = "crash") -> StepResult:
    return crash_outcome(crash_info(last_info, action, error, reason), error, reason)


def _crash_reset(error: str, reason: str = "crash") -> ResetResult:
    return crash_observation(error), crash_info(None, None, error, reason)


def _resolve(env: gym.Env, path: str) -> Any:
    target: Any = env.unwrapped
    for name in path.split("."):
        target = getattr(target, name)
    return target


def _call_path(env: gym.Env, path: str, args: tuple, kwargs: dict) -> Any:
    target = _resolve(env, path)
    return target(*args, **kwargs) if callable(target) else target


def _check_action(action: Any) -> None:
    if not isinstance(action, str):
        raise TypeError(f"an action is a str, not {type(action).__name__}")


# ---- many workers ---------------------------------------------------------------------------------------------
class WorkerGroup(Sequence[EnvWorker]):
    """The workers :func:`~agentgym_envs.workers.make_workers` built: a sequence with ``close()``, usable as a context manager.

    Example:
        >>> from agentgym_envs.workers import make_workers
        >>> with make_workers("agentgym/TextCraft-v0", 2, split="test") as workers:
        ...     len(workers)
        2
    """

    def __init__(self, workers: Sequence[EnvWorker]):
        self._workers = list(workers)

    def __len__(self) -> int:
        return len(self._workers)

    def __getitem__(self, index: Any) -> Any:
        return self._workers[index]

    def __iter__(self) -> Iterator[EnvWorker]:
        return iter(self._workers)

    def close(self) -> None:
        """Close every worker (and stop every worker process)."""
        errors = []
        for worker in self._workers:
            try:
                worker.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def reset_many(
    workers: Sequence[EnvWorker],
    seeds: Sequence[int | None] | None = None,
    options: Sequence[dict | None] | None = None,
) -> list[ResetResult]:
    """Reset every worker in parallel: ``reset_async`` on all, then ``reset_wait`` on each.

    Example:
        >>> from agentgym_envs.workers import make_workers
        >>> with make_workers("agentgym/TextCraft-v0", 2, split="test") as workers:
        ...     [info["step"] for _, info in reset_many(workers, seeds=[0, 1])]
        [0, 0]
    """
    seeds = list(seeds) if seeds is not None else [None] * len(workers)
    options = list(options) if options is not None else [None] * len(workers)
    if not len(seeds) == len(options) == len(workers):
        raise ValueError(f"{len(workers)} workers but {len(seeds)} seeds and {len(options)} options")
    for worker, seed, option in zip(workers, seeds, options, strict=True):
        worker.reset_async(seed=seed, options=option)
    return [worker.reset_wait() for worker in workers]


def step_many(workers: Sequence[EnvWorker], actions: Sequence[str]) -> list[StepResult]:
    """Step every worker in parallel: ``step_async`` on all, then ``step_wait`` on each.

    Example:
        >>> from agentgym_envs.workers import make_workers
        >>> with make_workers("agentgym/TextCraft-v0", 2, split="test") as workers:
        ...     _ = reset_many(workers, seeds=[0, 1])
        ...     [info["step"] for *_, info in step_many(workers, ["inventory", "inventory"])]
        [1, 1]
    """
    if len(actions) != len(workers):
        raise ValueError(f"{len(workers)} workers but {len(actions)} actions")
    for worker, action in zip(workers, actions, strict=True):
        worker.step_async(action)
    return [worker.step_wait() for worker in workers]
