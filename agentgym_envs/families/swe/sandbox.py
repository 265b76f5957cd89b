"""A bubblewrap sandbox for one shell command: no network, the system read-only, one writable folder, limits.

Every command of a software-engineering episode (the agent's and the grader's test runs) goes
through :meth:`Sandbox.run`.  Inside the sandbox:

* the network is a fresh, empty namespace (no interfaces but loopback);
* ``/usr``, ``/bin``, ``/lib*``, ``/sbin`` and ``/etc`` are mounted read-only, and nothing else of the
  host is visible (no home folder, no ``/tmp``, no ``/work``, no cache, no other episode): a fresh
  ``/tmp`` and the episode's folder (read-write) are the only writable places;
* the Python interpreter's site-packages are hidden (tests run with ``python -S`` and an explicit
  ``PYTHONPATH``), so an installed copy of the package under repair cannot stand in for it;
* limits per command: wall time (the whole process tree is killed), CPU seconds, address space,
  processes (counted inside the sandbox's own user namespace), file size, open files and output bytes;
* the command runs in its own PID namespace, so every process it started dies with it.

When the calling process is root, bubblewrap runs without a user namespace and the command runs as an
unprivileged user id of its own (``setpriv``; ids from :data:`SANDBOX_UIDS`, one per sandbox folder):
root is exempt from the process-count limit, and a fork bomb must not take the machine.  Other callers
run bubblewrap in a user namespace, in which the process-count limit counts only the sandbox's processes.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> box = Sandbox(Path(tempfile.mkdtemp()))       # doctest: +SKIP
    >>> box.run("echo hi > f && cat f").output        # doctest: +SKIP
    'hi\\n'
"""

from __future__ import annotations

import hashlib
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentgym_envs.errors import MissingDependencyError

#: Host folders the sandbox sees, read-only (those that exist).
SYSTEM_PATHS = ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/etc")
#: The user ids a root caller's commands run as: one per sandbox folder, so that each sandbox has its own process count.
SANDBOX_UIDS = range(200_000, 260_000)


class SandboxUnavailableError(MissingDependencyError):
    """bubblewrap is not installed or cannot create its namespaces here; the family refuses to run unsandboxed.

    Example:
        >>> str(SandboxUnavailableError("bwrap not found")).startswith("The 'swe' environments need bubblewrap")
        True
    """

    def __init__(self, why: str):
        ImportError.__init__(
            self,
            f"The 'swe' environments need bubblewrap (a sandbox for the agent's commands) and it is unusable: {why}. "
            "Install it with: apt-get install -y bubblewrap",
        )
        self.family, self.extra, self.missing = "swe", "swe", ["bubblewrap"]


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed command.

    Example:
        >>> SandboxLimits(wall_time_s=5).wall_time_s
        5
    """

    #: Wall-clock seconds before the whole process tree is killed.
    wall_time_s: float = 30.0
    #: CPU seconds (``RLIMIT_CPU``).
    cpu_time_s: int = 60
    #: Address space in bytes (``RLIMIT_AS``).
    memory_bytes: int = 2 << 30
    #: Processes and threads inside the sandbox (``RLIMIT_NPROC`` in the sandbox's user namespace).
    processes: int = 64
    #: Largest file a command may write (``RLIMIT_FSIZE``).
    file_size_bytes: int = 64 << 20
    #: Open file descriptors (``RLIMIT_NOFILE``).
    open_files: int = 256
    #: Output bytes read before the command is killed (what is kept for the observation is cut further).
    output_bytes: int = 1 << 20


@dataclass
class CommandResult:
    """What one sandboxed command did.

    ``stopped`` says why the sandbox killed it (``"time_limit"``, ``"output_limit"``), else ``None``.
    """

    output: str
    exit_code: int | None
    stopped: str | None = None
    seconds: float = 0.0


def bwrap_path() -> str | None:
    """The bubblewrap executable, or ``None`` if it is not installed."""
    return shutil.which("bwrap")


_CHECKED: dict[int, str | None] = {}


def check_sandbox() -> None:
    """Raise :class:`SandboxUnavailableError` unless bubblewrap can start a sandbox here (checked once per uid).

    Example:
        >>> check_sandbox()  # doctest: +SKIP
    """
    uid = os.geteuid()
    if uid not in _CHECKED:
        _CHECKED[uid] = _probe()
    if _CHECKED[uid] is not None:
        raise SandboxUnavailableError(_CHECKED[uid])


def _probe() -> str | None:
    if bwrap_path() is None:
        return "the bwrap executable is not on PATH"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentgym-swe-probe-") as tmp:
        box = Sandbox(Path(tmp), SandboxLimits(wall_time_s=20))
        box.own(Path(tmp))
        result = box.run("echo ok")
    if result.exit_code != 0 or result.output.strip() != "ok":
        return f"a test command failed ({result.output.strip()[-300:] or result.stopped or result.exit_code})"
    return None


def _under_system(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in SYSTEM_PATHS)


def _hidden_site_paths() -> list[str]:
    """The interpreter's site-packages folders (hidden in the sandbox so that tests see only PYTHONPATH)."""
    paths = {
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})[key]
        for key in ("purelib", "platlib")
    }
    return sorted(p for p in paths if os.path.isdir(p))


@dataclass
class Sandbox:
    """Runs shell commands under bubblewrap with ``root`` as the only writable folder (and the working directory).

    Args:
        root: the episode's folder, bound read-write at the same path inside the sandbox.
        limits: the per-command :class:`SandboxLimits`.
        read_only: further host folders to show read-only (e.g. the test runner's site folder).
        env: environment variables of every command (``PATH``, ``HOME`` and ``LANG`` are set already).

    Example:
        >>> Sandbox(Path("/tmp/episode")).limits.processes  # doctest: +SKIP
        64
    """

    root: Path
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    read_only: Sequence[Path] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def uid(self) -> int | None:
        """The user id commands run as when the caller is root (``None`` otherwise: they run as the caller)."""
        if os.geteuid() != 0:
            return None
        digest = hashlib.sha256(str(self.root).encode()).digest()
        return SANDBOX_UIDS[int.from_bytes(digest[:4], "big") % len(SANDBOX_UIDS)]

    def own(self, path: Path) -> None:
        """Give ``path`` (a folder tree) to the sandbox's user, so that commands can write there (a no-op unless root)."""
        uid = self.uid
        if uid is None:
            return
        for folder, dirs, files in os.walk(path):
            os.chown(folder, uid, uid)
            for name in dirs + files:
                os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)

    def argv(self, command: str, cwd: Path | None = None) -> list[str]:
        """The bubblewrap command line that runs ``command`` with ``bash``."""
        bwrap = bwrap_path() or "bwrap"
        uid = self.uid
        if uid is None:
            args = [bwrap, "--unshare-all", "--cap-drop", "ALL"]
        else:  # root: no user namespace (its uid would map to root), setpriv drops to the sandbox's own uid
            args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--die-with-parent", "--new-session"]
        for path in SYSTEM_PATHS:
            if os.path.lexists(path):
                # /bin and /lib are often links into /usr; a symlink keeps them links.
                args += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        prefix = os.path.realpath(sys.base_prefix)
        binds = [] if _under_system(prefix) else [("--ro-bind", prefix)]
        binds += [("--ro-bind", str(path)) for path in self.read_only] + [("--bind", str(self.root))]
        # Folders bubblewrap would create on the way to a bind are not always readable by the sandbox's user.
        made: set[str] = set()
        for _, target in binds:
            for parent in reversed(Path(target).parents):
                name = str(parent)
                if name != "/" and name not in made and not _under_system(name):
                    made.add(name)
                    args += ["--perms", "0755", "--dir", name]
        for kind, target in binds:
            args += [kind, target, target]
        for site in _hidden_site_paths():
            args += ["--tmpfs", site]
        args += ["--chdir", str(cwd or self.root)]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            **self.env,
        }
        args += ["--clearenv"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        # The process limit is set inside the sandbox's user namespace, where it counts only the sandbox's processes.
        inner = f'ulimit -u {int(self.limits.processes)}; exec /bin/bash -c "$0"'
        if uid is not None:
            drop = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ]
            return [*args, *drop, "--", "/bin/bash", "-c", inner, command]
        return [*args, "/bin/bash", "-c", inner, command]

    def run(self, command: str, cwd: Path | None = None) -> CommandResult:
        """Run ``command`` (a ``bash -c`` string); never raises for what the command does."""
        limits = self.limits
        start = time.monotonic()
        process = subprocess.Popen(
            self.argv(command, cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _apply_limits(limits),
        )
        chunks: list[bytes] = []
        size = 0
        stopped = None
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = start + limits.wall_time_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stopped = "time_limit"
                    break
                if not selector.select(timeout=min(remaining, 1.0)):
                    continue
                data = os.read(process.stdout.fileno(), 65536)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
                if size > limits.output_bytes:
                    stopped = "output_limit"
                    break
        if stopped is not None:
            _kill_group(process)
        process.stdout.close()
        exit_code = _wait(process)
        output = b"".join(chunks).decode("utf-8", "replace")
        return CommandResult(output, None if stopped else exit_code, stopped, time.monotonic() - start)


def _apply_limits(limits: SandboxLimits) -> None:
    for kind, value in (
        (resource.RLIMIT_CPU, int(limits.cpu_time_s)),
        (resource.RLIMIT_AS, int(limits.memory_bytes)),
        (resource.RLIMIT_FSIZE, int(limits.file_size_bytes)),
        (resource.RLIMIT_NOFILE, int(limits.open_files)),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(kind, (value, value))


def _kill_group(process: subprocess.Popen) -> None:
    # bwrap's PID namespace dies with its first process (--die-with-parent), taking every descendant with it.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return process.wait()
