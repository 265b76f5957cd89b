"""Environment workers: step a batch of environments in parallel, in this process or in worker processes.

The rollout engine talks to every environment through an :class:`EnvWorker`: it calls ``step_async`` on
every live episode, then ``step_wait`` on each, so environments living in other processes step in
parallel while the engine waits (or generates for episodes that are already back).

Three kinds, chosen with :func:`make_workers`:

* ``"inprocess"`` -- :class:`InProcessWorker`, the environment in this process, stepped in ``*_wait``.
  Fastest for cheap pure-Python families (TextCraft, TextWorld, BabyAI): no pickling, no context switch.
* ``"process"`` -- :class:`ProcessWorker`, the environment in a child process.  ``make_workers`` spreads
  ``n`` environments over at most ``max_processes`` processes (default: the number of cores): more
  processes than cores cannot step faster, and every process costs memory (an interpreter, imported
  simulators).  Environments sharing a process step one after another, so a crash or a hang of the
  process ends the episodes of all of them (each reports a crash; all are replaced at their next reset).
  Pass ``max_processes=n`` for one process per environment (full isolation).
* ``"ray"`` -- Ray actors (``agentgym_envs.remote.ray_workers``), when installed.

Failures are episode outcomes, never exceptions: an exception raised by the environment's ``reset`` or
``step``, or a worker process that dies, ends the episode with ``truncated=True``,
``info["truncation_reason"] == "crash"`` and ``info["error"] == "<type>: <message>"``; a call that takes
longer than ``timeout_s`` ends it with ``truncation_reason == "time_limit"`` (the process is killed).
After such an outcome the worker wants a reset, which rebuilds the environment (``InProcessWorker`` with a
``rebuild`` factory, as ``make_workers`` gives it) or starts a fresh process.  A reset that fails returns
the message as observation with the same ``info`` keys: check ``info["truncation_reason"]`` after a reset.
Errors of the *caller* are still raised, with their own type: :data:`CALLER_ERRORS` (an unknown task or
split, a step after the episode ended) and a non-``str`` action (``TypeError``).

``close()`` closes the environment in its process, then stops the process (and everything the
environment started there: a JVM, a browser); a finalizer does the same for a worker that is dropped
without ``close()``.

Example:
    >>> from agentgym_envs.engine import make_workers, reset_many, step_many
    >>> with make_workers("agentgym/TextCraft-v0", 4, kind="process", split="test") as workers:  # doctest: +SKIP
    ...     first = reset_many(workers, seeds=[0, 1, 2, 3])
    ...     results = step_many(workers, ["inventory"] * 4)
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import pickle
import signal
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
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

WORKER_KINDS = ("inprocess", "process", "ray")


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


class InProcessWorker:
    """An environment in this process behind the :class:`EnvWorker` interface.

    The call runs in ``reset_wait``/``step_wait``.  Any exception of the environment (other than
    :data:`CALLER_ERRORS`) becomes a truncated ``"crash"`` outcome; the next reset first replaces the
    environment with ``rebuild()`` when given (the crashed one may be in any state).

    Args:
        env: the environment (a ``gym.make`` result).
        rebuild: builds a fresh environment after a crash; without it the same one is reset again.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> worker = InProcessWorker(gym.make("agentgym/TextCraft-v0", split="test"))
        >>> worker.reset_async(seed=0); obs, info = worker.reset_wait()
        >>> worker.step_async("inventory"); obs, reward, terminated, truncated, info = worker.step_wait()
        >>> worker.close()
    """

    #: The environment steps inside ``step_wait``, in this process: nothing to overlap generation with.
    steps_in_background = False

    def __init__(self, env: gym.Env, rebuild: Callable[[], gym.Env] | None = None):
        self.env = env
        self._rebuild = rebuild
        self._pending: tuple[str, Any] | None = None
        self._last_info: dict[str, Any] | None = None
        self._crashed = False  # the episode ended in a crash: reset before stepping
        self._broken = False  # the environment raised: rebuild it at the next reset
        self._closed = False

    def reset_async(self, seed: int | None = None, options: dict | None = None) -> None:
        self._check_idle()
        self._pending = ("reset", (seed, options))

    def reset_wait(self) -> ResetResult:
        seed, options = self._take("reset")
        try:
            if self._broken and self._rebuild is not None:
                with contextlib.suppress(Exception):
                    self.env.close()
                self.env = self._rebuild()
            obs, info = self.env.reset(seed=seed, options=options)
        except CALLER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - an environment failure is an outcome, not an exception
            self._broken = self._crashed = True
            return _crash_reset(error_text(exc))
        self._broken = self._crashed = False
        self._last_info = info
        return obs, info

    def step_async(self, action: str) -> None:
        self._check_idle()
        _check_action(action)
        if self._crashed:
            raise gym.error.ResetNeeded("the episode ended in a crash: call reset_async() before step_async()")
        self._pending = ("step", action)

    def step_wait(self) -> StepResult:
        action = self._take("step")
        try:
            result = self.env.step(action)
        except CALLER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - an environment failure is an outcome, not an exception
            self._broken = self._crashed = True
            return _crash_step(self._last_info, action, error_text(exc))
        self._last_info = result[4]
        return result

    def poll(self, timeout: float = 0.0) -> bool:
        """Always ``True``: the pending call runs inside ``*_wait``, in this process."""
        return True

    def call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        """``env.unwrapped.<path>(*args, **kwargs)`` (or the attribute, if not callable); exceptions propagate.

        Example: ``worker.call("parser.instructions")``, ``worker.call("task_ids")``.
        """
        self._check_idle()
        return _call_path(self.env, path, args, kwargs)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending = None
            self.env.close()

    def _check_idle(self) -> None:
        if self._closed:
            raise RuntimeError("this worker is closed")
        if self._pending is not None:
            raise RuntimeError(f"a {self._pending[0]} is pending: call {self._pending[0]}_wait() first")

    def _take(self, kind: str) -> Any:
        if self._pending is None or self._pending[0] != kind:
            raise RuntimeError(f"no {kind} pending: call {kind}_async() first")
        _, args = self._pending
        self._pending = None
        return args


def _check_action(action: Any) -> None:
    if not isinstance(action, str):
        raise TypeError(f"an action is a str, not {type(action).__name__}")


# ---- the child process ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RaisedInChild:
    """An exception raised in a worker process, as it travels back to the parent."""

    type_name: str
    message: str
    traceback: str
    pickled: bytes | None  # the exception itself when it pickles (to re-raise caller errors with their type)

    @classmethod
    def of(cls, exc: BaseException) -> _RaisedInChild:
        try:
            pickled: bytes | None = pickle.dumps(exc)
            pickle.loads(pickled)
        except Exception:  # noqa: BLE001 - some exceptions do not survive pickling; keep the text
            pickled = None
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), tb, pickled)

    @property
    def text(self) -> str:
        return f"{self.type_name}: {self.message}"

    def exception(self) -> BaseException | None:
        if self.pickled is None:
            return None
        exc = pickle.loads(self.pickled)
        exc.add_note(f"raised in the environment's worker process:\n{self.traceback}")
        return exc

    def is_caller_error(self) -> bool:
        exc = self.exception()
        return isinstance(exc, CALLER_ERRORS)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _host_main(conn: Connection, env_id: str, env_kwargs: dict[str, Any], slots: int) -> None:
    """A worker process: build ``slots`` environments, then run commands from ``conn`` until told to stop."""
    # Own process group: the parent ends everything the environments start (JVM, browser) with one killpg.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # SIGTERM (the parent giving up on a graceful close, or Python exiting) still closes the environments.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    envs: dict[int, gym.Env] = {}

    def make() -> gym.Env:
        import agentgym_envs  # noqa: F401 - registers the agentgym/ ids

        return gym.make(env_id, **env_kwargs)

    try:
        try:
            for slot in range(slots):
                envs[slot] = make()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("failed", None, _RaisedInChild.of(exc)))
            return
        conn.send(("ready", None, os.getpid()))
        while True:
            try:
                slot, command, args = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if command == "close":
                return
            try:
                if command == "close_slot":
                    env = envs.pop(slot, None)
                    if env is not None:
                        env.close()
                    continue  # no reply: the parent no longer listens for this slot
                if command == "reset":
                    seed, options, rebuild = args
                    if rebuild or slot not in envs:
                        old = envs.pop(slot, None)
                        if old is not None:
                            with contextlib.suppress(Exception):
                                old.close()
                        envs[slot] = make()
                    result: Any = envs[slot].reset(seed=seed, options=options)
                elif command == "step":
                    result = envs[slot].step(args)
                elif command == "call":
                    path, call_args, call_kwargs = args
                    result = _call_path(envs[slot], path, call_args, call_kwargs)
                else:
                    raise ValueError(f"unknown worker command {command!r}")
                reply: tuple = ("ok", slot, result)
            except Exception as exc:  # noqa: BLE001 - the parent decides: caller error or crash
                reply = ("raised", slot, _RaisedInChild.of(exc))
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                conn.send(("raised", slot, _RaisedInChild.of(TypeError(f"the result cannot be sent back: {exc}"))))
    finally:
        for env in envs.values():
            with contextlib.suppress(Exception):
                env.close()


# ---- the parent's side of a worker process ----------------------------------------------------------------
def _exited(process: multiprocessing.process.BaseProcess, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``process`` to exit."""
    return bool(wait_ready([process.sentinel], timeout))


def _kill_group(pgid: int, grace_s: float = 2.0) -> None:
    """End what is left of a worker's process group (a JVM or browser its environment started)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)


def _stop_process(process: multiprocessing.process.BaseProcess, conn: Connection, grace_s: float) -> None:
    """Close a worker process: ask it to close its environments, then terminate, kill, and clean its group."""
    if process.pid is None:
        return
    if not _exited(process, 0):
        with contextlib.suppress(OSError, ValueError):
            conn.send((None, "close", None))
        if not _exited(process, grace_s):
            process.terminate()
            if not _exited(process, 2.0):
                process.kill()
                _exited(process, 5.0)
    # The environment's own children (a JVM, a browser) are left in the worker's process group after a crash.
    _kill_group(process.pid)
    process.join(5.0)
    with contextlib.suppress(OSError):
        conn.close()


def _death_note(process: multiprocessing.process.BaseProcess) -> str:
    process.join(1.0)  # collects the exit status
    code = process.exitcode
    if code is None:
        return f"EnvironmentCrashedError: the worker process (pid {process.pid}) stopped answering"
    how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    return f"EnvironmentCrashedError: the worker process (pid {process.pid}) died ({how})"


class _Host:
    """One worker process holding ``slots`` environments, and its replies in flight.

    Handles (:class:`ProcessWorker`) share a host; the host is stopped when the last handle closes or is
    garbage-collected (a finalizer, also run at interpreter exit).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], slots: int, start_method: str, close_grace_s: float):
        self.env_id, self.env_kwargs, self.slots = env_id, dict(env_kwargs), slots
        self.close_grace_s = close_grace_s
        self.ctx = multiprocessing.get_context(start_method)
        self.generation = 0
        self.open_slots = set(range(slots))
        self.previous_note: str | None = None  # why the previous process ended, for episodes that lived there
        self._finalizer: weakref.finalize | None = None
        self._start()

    # life cycle ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        parent_conn, child_conn = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_host_main,
            args=(child_conn, self.env_id, self.env_kwargs, self.slots),
            name=f"agentgym-worker[{self.env_id}]",
            daemon=True,  # a backstop: multiprocessing terminates daemonic children at exit
        )
        started = time.perf_counter()
        process.start()
        child_conn.close()
        self.process, self.conn = process, parent_conn
        self.generation += 1
        self.ready = False
        self.dead_note: str | None = None  # why this process is gone, once it is
        self.started_s = time.perf_counter() - started
        self.replies: dict[int, tuple] = {}
        self.in_flight = 0
        self._finalizer = weakref.finalize(self, _stop_process, process, parent_conn, self.close_grace_s)
        # Registered after multiprocessing's own exit hook, so it runs first: a graceful close at exit.
        atexit.register(self._finalizer)

    def stop(self) -> None:
        if self._finalizer is not None:
            atexit.unregister(self._finalizer)
            self._finalizer()

    def restart(self) -> None:
        self.previous_note = self.dead_note
        self.stop()
        self._start()

    def kill(self, note: str) -> None:
        """Give up on the process now (a hung call): every slot's episode ends."""
        self.dead_note = note
        self.process.kill()
        self.stop()

    @property
    def alive(self) -> bool:
        if self.dead_note is None and _exited(self.process, 0):
            self.dead_note = _death_note(self.process)
        return self.dead_note is None

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the environments are built; raise the construction error if they could not be."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready:
            if not self._pump(deadline):
                note = self.dead_note or "it did not start in time"
                self.stop()
                raise RuntimeError(
                    f"could not start a worker process for {self.env_id}: {note}.  Worker processes import the "
                    "main script again: a script that starts workers must do so under `if __name__ == '__main__':`"
                )

    # messages -----------------------------------------------------------------------------------------
    def send(self, slot: int, command: str, args: Any) -> bool:
        if not self.alive:
            return False
        try:
            self.conn.send((slot, command, args))
        except (OSError, ValueError):
            self.alive  # noqa: B018 - records the death note
            self.dead_note = self.dead_note or _death_note(self.process)
            return False
        if command != "close_slot":
            self.in_flight += 1
        return True

    def reply(self, slot: int, deadline: float | None) -> tuple | None:
        """The reply for ``slot``, or ``None`` if the process died or ``deadline`` passed first."""
        while not self.ready:  # building the environments does not count against a call's deadline
            if not self._pump(None):
                return None
        while slot not in self.replies:
            if not self._pump(deadline):
                return None
        self.in_flight -= 1
        return self.replies.pop(slot)

    def _pump(self, deadline: float | None) -> bool:
        """Read one message; ``False`` if the process is dead or the deadline passed."""
        if self.dead_note is not None:
            return False
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait_ready([self.conn, self.process.sentinel], timeout)
        if not ready:
            return False
        if self.conn in ready:
            try:
                kind, slot, payload = self.conn.recv()
            except (EOFError, OSError):
                self.alive  # noqa: B018
                self.dead_note = self.dead_note or _death_note(self.process)
                return False
            if kind == "ready":
                self.ready = True
            elif kind == "failed":
                self.dead_note = payload.text
                exc = payload.exception()
                if isinstance(exc, Exception) and self.generation == 1 and not self.ready:
                    self.stop()
                    raise exc
            elif slot in self.open_slots:
                self.replies[slot] = (kind, payload)
            return True
        return self.alive  # only the sentinel fired: the process is gone


class ProcessWorker:
    """An environment in a worker process behind the :class:`EnvWorker` interface.

    ``ProcessWorker(env_id, **env_kwargs)`` starts a process of its own that builds the environment with
    ``gym.make(env_id, **env_kwargs)``; :func:`make_workers` lets several workers share a process.
    Commands go over a pipe; ``info`` comes back exactly as in-process (it must pickle).  A dead process,
    an exception of the environment or a call slower than ``timeout_s`` ends the episode (truncated,
    see the module docstring); the next reset rebuilds the environment or starts a fresh process.

    Args:
        env_id: a registered id, e.g. ``"agentgym/ScienceWorld-v0"``.
        timeout_s: the longest a ``reset`` or ``step`` may take (``None``: no limit).  Past it the process
            is killed and the episode truncated with ``truncation_reason="time_limit"``.
        start_method: ``"forkserver"`` (default: processes forked from a clean single-threaded server, so
            threads, torch or a JVM in this process do not leak into them) or ``"spawn"``.
        close_grace_s: how long ``close()`` waits for the environment to close before killing the process.
        **env_kwargs: passed to ``gym.make``.

    Example:
        >>> worker = ProcessWorker("agentgym/TextCraft-v0", split="test")  # doctest: +SKIP
        >>> worker.reset_async(seed=0); obs, info = worker.reset_wait()    # doctest: +SKIP
        >>> worker.close()                                                   # doctest: +SKIP
    """

    #: The environment steps in its process between ``step_async`` and ``step_wait``.
    steps_in_background = True

    def __init__(
        self,
        env_id: str,
        *,
        timeout_s: float | None = None,
        start_method: str = "forkserver",
        close_grace_s: float = 10.0,
        **env_kwargs: Any,
    ):
        host = _Host(env_id, env_kwargs, 1, start_method, close_grace_s)
        host.wait_ready()
        self._attach(host, 0, timeout_s)

    @classmethod
    def _on_host(cls, host: _Host, slot: int, timeout_s: float | None) -> ProcessWorker:
        worker = cls.__new__(cls)
        worker._attach(host, slot, timeout_s)
        return worker

    def _attach(self, host: _Host, slot: int, timeout_s: float | None) -> None:
        self._host: _Host | None = host
        self._slot = slot
        self.timeout_s = timeout_s
        self._generation: int | None = None  # the host process this worker's episode lives in
        self._pending: tuple[str, str | None, int, float] | None = None  # kind, action, generation, deadline
        self._last_info: dict[str, Any] | None = None
        self._crashed = False
        self._rebuild = False

    @property
    def pid(self) -> int | None:
        """The worker process's id (``None`` once closed)."""
        return None if self._host is None else self._host.process.pid

    def reset_async(self, seed: int | None = None, options: dict | None = None) -> None:
        host = self._check_idle()
        if not host.alive:
            host.restart()
        rebuild, self._rebuild = self._rebuild, False
        self._send("reset", None, (seed, options, rebuild))

    def reset_wait(self) -> ResetResult:
        kind, payload, reason = self._receive("reset")
        if kind == "ok":
            obs, info = payload
            self._generation, self._crashed, self._last_info = self._host_generation(), False, info
            return obs, info
        self._crashed = True
        return _crash_reset(payload, reason)

    def step_async(self, action: str) -> None:
        self._check_idle()
        _check_action(action)
        if self._crashed:
            raise gym.error.ResetNeeded("the episode ended in a crash: call reset_async() before step_async()")
        self._send("step", action, action)

    def step_wait(self) -> StepResult:
        kind, payload, reason = self._receive("step")
        assert self._pending is None
        if kind == "ok":
            self._last_info = payload[4]
            return payload
        self._crashed = True
        return _crash_step(self._last_info, self._last_action, payload, reason)

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether ``*_wait`` would return without waiting (waits up to ``timeout`` seconds for the result).

        ``True`` also when nothing is pending, the process died or the call's own ``timeout_s`` passed (the
        ``*_wait`` then reports the crash or the time limit at once).

        Example:
            >>> worker.step_async("look around"); worker.poll(0.5)   # doctest: +SKIP
            True
        """
        if self._pending is None or self._host is None:
            return True
        host = self._host
        _, _, generation, call_deadline = self._pending
        if generation != host.generation:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        if call_deadline >= 0 and host.ready:
            deadline = min(deadline, call_deadline)
        while self._slot not in host.replies:
            if not host._pump(deadline):
                break
        if self._slot in host.replies or not host.alive:
            return True
        return host.ready and call_deadline >= 0 and time.monotonic() >= call_deadline

    def call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        """``env.unwrapped.<path>(*args, **kwargs)`` in the worker process (synchronous; exceptions raise here).

        Example: ``worker.call("parser.instructions")``.
        """
        host = self._check_idle()
        if not host.alive:
            host.restart()
        self._send("call", None, (path, args, kwargs))
        kind, payload, _ = self._receive("call", raw=True)
        if kind == "ok":
            return payload
        if isinstance(payload, _RaisedInChild):
            exc = payload.exception()
            raise exc if exc is not None else RuntimeError(payload.text)
        raise RuntimeError(payload)

    def close(self) -> None:
        """Close the environment; the process stops when the last worker on it closes (no process left)."""
        host, self._host = self._host, None
        if host is None:
            return
        if self._pending is not None and self._pending[2] == host.generation:
            host.in_flight -= 1  # its reply will be dropped
        self._pending = None
        host.open_slots.discard(self._slot)
        host.replies.pop(self._slot, None)
        if host.open_slots:
            host.send(self._slot, "close_slot", None)
        else:
            host.stop()

    # internals ----------------------------------------------------------------------------------------
    def _host_generation(self) -> int:
        assert self._host is not None
        return self._host.generation

    def _check_idle(self) -> _Host:
        if self._host is None:
            raise RuntimeError("this worker is closed")
        if self._pending is not None:
            raise RuntimeError(f"a {self._pending[0]} is pending: call {self._pending[0]}_wait() first")
        return self._host

    def _send(self, kind: str, action: str | None, args: Any) -> None:
        host = self._host
        assert host is not None
        self._last_action = action
        generation = host.generation
        if kind == "step" and self._generation != generation:
            generation = -1  # the process this episode lived in is gone: the step can only crash
        elif not host.send(self._slot, kind, args):
            generation = -1
        queued = max(host.in_flight, 1)  # calls of other workers in the same process run first
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s * queued
        self._pending = (kind, action, generation, deadline if deadline is not None else -1.0)

    def _receive(self, kind: str, raw: bool = False) -> tuple[str, Any, str]:
        """``("ok", result, "")`` or ``("crash", error text, truncation reason)``; caller errors raise."""
        if self._pending is None or self._pending[0] != kind:
            raise RuntimeError(f"no {kind} pending: call {kind}_async() first")
        host = self._host
        assert host is not None
        _, _, generation, deadline = self._pending
        self._pending = None
        if generation != host.generation:
            return "crash", self._lost_note(host), "crash"
        reply = host.reply(self._slot, None if deadline < 0 else deadline)
        if reply is None:
            if host.alive:  # the deadline passed: a hung environment
                waited = self.timeout_s
                host.kill(
                    f"TimeoutError: no reply from the environment within {waited} s; its worker process was killed"
                )
                self._rebuild = False
                return "crash", f"TimeoutError: the call did not finish within {waited} s", "time_limit"
            return "crash", host.dead_note or self._lost_note(host), "crash"
        status, payload = reply
        if status == "ok" or raw:
            return status, payload, ""
        if payload.is_caller_error():
            exc = payload.exception()
            assert exc is not None
            raise exc
        self._rebuild = True  # the environment raised: build a fresh one at the next reset
        return "crash", payload.text, "crash"

    @staticmethod
    def _lost_note(host: _Host) -> str:
        if host.dead_note is not None:
            return host.dead_note
        return host.previous_note or "EnvironmentCrashedError: the worker process was replaced"


# ---- many workers ---------------------------------------------------------------------------------------------
class WorkerGroup(Sequence[EnvWorker]):
    """The workers :func:`make_workers` built: a sequence with ``close()``, usable as a context manager.

    Example:
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


#: Families whose steps cost more than a trip through a pipe: their environments step in worker processes
#: by default (``benchmarks/env_workers.py``: 1.5-2.2x the episodes/s of in-process stepping for a batch
#: of 16 on 2 cores); the others (TextCraft, BabyAI, TextWorld, TextWorld-Express, deep search) were
#: slower in workers and stay in-process.
PROCESS_FAMILIES = frozenset({"scienceworld", "alfworld", "miniwob", "webshop"})


def default_worker_kind(env_id: str) -> str:
    """``"process"`` for the slow families (:data:`PROCESS_FAMILIES`), else ``"inprocess"``.

    Example:
        >>> default_worker_kind("agentgym/TextCraft-v0"), default_worker_kind("agentgym/ScienceWorld-boil-v0")
        ('inprocess', 'process')
    """
    from agentgym_envs.registry import registration

    return "process" if registration(env_id).family.name in PROCESS_FAMILIES else "inprocess"


def make_workers(
    env_id: str,
    n: int,
    kind: str = "inprocess",
    *,
    max_processes: int | None = None,
    timeout_s: float | None = None,
    start_method: str = "forkserver",
    **env_kwargs: Any,
) -> WorkerGroup:
    """``n`` workers, each with its own ``gym.make(env_id, **env_kwargs)``.

    Args:
        kind: ``"inprocess"``, ``"process"`` or ``"ray"`` (see the module docstring).
        max_processes: ``"process"`` only: at most this many worker processes, the ``n`` environments
            spread over them round-robin (default: the number of cores).  ``max_processes=n`` gives each
            environment its own process.
        timeout_s: ``"process"`` only: the longest one ``reset``/``step`` may take.
        start_method: ``"process"`` only: ``"forkserver"`` or ``"spawn"``.

    Example:
        >>> workers = make_workers("agentgym/TextCraft-v0", 8, kind="process", split="test")  # doctest: +SKIP
        >>> len(workers)                                                                     # doctest: +SKIP
        8
        >>> workers.close()                                                                  # doctest: +SKIP
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if kind == "inprocess":

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
    if kind == "process":
        processes = min(n, max_processes if max_processes is not None else (os.cpu_count() or 1))
        if processes < 1:
            raise ValueError(f"max_processes must be at least 1, got {max_processes}")
        slots = [len(range(p, n, processes)) for p in range(processes)]
        hosts: list[_Host] = []
        try:
            for count in slots:  # start them all, then wait: environments are built in parallel
                hosts.append(_Host(env_id, env_kwargs, count, start_method, close_grace_s=10.0))
            for host in hosts:
                host.wait_ready()
        except BaseException:
            for host in hosts:
                host.stop()
            raise
        return WorkerGroup([ProcessWorker._on_host(hosts[i % processes], i // processes, timeout_s) for i in range(n)])
    if kind == "ray":
        from agentgym_envs.remote import ray_workers  # Ray itself is imported when the first actor starts

        return WorkerGroup(ray_workers.make_ray_workers(env_id, n, timeout_s=timeout_s, **env_kwargs))
    raise ValueError(f"unknown worker kind {kind!r}; choose one of {', '.join(WORKER_KINDS)}")


def reset_many(
    workers: Sequence[EnvWorker],
    seeds: Sequence[int | None] | None = None,
    options: Sequence[dict | None] | None = None,
) -> list[ResetResult]:
    """Reset every worker in parallel: ``reset_async`` on all, then ``reset_wait`` on each.

    Example:
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
