"""Every error of agentgym-envs, in one tree rooted at :class:`AgentGymError`.

Errors are for *users of the library* (bad configuration, missing optional
dependencies, missing data).  Text produced by a model is never an error: a bad
action becomes an in-episode outcome (see :mod:`agentgym_envs.parsing`); the
:class:`ActionFailed` family of errors is how a family's simulator code says so,
and it is caught inside ``step`` and never escapes.

The tree (each class also derives from the built-in exception it refines)::

    AgentGymError
    ├── MissingDependencyError (ImportError)     an optional dependency is not installed
    ├── DataNotFoundError (FileNotFoundError)    data a family needs cannot be found
    │   └── BrowserNotFoundError                 no Chromium executable
    ├── UnknownSplitError (ValueError)           a split the family does not declare
    ├── UnknownTaskError (ValueError)            a task id not in the environment's task list
    ├── SplitLeakError (AssertionError)          two splits share tasks
    ├── ExpertUnavailableError (RuntimeError)    no expert action in this state (or family)
    ├── EnvironmentCrashedError (RuntimeError)   the simulator (a JVM, a browser) died
    ├── GenerationError (RuntimeError)           a task cannot be generated or loaded
    ├── ActionFailed                             in-episode: an action that cannot be carried out
    │   └── CommandError (ValueError)            in-episode: a TextCraft command that fails
    ├── PolicyError (RuntimeError)               a model policy cannot be built or reached
    ├── SuiteError (ValueError)                  a leaderboard suite that cannot be used
    └── RunLogError (FileNotFoundError)          a run folder without its metrics log

Example:
    >>> import agentgym_envs
    >>> try:
    ...     agentgym_envs.make_env("agentgym/TextCraft-v0", split="nope")
    ... except agentgym_envs.AgentGymError as exc:
    ...     type(exc).__name__
    'UnknownSplitError'
"""

from __future__ import annotations


class AgentGymError(Exception):
    """Base class of every error raised by agentgym-envs."""


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to agentgym-envs *as it was installed here*.

    An editable install from a checkout gets ``pip install -e 'CHECKOUT[extra]'``, an install from a local folder or
    wheel gets that path with the extra, and an install from a package index gets ``pip install 'agentgym-envs[extra]'``
    (read from the distribution's ``direct_url.json``, PEP 610), so the advice works when pasted.

    Example:
        >>> install_command("web").startswith("pip install ")
        True
        >>> install_command("web").endswith("[web]'")
        True
    """
    source = _install_source()
    if source is None:
        return f"pip install 'agentgym-envs[{extra}]'"
    path, editable = source
    return f"pip install {'-e ' if editable else ''}'{path}[{extra}]'"


def _install_source() -> tuple[str, bool] | None:
    """(local path, editable) where agentgym-envs was installed from a folder or a file, else None (an index).

    A checkout may also hold build metadata (``agentgym_envs.egg-info``) that shadows the installed distribution when
    the checkout is on ``sys.path``; the distribution that records where it came from (PEP 610) is the one that says.
    """
    import json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    for dist in distributions(name="agentgym-envs"):
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "null")
        except ValueError:
            continue
        if isinstance(direct, dict) and str(direct.get("url", "")).startswith("file://"):
            dir_info = direct.get("dir_info")
            path = unquote(urlparse(direct["url"]).path)
            return path, bool(isinstance(dir_info, dict) and dir_info.get("editable"))
    return None


class MissingDependencyError(AgentGymError, ImportError):
    """An optional dependency of an environment family is not installed.

    The message names the pip extra that installs it, in the form that works for how the project was installed
    (:func:`install_command`: ``pip install -e 'CHECKOUT[textworld]'`` from a checkout, ``pip install
    'agentgym-envs[textworld]'`` from an index); ``what`` names the part that needs it when that is not an
    environment family (default: "The '<family>' environments").

    Example:
        >>> str(MissingDependencyError("web", "web", ["playwright"])).split(". Install")[0]
        "The 'web' environments need playwright, which is not installed"
    """

    def __init__(self, family: str, extra: str, missing: list[str], what: str | None = None):
        self.family = family
        self.extra = extra
        self.missing = list(missing)
        super().__init__(
            f"{what or f'The {family!r} environments'} need{'s' if what else ''} {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. "
            f"Install them with: {install_command(extra)}"
        )


class UnknownSplitError(AgentGymError, ValueError):
    """A split name that the environment family does not declare."""


class UnknownTaskError(AgentGymError, ValueError):
    """A task id that is not part of the environment's task list."""


class SplitLeakError(AgentGymError, AssertionError):
    """Two splits of one family share tasks (a test task would appear in training)."""


class DataNotFoundError(AgentGymError, FileNotFoundError):
    """Data that an environment family needs (e.g. ALFWorld games) cannot be found."""


class BrowserNotFoundError(DataNotFoundError):
    """No Chromium executable could be found (and none is ever downloaded)."""


class ExpertUnavailableError(AgentGymError, RuntimeError):
    """The expert cannot produce an action in the current state."""


class EnvironmentCrashedError(AgentGymError, RuntimeError):
    """The simulator behind an environment (a JVM, a browser) died.

    Environments catch this inside ``step`` and report the episode as truncated;
    it only escapes from ``reset`` when a restart fails too.
    """


class GenerationError(AgentGymError, RuntimeError):
    """A task cannot be generated or loaded (a world too large for its generator, a game the simulator refuses)."""


class ActionFailed(AgentGymError):
    """An action that cannot be carried out (an in-episode outcome, not a crash).

    A family raises it inside ``_execute`` and turns its message into the observation;
    it never escapes ``step``.
    """


class CommandError(ActionFailed, ValueError):
    """A TextCraft command that fails; its message is the observation."""


class PolicyError(AgentGymError, RuntimeError):
    """A model policy cannot be built or reached (bad model path, missing package, dead endpoint)."""


class SuiteError(AgentGymError, ValueError):
    """A leaderboard suite name or suite file that cannot be used."""


class RunLogError(AgentGymError, FileNotFoundError):
    """A run folder that does not exist or holds no ``metrics.jsonl`` (``agentgym plot``)."""
