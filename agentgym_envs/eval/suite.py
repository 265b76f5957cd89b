"""Leaderboard suites: which environments, how many held-out test tasks each, how many samples per task.

A *suite* is a list of environments, each with a fixed number of held-out test tasks (the first tasks of
its test split) and ``samples`` episodes per task (for pass@k).  :func:`load_suite` reads the built-in
suites (``quick``, ``full``) or a JSON suite file.

Example:
    >>> from agentgym_envs.eval.suite import load_suite
    >>> suite = load_suite("quick", tasks=1)
    >>> suite.name, suite.entries[0].tasks
    ('quick', 1)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym_envs.errors import SuiteError


@dataclass(frozen=True)
class SuiteEntry:
    """One environment of a suite: ``tasks`` held-out test tasks, with optional constructor keywords.

    Example:
        >>> SuiteEntry("agentgym/TextCraft-v0", tasks=2, kwargs={"max_steps": 10}).tasks
        2
    """

    env_id: str
    tasks: int = 5
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A named list of environments, with ``samples`` episodes per task (pass@k uses k = samples).

    Example:
        >>> Suite("mine", (SuiteEntry("agentgym/TextWorld-w2-o3-q4-v0", tasks=3),)).entries[0].tasks
        3
    """

    name: str
    entries: tuple[SuiteEntry, ...]
    samples: int = 1


#: The quick suite: a few minutes on a laptop CPU with the default policies (step limits cut so that a
#: small model that never succeeds does not dominate the time).
QUICK = (
    SuiteEntry("agentgym/TextWorld-w2-o3-q4-v0", tasks=2),
    SuiteEntry("agentgym/TextCraft-v0", tasks=2, kwargs={"max_steps": 10}),
    SuiteEntry("agentgym/BabyAI-GoToRedBall-v0", tasks=2, kwargs={"max_steps": 10}),
    SuiteEntry("agentgym/TWX-coin-v0", tasks=2, kwargs={"max_steps": 20}),
    SuiteEntry("agentgym/DeepSearch-h1-v0", tasks=2, kwargs={"max_steps": 10}),
)


def load_suite(name_or_path: str, tasks: int | None = None, samples: int | None = None) -> Suite:
    """``"quick"``, ``"full"`` (every registered environment whose dependencies are installed), or a JSON file.

    A suite file looks like ``{"name": "mine", "samples": 2, "environments": [{"env_id":
    "agentgym/TextWorld-w2-o3-q4-v0", "tasks": 10, "kwargs": {"max_steps": 20}}]}``.
    ``tasks`` and ``samples`` override the suite's values.

    Example:
        >>> load_suite("quick", samples=3).samples
        3
    """
    import agentgym_envs

    if name_or_path == "quick":
        suite = Suite("quick", QUICK)
    elif name_or_path == "full":
        entries = tuple(SuiteEntry(r.env_id, tasks=20) for r in agentgym_envs.list_environments() if r.installed)
        suite = Suite("full", entries)
    else:
        suite = _read_suite_file(name_or_path)
    if tasks is not None:
        suite = Suite(suite.name, tuple(SuiteEntry(e.env_id, tasks, e.kwargs) for e in suite.entries), suite.samples)
    if samples is not None:
        suite = Suite(suite.name, suite.entries, samples)
    if suite.samples < 1 or any(e.tasks < 1 for e in suite.entries):
        raise SuiteError("tasks and samples must be >= 1")
    return suite


def _read_suite_file(name_or_path: str) -> Suite:
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix or len(path.parts) > 1:  # written as a path: say that the file is missing
            raise SuiteError(f"the suite file {name_or_path!r} does not exist")
        raise SuiteError(f"no suite named {name_or_path!r}: use 'quick', 'full' or a JSON suite file")
    try:
        spec = json.loads(path.read_text())
        entries = tuple(
            SuiteEntry(e["env_id"], int(e.get("tasks", 5)), dict(e.get("kwargs", {}))) for e in spec["environments"]
        )
        return Suite(str(spec.get("name", path.stem)), entries, int(spec.get("samples", 1)))
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise SuiteError(f"{path} is not a valid suite file: {exc}") from exc
