"""A py4j-connected JVM owned by one environment: memory cap, clean shutdown, crash detection.

ScienceWorld and TextWorld-Express ship their simulators as jars that Python drives
through py4j.  Their stock wrappers start the JVM without a memory cap, leave it
running until the Python process exits and turn a dead JVM into an opaque py4j
network error.  :class:`JavaProcess` owns one JVM and fixes those three things:

* ``-Xmx`` from :class:`JVMConfig` (1 GiB by default);
* :meth:`JavaProcess.close` stops the process (SIGTERM, then SIGKILL) and waits for it;
  a finalizer does the same if the owner is garbage-collected without closing, and
  py4j's ``die_on_exit`` ends the JVM if Python itself dies;
* :meth:`JavaProcess.call` turns any py4j failure (dead process, broken socket,
  Java exception, call timeout) into :class:`~agentgym_envs.errors.EnvironmentCrashedError`
  with the JVM's last stderr lines, and marks the process broken so that the owner
  starts a fresh one on its next reset.

Example:
    >>> from scienceworld.constants import JAR_PATH, BASEPATH          # doctest: +SKIP
    >>> jvm = JavaProcess(JAR_PATH, BASEPATH, JVMConfig(max_memory_mb=512))  # doctest: +SKIP
    >>> server = jvm.new("scienceworld.runtime.pythonapi.PythonInterface")   # doctest: +SKIP
    >>> names = jvm.call(server.getTaskNames)                           # doctest: +SKIP
    >>> jvm.close()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agentgym_envs.cache import cache_dir, file_lock
from agentgym_envs.errors import EnvironmentCrashedError

T = TypeVar("T")


@dataclass(frozen=True)
class JVMConfig:
    """How to start the simulator's JVM.

    Args:
        max_memory_mb: the heap cap (``-Xmx``).  ScienceWorld grew to 2.4 GB uncapped.
        call_timeout_s: a single call to the JVM taking longer than this counts as a
            crash (a hung JVM would otherwise block the trainer forever).  Generating
            a long ScienceWorld gold path takes ~15 s on a busy machine, hence the margin.
        java_path: the ``java`` executable.
        extra_options: more JVM options, e.g. ``("-XX:+UseSerialGC",)`` for one GC thread.

    Example:
        >>> JVMConfig(max_memory_mb=512).options()[0]
        '-Xmx512m'
    """

    max_memory_mb: int = 1024
    call_timeout_s: float = 300.0
    java_path: str = "java"
    extra_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_memory_mb < 64:
            raise ValueError(f"max_memory_mb must be >= 64, got {self.max_memory_mb}")
        if self.call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be > 0, got {self.call_timeout_s}")

    def options(self) -> list[str]:
        # The JVM's default collector: -XX:+UseSerialGC stepped ScienceWorld ~30% slower here.
        return [f"-Xmx{self.max_memory_mb}m", *self.extra_options]


def _stop(proc: subprocess.Popen, gateway: Any) -> None:
    """Stop a JVM and close its gateway; safe to call twice (also used as a finalizer)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    try:
        gateway.close(keep_callback_server=False, close_callback_server_connections=True)
    except Exception:  # noqa: BLE001 - the process is gone; closing sockets may fail, which is fine
        pass


class JavaProcess:
    """One JVM running a py4j gateway server with the simulator's jar on its classpath.

    Args:
        jar: the simulator's jar.
        cwd: working directory of the JVM (the simulators read files next to their jar).
        config: memory cap and timeouts.

    Example:
        >>> jvm = JavaProcess("/path/sim.jar", "/path", JVMConfig())  # doctest: +SKIP
        >>> jvm.alive                                                  # doctest: +SKIP
        True
    """

    def __init__(self, jar: str | Path, cwd: str | Path, config: JVMConfig = JVMConfig()):
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

        self.config = config
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.broken = False
        port, proc = launch_gateway(
            classpath=str(jar),
            javaopts=config.options(),
            die_on_exit=True,  # the JVM exits when our stdin pipe closes, i.e. when Python dies
            cwd=str(cwd),
            redirect_stderr=self.stderr,
            java_path=config.java_path,
            return_proc=True,
        )
        self.process: subprocess.Popen = proc
        # No callback server: the simulators never call back into Python, and it would be a
        # thread and a listening socket per environment.
        self.gateway = JavaGateway(
            gateway_parameters=GatewayParameters(port=port, read_timeout=config.call_timeout_s),
            java_process=proc,
        )
        self._finalizer = weakref.finalize(self, _stop, proc, self.gateway)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.poll() is None

    def new(self, class_name: str) -> Any:
        """A new instance of a Java class (e.g. the simulator's ``PythonInterface``)."""
        cls: Any = self.gateway.jvm
        for part in class_name.split("."):
            cls = getattr(cls, part)
        return self.call(cls)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the JVM; any py4j failure becomes :class:`EnvironmentCrashedError`."""
        from py4j.protocol import Py4JError

        if self.broken or self.process.poll() is not None:
            raise EnvironmentCrashedError(self._describe("the JVM is not running"))
        try:
            return fn(*args)
        except Py4JError as exc:
            self.broken = True  # a Java exception may leave the simulator half-updated: start afresh
            raise EnvironmentCrashedError(self._describe(f"{type(exc).__name__}: {str(exc)[:300]}")) from exc

    def _describe(self, what: str) -> str:
        code = self.process.poll()
        status = f"JVM pid {self.pid} exited with code {code}" if code is not None else f"JVM pid {self.pid}"
        tail = " | ".join(line.strip() for line in list(self.stderr)[-5:] if line.strip())
        return f"{what} ({status}{'; stderr: ' + tail if tail else ''})"

    def close(self) -> None:
        """Stop the JVM and wait for it (idempotent)."""
        self.broken = True
        self._finalizer()


def quiet_py4j() -> None:
    """Silence py4j's connection-retry tracebacks, which a JVM crash logs at ERROR level.

    The crash is reported to the caller as :class:`EnvironmentCrashedError`; the log
    lines only repeat it.  Applied to py4j's own logger, once.
    """
    logger = logging.getLogger("py4j.java_gateway")
    if not any(isinstance(f, _DropConnectionErrors) for f in logger.filters):
        logger.addFilter(_DropConnectionErrors())


class _DropConnectionErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "error occurred while trying to connect to the Java server" not in record.getMessage()


def cached_json(namespace: str, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON result, stored under ``<cache>/<namespace>/<name>.json`` after the first call.

    Used for facts that need a JVM to learn but never change for a given simulator
    version (task lists and their splits), so that building an environment does not
    start a JVM.
    """
    folder = cache_dir(namespace)
    target = folder / f"{name}.json"
    if target.exists():
        return json.loads(target.read_text())
    with file_lock(folder / f".{name}.lock"):
        if target.exists():
            return json.loads(target.read_text())
        value = compute()
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(target)
    return value
