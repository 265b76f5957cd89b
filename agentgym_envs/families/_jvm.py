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

:class:`Simulator` names such a package and starts its JVM; :class:`JVMTextEnv` is the
environment base both families share: it owns the JVM's lifecycle (started at the first
reset, restarted after a crash, stopped by ``close``), follows the simulator's gold path
for the expert, and :meth:`Simulator.splits` fetches (once, then from the cache) the
simulator's own train / dev / test numbers.

Example:
    >>> from scienceworld.constants import JAR_PATH, BASEPATH          # doctest: +SKIP
    >>> jvm = JavaProcess(JAR_PATH, BASEPATH, JVMConfig(max_memory_mb=512))  # doctest: +SKIP
    >>> server = jvm.new("scienceworld.runtime.pythonapi.PythonInterface")   # doctest: +SKIP
    >>> names = jvm.call(server.getTaskNames)                           # doctest: +SKIP
    >>> jvm.close()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import abc
import collections
import importlib
import json
import logging
import os
import subprocess
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from agentgym_envs.cache import build_once, cache_dir
from agentgym_envs.core import TaskStart, TextEnv, gold_path_position
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
        if isinstance(self.max_memory_mb, bool) or not isinstance(self.max_memory_mb, int):
            raise TypeError(f"max_memory_mb must be an int (megabytes), not {type(self.max_memory_mb).__name__}")
        if self.max_memory_mb < 64:
            raise ValueError(f"max_memory_mb must be >= 64, got {self.max_memory_mb}")
        physical = _physical_memory_mb()
        if physical is not None and self.max_memory_mb > physical:
            raise ValueError(f"max_memory_mb={self.max_memory_mb} is over this machine's memory ({physical} MB)")
        if self.call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be > 0, got {self.call_timeout_s}")

    def options(self) -> list[str]:
        # The JVM's default collector: -XX:+UseSerialGC stepped ScienceWorld ~30% slower here.
        return [f"-Xmx{self.max_memory_mb}m", *self.extra_options]


def _physical_memory_mb() -> int | None:
    """This machine's memory in MB (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (AttributeError, ValueError, OSError):
        return None


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
    target = build_once(
        folder / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(compute())), lock=folder / f".{name}.lock"
    )
    return json.loads(target.read_text())


#: Our split names -> the suffix of the simulators' getters (``getVariationsDev``, ``getSeedsTest``, ...).
_SPLIT_GETTERS = {"train": "Train", "valid": "Dev", "test": "Test"}


@dataclass(frozen=True)
class Simulator:
    """A simulator shipped as a Python package with its jar (``<package>.constants.JAR_PATH``).

    Args:
        package: the Python package, e.g. ``"scienceworld"``; also the cache namespace of its splits.
        server_class: the Java class Python talks to.

    Example:
        >>> sim = Simulator("scienceworld", "scienceworld.runtime.pythonapi.PythonInterface")
        >>> jvm, server = sim.start(JVMConfig(max_memory_mb=512))  # doctest: +SKIP
        >>> jvm.call(server.getTaskNames)[0]                         # doctest: +SKIP
        'boil'
        >>> jvm.close()                                              # doctest: +SKIP
    """

    package: str
    server_class: str

    def start(self, config: JVMConfig) -> tuple[JavaProcess, Any]:
        """A new JVM and an instance of :attr:`server_class` on it (the JVM is stopped if that fails)."""
        constants = importlib.import_module(f"{self.package}.constants")
        quiet_py4j()
        jvm = JavaProcess(constants.JAR_PATH, constants.BASEPATH, config)
        try:
            return jvm, jvm.new(self.server_class)
        except BaseException:
            jvm.close()
            raise

    def splits(
        self,
        cache_name: str,
        config: JVMConfig,
        names: Callable[[JavaProcess, Any], Iterable[str]],
        load: Callable[[JavaProcess, Any, str], None],
        getter: str,
    ) -> dict[str, dict[str, list[int]]]:
        """The simulator's own train / valid / test numbers of every task: ``{task: {"train": [...], ...}}``.

        Asked of a JVM once per simulator version (``load`` prepares each of ``names``; ``getter`` is the
        prefix of the three Java getters, e.g. ``"getSeeds"`` for ``getSeedsTrain/Dev/Test``), then read
        from ``<cache>/<package>/<cache_name>-<version>.json``.
        """
        version = importlib.import_module(f"{self.package}.version").__version__

        def compute() -> dict[str, dict[str, list[int]]]:
            jvm, server = self.start(config)
            try:
                out = {}
                for name in names(jvm, server):
                    load(jvm, server, name)
                    out[str(name)] = {
                        ours: [int(v) for v in jvm.call(getattr(server, getter + theirs))]
                        for ours, theirs in _SPLIT_GETTERS.items()
                    }
                return out
            finally:
                jvm.close()

        return cached_json(self.package, f"{cache_name}-{version}", compute)


class JVMTextEnv(TextEnv):
    """A :class:`~agentgym_envs.core.TextEnv` whose simulator runs in a JVM it owns.

    The JVM starts at the first reset (building the environment starts none), a reset after
    a crash starts a fresh one, a reset that finds the JVM dead retries once on a fresh one,
    and :meth:`close` stops it.  The expert follows the simulator's gold path (``_gold``)
    while the episode's executed commands (``_moves``, each with whether it was a no-op) have.

    A subclass sets :attr:`simulator` and implements :meth:`_open_episode` (load the task on
    ``self._server`` through :meth:`_call`; set ``self._gold`` when ``self.want_expert``) and
    :meth:`_regenerate_with_gold`, plus ``_execute`` (appending to ``self._moves``).

    Example:
        >>> env = ScienceWorldEnv("boil", split="test")  # doctest: +SKIP
        >>> env.jvm_pid is None                          # doctest: +SKIP
        True
        >>> _ = env.reset(seed=0); env.close()           # doctest: +SKIP
    """

    simulator: ClassVar[Simulator]

    def __init__(self, jvm_config: JVMConfig, **kwargs: Any):
        self.jvm_config = jvm_config
        self._jvm: JavaProcess | None = None
        self._server: Any = None
        self._gold: list[str] | None = None
        self._moves: list[tuple[str, bool]] = []  # executed commands, each with whether it was a no-op
        super().__init__(**kwargs)

    # ---- the JVM -------------------------------------------------------------------
    def _ensure_jvm(self) -> None:
        if self._jvm is not None and self._jvm.alive:
            return
        if self._jvm is not None:
            self._jvm.close()  # crashed or broken: a fresh JVM for the new episode
        self._jvm, self._server = self.simulator.start(self.jvm_config)
        self._forget_loaded()

    def _forget_loaded(self) -> None:
        """Called on a new JVM: drop whatever the subclass remembers having loaded into the old one."""

    def _call(self, method: str, *args: Any) -> Any:
        assert self._jvm is not None
        return self._jvm.call(getattr(self._server, method), *args)

    @property
    def jvm_pid(self) -> int | None:
        """The process id of this environment's JVM, or ``None`` when none is running."""
        return self._jvm.pid if self._jvm is not None and self._jvm.alive else None

    def close(self) -> None:
        if self._jvm is not None:
            self._jvm.close()
            self._jvm = None
            self._server = None
        super().close()

    # ---- episodes ------------------------------------------------------------------
    def _start(self, task_id: Hashable) -> TaskStart:
        self._moves = []
        try:
            self._ensure_jvm()
            return self._open_episode(task_id)
        except EnvironmentCrashedError:
            # Once more with a fresh JVM; a second failure escapes (see EnvironmentCrashedError).
            self._ensure_jvm()
            return self._open_episode(task_id)

    @abc.abstractmethod
    def _open_episode(self, task_id: Hashable) -> TaskStart:
        """Load ``task_id`` on the running JVM and describe its start."""

    @abc.abstractmethod
    def _regenerate_with_gold(self) -> None:
        """Load this episode's task again with its gold path (setting ``_gold``) and replay its commands."""

    def _expert(self) -> str | None:
        if self._gold is None:
            self._regenerate_with_gold()
        assert self._gold is not None
        position = gold_path_position(self._moves, self._gold)
        if position is not None and position < len(self._gold):
            return self._gold[position]
        return None
