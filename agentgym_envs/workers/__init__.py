"""Environment workers: step a batch of environments in parallel, in this process, in worker processes or in Ray.

The rollout engine talks to every environment through an :class:`EnvWorker`: it calls ``step_async`` on
every live episode, then ``step_wait`` on each, so environments living in other processes step in
parallel while the engine waits (or generates for episodes that are already back).

==================  =====================================================================================
module              what it holds
==================  =====================================================================================
:mod:`.base`        the :class:`EnvWorker` protocol, :data:`CALLER_ERRORS`, :class:`WorkerGroup`,
                    :func:`reset_many`, :func:`step_many` (failures are outcomes: see there)
:mod:`.inprocess`   ``kind="inprocess"``: :class:`InProcessWorker`, the environment in this process
:mod:`.process`     ``kind="process"``: :class:`ProcessWorker`, environments in child processes over a pipe
:mod:`.ray`         ``kind="ray"``: ``RayEnv`` and ``RayWorker``, an environment in a Ray actor (extra ``ray``)
==================  =====================================================================================

:func:`make_workers` builds ``n`` workers of one kind; :func:`default_worker_kind` is where an
environment steps by default (its family's :attr:`~agentgym_envs.registry.Family.worker`).  Importing this
package imports neither Ray nor a simulator.

Example:
    >>> from agentgym_envs.workers import make_workers, reset_many, step_many
    >>> with make_workers("agentgym/TextCraft-v0", 4, kind="process", split="test") as workers:  # doctest: +SKIP
    ...     first = reset_many(workers, seeds=[0, 1, 2, 3])
    ...     results = step_many(workers, ["inventory"] * 4)
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from agentgym_envs.workers.base import (
    CALLER_ERRORS,
    EnvWorker,
    ResetResult,
    StepResult,
    WorkerGroup,
    default_step_timeout_s,
    error_text,
    reset_many,
    step_deadline_s,
    step_many,
)
from agentgym_envs.workers.inprocess import InProcessWorker
from agentgym_envs.workers.process import ProcessWorker, _Host

__all__ = [
    "CALLER_ERRORS",
    "WORKER_KINDS",
    "EnvWorker",
    "InProcessWorker",
    "ProcessWorker",
    "ResetResult",
    "StepResult",
    "WorkerGroup",
    "default_step_timeout_s",
    "default_worker_kind",
    "error_text",
    "make_workers",
    "reset_many",
    "step_deadline_s",
    "step_many",
]

WORKER_KINDS = ("inprocess", "process", "ray")


def default_worker_kind(env_id: str) -> str:
    """Where ``env_id``'s environments step by default: its family's ``Family.worker``.

    ``"process"`` for the families whose steps cost more than a trip through a pipe (ScienceWorld, ALFWorld,
    the web families: ``benchmarks/env_workers.py`` measured 1.5-2.2x the episodes/s of in-process stepping
    for a batch of 16 on 2 cores), ``"inprocess"`` for the others.  The trainer's and the leaderboard's
    ``env_workers="auto"`` both mean this.

    Example:
        >>> default_worker_kind("agentgym/TextCraft-v0"), default_worker_kind("agentgym/ScienceWorld-boil-v0")
        ('inprocess', 'process')
    """
    from agentgym_envs.registry import registration

    return registration(env_id).family.worker


def make_workers(
    env_id: str,
    n: int,
    kind: str = "inprocess",
    *,
    max_processes: int | None = None,
    timeout_s: float | None = None,
    start_method: str = "forkserver",
    capture_output: bool = True,
    **env_kwargs: Any,
) -> WorkerGroup:
    """``n`` workers, each with its own ``gym.make(env_id, **env_kwargs)``.

    Args:
        kind: ``"inprocess"``, ``"process"`` or ``"ray"`` (see the module docstring).
        max_processes: ``"process"`` only: at most this many worker processes, the ``n`` environments
            spread over them round-robin (default: the number of cores).  ``max_processes=n`` gives each
            environment its own process.
        timeout_s: ``"process"`` and ``"ray"``: the longest one ``reset``/``step`` may take before the episode
            ends with ``truncation_reason="time_limit"`` (``None``, default: the family's
            :attr:`~agentgym_envs.registry.Family.step_timeout_s`, :func:`default_step_timeout_s`; ``math.inf``:
            no deadline).  In-process environments run in the caller's thread and have none.
        start_method: ``"process"`` only: ``"forkserver"`` or ``"spawn"``.
        capture_output: ``"process"`` only: keep what the worker processes write to stdout and stderr (bounded:
            ``ProcessWorker.output()``; the end of ``info["error"]`` when a process dies or is killed) instead of
            letting it reach this process's terminal.

    Example:
        >>> workers = make_workers("agentgym/TextCraft-v0", 8, kind="process", split="test")  # doctest: +SKIP
        >>> len(workers)                                                                     # doctest: +SKIP
        8
        >>> workers.close()                                                                  # doctest: +SKIP
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if kind == "inprocess":
        return _in_process_workers(env_id, n, env_kwargs)
    if kind == "process":
        deadline = step_deadline_s(env_id, timeout_s)
        return _process_workers(env_id, n, max_processes, deadline, start_method, capture_output, env_kwargs)
    if kind == "ray":
        from agentgym_envs.workers import ray  # Ray itself is imported when the first actor starts

        return WorkerGroup(ray.make_ray_workers(env_id, n, timeout_s=timeout_s, **env_kwargs))
    raise ValueError(f"unknown worker kind {kind!r}; choose one of {', '.join(WORKER_KINDS)}")


def _in_process_workers(env_id: str, n: int, env_kwargs: dict[str, Any]) -> WorkerGroup:
    def build() -> gym.Env:
        import agentgym_envs  # noqa: F401 - registers the agentgym/ ids

        return gym.make(env_id, **env_kwargs)

    workers: list[EnvWorker] = []
    try:
        for _ in range(n):
            workers.append(InProcessWorker(build(), rebuild=build))
    except BaseException:
        WorkerGroup(workers).close()
        raise
    return WorkerGroup(workers)


def _process_workers(
    env_id: str,
    n: int,
    max_processes: int | None,
    timeout_s: float | None,
    start_method: str,
    capture_output: bool,
    env_kwargs: dict[str, Any],
) -> WorkerGroup:
    processes = min(n, max_processes if max_processes is not None else (os.cpu_count() or 1))
    if processes < 1:
        raise ValueError(f"max_processes must be at least 1, got {max_processes}")
    slots = [len(range(p, n, processes)) for p in range(processes)]
    hosts: list[_Host] = []
    try:
        for count in slots:  # start them all, then wait: environments are built in parallel
            hosts.append(_Host(env_id, env_kwargs, count, start_method, 10.0, capture_output))
        for host in hosts:
            host.wait_ready()
    except BaseException:
        for host in hosts:
            host.stop()
        raise
    return WorkerGroup([ProcessWorker._on_host(hosts[i % processes], i // processes, timeout_s) for i in range(n)])
