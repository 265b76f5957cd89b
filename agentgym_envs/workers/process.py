"""``kind="process"``: environments in child processes, driven over a pipe.

Three parts, from the child outward: the child's command loop (:func:`_host_main`, which builds its
environments and answers ``reset``/``step``/``call`` per slot), the parent's side of one process
(:class:`_Host`: start, stop, restart, and the replies of its slots multiplexed over one pipe), and
:class:`ProcessWorker`, one slot of a host behind the :class:`~agentgym_envs.workers.base.EnvWorker`
interface.  :func:`~agentgym_envs.workers.make_workers` spreads ``n`` environments over at most
``max_processes`` hosts (default: the number of cores): more processes than cores cannot step faster, and
every process costs memory (an interpreter, imported simulators).  Environments sharing a process step one
after another, so a crash or a hang of the process ends the episodes of all of them (each reports a crash;
all are replaced at their next reset).  Pass ``max_processes=n`` for one process per environment.

``close()`` closes the environment in its process, then stops the process (and everything the
environment started there: a JVM, a browser); a finalizer does the same for a worker that is dropped
without ``close()``.

What a worker process writes to its stdout and stderr (a simulator's log, a JVM's warnings, whatever the
environment prints; also what programs it starts write) does not reach this process's terminal: it is
captured, the last :data:`OUTPUT_LIMIT_BYTES` kept (:meth:`ProcessWorker.output`), and when the process dies
or is killed for a time limit, ``info["error"]`` ends with its last :data:`CRASH_OUTPUT_CHARS` characters.

Example:
    >>> worker = ProcessWorker("agentgym/TextCraft-v0", split="test")  # doctest: +SKIP
    >>> worker.reset_async(seed=0); obs, info = worker.reset_wait()    # doctest: +SKIP
    >>> worker.close()                                                   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

import gymnasium as gym

from agentgym_envs.workers.base import (
    CALLER_ERRORS,
    ResetResult,
    StepResult,
    _call_path,
    _check_action,
    _crash_reset,
    _crash_step,
    step_deadline_s,
)

#: How much of a worker process's output (stdout and stderr together) is kept: its last bytes.
OUTPUT_LIMIT_BYTES = 64 * 1024
#: How much of that tail ``info["error"]`` ends with when the process died or was killed (characters).
CRASH_OUTPUT_CHARS = 4000


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


def _redirect_output(output: Connection) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also its children's) into ``output``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for fd in (1, 2):
        os.dup2(output.fileno(), fd)
    output.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr] - what a crash leaves is on record


def _host_main(
    conn: Connection, env_id: str, env_kwargs: dict[str, Any], slots: int, output: Connection | None = None
) -> None:
    """A worker process: build ``slots`` environments, then run commands from ``conn`` until told to stop."""
    if output is not None:
        _redirect_output(output)
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
def _tail(output: _OutputTail | None, settle_s: float = 0.0, last: int | None = CRASH_OUTPUT_CHARS) -> str:
    """The end of a worker process's captured output (``""`` when it was not captured)."""
    return "" if output is None else output.text(settle_s, last)


def _last_words(output: _OutputTail | None) -> str:
    """What a process that died or was killed last wrote, as the end of its crash's ``info["error"]``."""
    tail = _tail(output, settle_s=0.5)  # the rest of it, until the pipe's last writer is gone
    return f"\n--- the worker process's last output ---\n{tail}" if tail else ""


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


class _OutputTail:
    """The last ``limit`` bytes a worker process wrote to its stdout and stderr, read from ``source`` (the read end
    of the pipe they go to) by a thread of its own until every writer is gone."""

    def __init__(self, source: Connection, limit: int = OUTPUT_LIMIT_BYTES):
        self.limit = limit
        self.total = 0  # bytes written, those dropped included
        self._source = source
        self._kept = bytearray()
        self._ended = False
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, name="agentgym-worker-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        fd = self._source.fileno()
        os.set_blocking(fd, False)
        try:
            while True:
                select.select([fd], [], [])  # data or the end; the read is done under the lock, in order
                with self._lock:
                    if not self._read_available():
                        break
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._ended = True
                self._source.close()

    def _read_available(self) -> bool:
        """Keep what the pipe holds now (call with the lock held); ``False`` once every writer is gone."""
        while True:
            try:
                chunk = os.read(self._source.fileno(), 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.total += len(chunk)
            self._kept += chunk
            del self._kept[: max(0, len(self._kept) - self.limit)]

    def text(self, settle_s: float = 0.0, last: int | None = None) -> str:
        """What was kept (its ``last`` characters), after waiting up to ``settle_s`` for a dead process's rest."""
        if settle_s > 0:
            self._reader.join(settle_s)
        with self._lock:
            if not self._ended:  # what the process wrote before its last reply is in the pipe already
                with contextlib.suppress(OSError):
                    self._read_available()
            kept, dropped = bytes(self._kept), self.total - len(self._kept)
        text = kept.decode("utf-8", errors="replace")
        if last is not None and len(text) > last:
            dropped, text = dropped + 1, text[-last:]
        return f"[earlier output dropped]\n{text}" if dropped else text


class _Host:
    """One worker process holding ``slots`` environments, and its replies in flight.

    Handles (:class:`ProcessWorker`) share a host; the host is stopped when the last handle closes or is
    garbage-collected (a finalizer, also run at interpreter exit).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        slots: int,
        start_method: str,
        close_grace_s: float,
        capture_output: bool = True,
    ):
        self.env_id, self.env_kwargs, self.slots = env_id, dict(env_kwargs), slots
        self.close_grace_s, self.capture_output = close_grace_s, capture_output
        self.output: _OutputTail | None = None
        self.previous_output: _OutputTail | None = None  # the previous process's, for episodes that lived there
        self.ctx = multiprocessing.get_context(start_method)
        self.generation = 0
        self.open_slots = set(range(slots))
        self.previous_note: str | None = None  # why the previous process ended, for episodes that lived there
        self._finalizer: weakref.finalize | None = None
        self._start()

    # life cycle ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        parent_conn, child_conn = self.ctx.Pipe()
        output_read, output_write = self.ctx.Pipe(duplex=False) if self.capture_output else (None, None)
        process = self.ctx.Process(
            target=_host_main,
            args=(child_conn, self.env_id, self.env_kwargs, self.slots, output_write),
            name=f"agentgym-worker[{self.env_id}]",
            daemon=True,  # a backstop: multiprocessing terminates daemonic children at exit
        )
        started = time.perf_counter()
        process.start()
        child_conn.close()
        if output_write is not None and output_read is not None:
            output_write.close()  # the child's copy is the only writer: its death (and its children's) ends the tail
            self.output = _OutputTail(output_read)
        self.process, self.conn = process, parent_conn
        self.generation += 1
        self.ready = False
        self.ready_at = 0.0  # time.monotonic() when the environments were built: calls' deadlines start there
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
        self.previous_note, self.previous_output = self.dead_note, self.output
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

    def call_deadline(self, sent_at: float, budget: float | None) -> float | None:
        """When a call sent at ``sent_at`` with ``budget`` seconds times out (``None``: never; not before the
        environments are built: building them does not count against a call's deadline)."""
        return None if budget is None else max(sent_at, self.ready_at) + budget

    def reply(self, slot: int, sent_at: float, budget: float | None) -> tuple | None:
        """The reply for ``slot``, or ``None`` if the process died or the call's deadline passed first."""
        while not self.ready:
            if not self._pump(None):
                return None
        deadline = self.call_deadline(sent_at, budget)
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
                self.ready, self.ready_at = True, time.monotonic()
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
        timeout_s: the longest a ``reset`` or ``step`` may take (``None``: the family's
            :attr:`~agentgym_envs.registry.Family.step_timeout_s`; ``math.inf``: no limit).  Past it the process
            is killed and the episode truncated with ``truncation_reason="time_limit"``.
        start_method: ``"forkserver"`` (default: processes forked from a clean single-threaded server, so
            threads, torch or a JVM in this process do not leak into them) or ``"spawn"``.
        close_grace_s: how long ``close()`` waits for the environment to close before killing the process.
        capture_output: keep the process's stdout and stderr (the last :data:`OUTPUT_LIMIT_BYTES`, :meth:`output`;
            the end of ``info["error"]`` when the process dies or is killed) instead of letting it write to this
            process's terminal.
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
        capture_output: bool = True,
        **env_kwargs: Any,
    ):
        deadline = step_deadline_s(env_id, timeout_s)
        host = _Host(env_id, env_kwargs, 1, start_method, close_grace_s, capture_output)
        host.wait_ready()
        self._attach(host, 0, deadline)

    @classmethod
    def _on_host(cls, host: _Host, slot: int, timeout_s: float | None) -> ProcessWorker:
        worker = cls.__new__(cls)
        worker._attach(host, slot, timeout_s)
        return worker

    def _attach(self, host: _Host, slot: int, timeout_s: float | None) -> None:
        self._host: _Host | None = host
        self._slot = slot
        #: The deadline of one call in seconds (``None``: none).
        self.timeout_s = timeout_s
        self._generation: int | None = None  # the host process this worker's episode lives in
        # kind, action, generation, sent at, budget (seconds; None: no deadline)
        self._pending: tuple[str, str | None, int, float, float | None] | None = None
        self._last_info: dict[str, Any] | None = None
        self._crashed = False
        self._rebuild = False

    @property
    def pid(self) -> int | None:
        """The worker process's id (``None`` once closed)."""
        return None if self._host is None else self._host.process.pid

    def output(self) -> str:
        """What the worker process wrote to its stdout and stderr: the last :data:`OUTPUT_LIMIT_BYTES` (decoded;
        a first line says when earlier output was dropped).  Empty with ``capture_output=False`` or once closed.

        Example:
            >>> worker.output()[-20:]   # doctest: +SKIP
            'JVM started on 25335\n'
        """
        return "" if self._host is None else _tail(self._host.output, last=None)

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
        _, _, generation, sent_at, budget = self._pending
        if generation != host.generation:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        call_deadline = host.call_deadline(sent_at, budget) if host.ready else None
        if call_deadline is not None:
            deadline = min(deadline, call_deadline)
        while self._slot not in host.replies:
            if not host._pump(deadline):
                break
        if self._slot in host.replies or not host.alive:
            return True
        call_deadline = host.call_deadline(sent_at, budget) if host.ready else None
        return call_deadline is not None and time.monotonic() >= call_deadline

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
        budget = None if self.timeout_s is None else self.timeout_s * queued
        self._pending = (kind, action, generation, time.monotonic(), budget)

    def _receive(self, kind: str, raw: bool = False) -> tuple[str, Any, str]:
        """``("ok", result, "")`` or ``("crash", error text, truncation reason)``; caller errors raise."""
        if self._pending is None or self._pending[0] != kind:
            raise RuntimeError(f"no {kind} pending: call {kind}_async() first")
        host = self._host
        assert host is not None
        _, _, generation, sent_at, budget = self._pending
        self._pending = None
        if generation != host.generation:
            lost_with = host.output if host.dead_note is not None else host.previous_output
            return "crash", self._lost_note(host) + _last_words(lost_with), "crash"
        reply = host.reply(self._slot, sent_at, budget)
        if reply is None:
            if host.alive:  # the deadline passed: a hung environment
                waited = self.timeout_s
                host.kill(
                    f"TimeoutError: no reply from the environment within {waited} s; its worker process was killed"
                )
                self._rebuild = False
                note = f"TimeoutError: the call did not finish within {waited} s"
                return "crash", note + _last_words(host.output), "time_limit"
            return "crash", (host.dead_note or self._lost_note(host)) + _last_words(host.output), "crash"
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
