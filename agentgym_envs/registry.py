"""The ``agentgym/`` namespace: which environments exist, and how ``gym.make`` builds them.

Every family module exposes ``FAMILY`` (a :class:`Family`) and ``registrations()``
(a list of :class:`Registration`).  Family modules are found through the ``"agentgym_envs.families"``
entry-point group (:data:`ENTRY_POINT_GROUP`), so another package can add a family by declaring one
(see ``docs/environments.md``); :func:`register_all` hands them to Gymnasium; ``import agentgym_envs``
calls it.

``gym.make`` goes through :func:`make_env`, which checks the family's optional
dependencies (raising :class:`~agentgym_envs.errors.MissingDependencyError` that
names the extra to install), builds the environment and applies the reward
wrappers chosen by keyword:

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/TextWorld-w2-o3-q4-v0", split="test",
    ...                reward="dense", step_penalty=0.01, format_penalty=0.1)  # doctest: +SKIP
    >>> [row.env_id for row in agentgym_envs.list_environments()][:1]  # doctest: +SKIP
    ['agentgym/TextWorld-w2-o3-q4-v0']
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import gymnasium as gym

from agentgym_envs.errors import MissingDependencyError, install_command

NAMESPACE = "agentgym"
REMOTE_ENV_ID = f"{NAMESPACE}/Remote-v0"

#: The entry-point group that names family modules: ``name = "package.module"`` in a package's metadata.
ENTRY_POINT_GROUP = "agentgym_envs.families"
#: Where a family's environments step by default (:attr:`Family.worker`).
FAMILY_WORKERS = ("inprocess", "process")
#: A worker's deadline for one ``reset`` or ``step`` when the family names none (:attr:`Family.step_timeout_s`), by
#: where the family steps: pure-Python families answer in milliseconds, so a minute is only ever reached by a hung
#: environment; simulators and browsers (``"process"``) may rebuild a JVM or a browser inside a reset.
DEFAULT_STEP_TIMEOUT_S: dict[str, float] = {"inprocess": 60.0, "process": 300.0}

#: This package's own family modules, by entry-point name.  ``pyproject.toml`` declares the same entries in
#: :data:`ENTRY_POINT_GROUP` (a test keeps the two equal), but the package reads them from here: the entry
#: points of an installed distribution are the metadata written when it was installed, so an editable
#: install made before a family was added (or renamed) would miss it (or fail to import the old name), and
#: a source checkout on ``PYTHONPATH`` has no metadata at all.  Entry points of this package's own
#: distribution are therefore skipped, and only other packages' entry points are loaded.
BUILTIN_FAMILIES: dict[str, str] = {
    "alfworld": "agentgym_envs.families.alfworld",
    "babyai": "agentgym_envs.families.babyai",
    "deepsearch": "agentgym_envs.families.deepsearch",
    "scienceworld": "agentgym_envs.families.scienceworld",
    "textcraft": "agentgym_envs.families.textcraft",
    "textworld": "agentgym_envs.families.textworld",
    "textworld_express": "agentgym_envs.families.textworld_express",
    "miniwob": "agentgym_envs.families.web.miniwob",
    "webshop": "agentgym_envs.families.web.shop",
    "swe": "agentgym_envs.families.swe",
    "webarena": "agentgym_envs.families.web.webarena",
}
DISTRIBUTION = "agentgym-envs"


@dataclass(frozen=True)
class Family:
    """An environment family: its optional dependencies, splits, and where its environments step.

    Args:
        name: the family's name (``info["family"]``).
        extra: the ``pip install 'agentgym-envs[<extra>]'`` that installs its dependencies (a third-party
            family names its own package's extra or install command here).
        requires: import names of its dependencies (checked by :meth:`check` when an environment is built).
        splits: its task splits.
        description: one line for ``agentgym list``.
        worker: where its environments step when the trainer or the leaderboard choose (``env_workers="auto"``,
            :func:`agentgym_envs.workers.default_worker_kind`): ``"process"`` for families whose steps cost
            more than a trip through a pipe (a JVM simulator, a browser), ``"inprocess"`` (default) otherwise.
        step_timeout_s: the longest one ``reset`` or ``step`` may take in a worker process or a Ray actor before the
            episode ends with ``truncation_reason="time_limit"`` (``None``: :data:`DEFAULT_STEP_TIMEOUT_S` of
            ``worker``).  :func:`agentgym_envs.workers.make_workers` uses it when no ``timeout_s`` is given.

    Example:
        >>> Family("textworld", extra="textworld", requires=("textworld",)).installed()  # doctest: +SKIP
        True
        >>> Family("myfamily", extra="myfamily", worker="process").worker
        'process'
        >>> Family("myfamily", extra="myfamily").step_timeout_s
        60.0
        >>> Family("slow", extra="slow", step_timeout_s=900).step_timeout_s
        900.0
    """

    name: str
    extra: str
    requires: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "valid", "test")
    description: str = ""
    worker: str = "inprocess"
    step_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.worker not in FAMILY_WORKERS:
            raise ValueError(
                f"Family {self.name!r}: worker must be one of {', '.join(FAMILY_WORKERS)}, got {self.worker!r}"
            )
        timeout = DEFAULT_STEP_TIMEOUT_S[self.worker] if self.step_timeout_s is None else self.step_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"Family {self.name!r}: step_timeout_s must be a number of seconds > 0, got {timeout!r}")
        object.__setattr__(self, "step_timeout_s", float(timeout))  # frozen: the derived default is set once

    def missing(self) -> list[str]:
        """Import names of the family's dependencies that are not installed."""
        return [mod for mod in self.requires if importlib.util.find_spec(mod) is None]

    def installed(self) -> bool:
        return not self.missing()

    def check(self) -> None:
        """Raise :class:`MissingDependencyError` if a dependency is missing."""
        missing = self.missing()
        if missing:
            raise MissingDependencyError(self.name, self.extra, missing)


@dataclass(frozen=True)
class Registration:
    """One registered environment id.

    ``entry_point`` is ``"module:Class"`` of a :class:`~agentgym_envs.core.TextEnv`;
    ``kwargs`` are its constructor defaults for this id.
    """

    name: str
    family: Family
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def env_id(self) -> str:
        return f"{NAMESPACE}/{self.name}-v0"


@dataclass(frozen=True)
class EnvironmentRow:
    """A line of :func:`list_environments`."""

    env_id: str
    family: str
    splits: tuple[str, ...]
    installed: bool
    extra: str
    description: str


def family_modules() -> list[ModuleType]:
    """Every family module: this package's own (:data:`BUILTIN_FAMILIES`), then other packages' by entry-point name.

    Another package's entry point that cannot be imported, or whose module declares no ``registrations()``,
    is left out with a warning (one broken plugin does not break ``import agentgym_envs``).

    Example:
        >>> [module.__name__ for module in family_modules()][:2]
        ['agentgym_envs.families.alfworld', 'agentgym_envs.families.babyai']
    """
    modules = [importlib.import_module(name) for name in BUILTIN_FAMILIES.values()]
    for entry_point in sorted(_foreign_entry_points(), key=lambda ep: ep.name):
        try:
            module = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not raised
            _warn_once(entry_point, f"was not loaded: {type(exc).__name__}: {exc}")
            continue
        if not callable(getattr(module, "registrations", None)):
            _warn_once(entry_point, "names no module with registrations(); it was left out")
            continue
        if module not in modules:
            modules.append(module)
    return modules


_WARNED: set[tuple[str, str]] = set()


def _warn_once(entry_point: importlib.metadata.EntryPoint, problem: str) -> None:
    """Warn about a broken family entry point once per process (families are listed again on every call)."""
    if (entry_point.name, entry_point.value) not in _WARNED:
        _WARNED.add((entry_point.name, entry_point.value))
        warnings.warn(f"family entry point {entry_point.name!r} ({entry_point.value}) {problem}", stacklevel=3)


def _foreign_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The :data:`ENTRY_POINT_GROUP` entry points of other distributions than this package's own."""
    found = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        own = dist is not None and _canonical(dist.metadata["Name"] or "") == DISTRIBUTION
        if not own and entry_point.value not in BUILTIN_FAMILIES.values():
            found.append(entry_point)
    return found


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def all_registrations() -> list[Registration]:
    """Every environment of every family, installed or not."""
    regs: list[Registration] = []
    for module in family_modules():
        regs.extend(module.registrations())
    return regs


_BY_ID: dict[str, Registration] = {}


def register_all() -> None:
    """Register every family under ``agentgym/`` with Gymnasium (idempotent)."""
    for reg in all_registrations():
        _BY_ID[reg.env_id] = reg
        if reg.env_id in gym.registry:
            continue
        gym.register(
            id=reg.env_id,
            entry_point="agentgym_envs.registry:make_env",
            kwargs={"env_id": reg.env_id},
            disable_env_checker=False,
            max_episode_steps=step_limit(reg),
        )
    if REMOTE_ENV_ID not in gym.registry:
        # An environment served by `agentgym serve` (agentgym_envs.remote); openenv is imported on use only.
        gym.register(id=REMOTE_ENV_ID, entry_point="agentgym_envs.remote.client:RemoteEnv", disable_env_checker=False)


def step_limit(reg: Registration) -> int | None:
    """The default step limit of a registered id (``gym.spec(id).max_episode_steps``); ``None`` if it varies by task.

    Example:
        >>> step_limit(registration("agentgym/TextCraft-v0"))
        30
    """
    return _env_class(reg).registered_step_limit(**reg.kwargs)


def _env_class(reg: Registration) -> Any:
    module_name, class_name = reg.entry_point.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def registration(env_id: str) -> Registration:
    """The :class:`Registration` of ``env_id``.

    An unknown id raises ``gymnasium.error.UnregisteredEnv`` with a hint: the id with the
    ``agentgym/`` namespace it lacks, close matches, or the extra that installs a family whose
    ids are only all known once its package is installed.

    Example:
        >>> registration("agentgym/TextCraft-v0").family.name
        'textcraft'
        >>> registration("TextCraft-v0")
        Traceback (most recent call last):
        ...
        gymnasium.error.UnregisteredEnv: 'TextCraft-v0' is not an agentgym environment id; did you mean 'agentgym/TextCraft-v0'? ...
    """
    if not _BY_ID:
        register_all()
    if env_id not in _BY_ID:
        raise gym.error.UnregisteredEnv(unknown_id_message(env_id))
    return _BY_ID[env_id]


def unknown_id_message(env_id: str) -> str:
    """Why ``env_id`` is not an agentgym environment, and what the user probably meant."""
    if not _BY_ID:
        register_all()
    name = env_id.split("/", 1)[1] if env_id.startswith(f"{NAMESPACE}/") else env_id
    for guess in (f"{NAMESPACE}/{name}", f"{NAMESPACE}/{name}-v0"):
        if guess in _BY_ID:
            return (
                f"{env_id!r} is not an agentgym environment id; did you mean {guess!r}? "
                f"agentgym's environments live in the {NAMESPACE!r} namespace (see `agentgym list`)"
            )
    message = f"{env_id!r} is not an agentgym environment id"
    # A family whose ids share the name's first word, e.g. MiniWoB-<task>: without its package only
    # part of its ids may be known (MiniWoB lists its tasks from the installed miniwob package).
    head = name.split("-")[0]
    families = {reg.family for reg in _BY_ID.values() if reg.name.split("-")[0] == head}
    missing = [family for family in families if not family.installed()]
    if missing:
        family = missing[0]
        message += (
            f"; the {family.name!r} family is not installed, and some of its ids are only known once it is: "
            f"{install_command(family.extra)}"
        )
    names = {known.split("/", 1)[1]: known for known in _BY_ID}  # compared without the shared namespace
    close = difflib.get_close_matches(name, list(names), n=3)
    if close:
        message += f"; close matches: {', '.join(names[c] for c in close)}"
    return message + " (see `agentgym list`)"


def list_environments(family: str | None = None) -> list[EnvironmentRow]:
    """Registered environments with family, splits and whether their dependencies are installed.

    Example:
        >>> rows = list_environments("textworld")  # doctest: +SKIP
        >>> rows[0].installed                       # doctest: +SKIP
        True
    """
    rows = []
    for reg in all_registrations():
        if family is not None and reg.family.name != family:
            continue
        rows.append(
            EnvironmentRow(
                env_id=reg.env_id,
                family=reg.family.name,
                splits=reg.family.splits,
                installed=reg.family.installed(),
                extra=reg.family.extra,
                description=reg.description,
            )
        )
    return rows


def make_env(
    env_id: str,
    reward: str = "sparse",
    step_penalty: float = 0.0,
    format_penalty: float = 0.0,
    **env_kwargs: Any,
) -> gym.Env:
    """Build a registered environment with its reward wrappers (what ``gym.make`` calls).

    Args:
        env_id: a registered id, e.g. ``"agentgym/TextWorld-w2-o3-q4-v0"``.
        reward: ``"sparse"`` (1 on success at the end), ``"dense"`` (progress deltas
            normalized by the maximum score) or ``"native"`` (the family's raw score deltas).
        step_penalty: subtracted on every step.
        format_penalty: subtracted when the action text could not be parsed.
        **env_kwargs: constructor arguments of the family (split, seed_range, max_steps, ...).
    """
    from agentgym_envs.wrappers import apply_reward_wrappers

    reg = registration(env_id)
    reg.family.check()
    env = _env_class(reg)(**{**reg.kwargs, **env_kwargs})
    time_limit = _time_limit_of_calling_gym_make()
    if time_limit is not None and env.max_steps > time_limit:
        warnings.warn(
            f"{env_id}: max_steps={env.max_steps} is above the registered step limit, and gym.make still wraps the "
            f"environment in TimeLimit({time_limit}), which ends episodes at step {time_limit}; pass "
            f"max_episode_steps={env.max_steps} to gym.make as well, or use agentgym_envs.make(), which does",
            stacklevel=3,
        )
    return apply_reward_wrappers(env, reward=reward, step_penalty=step_penalty, format_penalty=format_penalty)


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a step limit that is never cut: ``max_steps=N`` also sets gym's ``max_episode_steps=N``.

    ``gym.make`` wraps every id in a ``TimeLimit`` of its registered step limit; an explicit
    ``max_steps`` above it would otherwise be cut there (``gym.make`` warns).  An unknown id gets the
    registry's hint (the ``agentgym/`` namespace, close matches, the extra to install).  The command
    line and the leaderboard build their environments with this.

    Example:
        >>> import agentgym_envs
        >>> env = agentgym_envs.make("agentgym/TextCraft-v0", split="test", max_steps=40)
        >>> env.spec.max_episode_steps, env.unwrapped.max_steps
        (40, 40)
    """
    if env_id != REMOTE_ENV_ID:  # the remote client's id stands for whichever environment its server holds
        registration(env_id)
    return gym.make(env_id, **with_step_limit(kwargs))


def with_step_limit(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``gym.make`` keywords in which an explicit ``max_steps=N`` also sets ``max_episode_steps=N`` (a copy).

    What :func:`make` passes to ``gym.make``; for callers that hand keywords to something that calls
    ``gym.make`` itself (worker processes, for instance).

    Example:
        >>> with_step_limit({"split": "test", "max_steps": 40})
        {'split': 'test', 'max_steps': 40, 'max_episode_steps': 40}
    """
    kwargs = dict(kwargs)
    if kwargs.get("max_steps") is not None and kwargs.get("max_episode_steps") is None:
        kwargs["max_episode_steps"] = int(kwargs["max_steps"])
    return kwargs


def _time_limit_of_calling_gym_make() -> int | None:
    """The ``TimeLimit`` that ``gym.make`` will put around the environment :func:`make_env` is building.

    ``gym.make`` consumes its ``max_episode_steps`` argument and adds the wrapper only after the
    entry point returns, so the entry point cannot see it; it is read from ``gym.make``'s frame
    (``None`` when ``make_env`` was called directly, or by a Gymnasium whose ``make`` differs).
    """
    from gymnasium.envs import registration as gym_registration

    frame = sys._getframe(2)  # _time_limit_of_calling_gym_make <- make_env <- (gym.make?)
    if frame.f_code is not gym_registration.make.__code__:
        return None
    steps = frame.f_locals.get("max_episode_steps")
    if steps is None:
        spec = frame.f_locals.get("env_spec")
        steps = getattr(spec, "max_episode_steps", None)
    return int(steps) if isinstance(steps, int) and steps > 0 else None
