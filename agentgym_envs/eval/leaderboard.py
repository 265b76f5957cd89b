"""Deprecated: the leaderboard's names now live in :mod:`agentgym_envs.eval` (split by job).

:mod:`~agentgym_envs.eval.suite` (suites), :mod:`~agentgym_envs.eval.results` (episode records, resume and
merge), :mod:`~agentgym_envs.eval.runner` (:func:`run_leaderboard`) and :mod:`~agentgym_envs.eval.report`
(statistics, tables, chart, dataset export).  Importing a name from here still works, with a
``DeprecationWarning`` that names its new home.

Example:
    >>> from agentgym_envs.eval import load_suite, run_leaderboard   # instead of agentgym_envs.eval.leaderboard
    >>> run_leaderboard(load_suite("quick"), ["random", "expert"], "results/leaderboard")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: Each name this module used to hold, and the module of :mod:`agentgym_envs.eval` that holds it now.
_MOVED = {
    "default_policies": "policies",
    "Suite": "suite",
    "SuiteEntry": "suite",
    "QUICK": "suite",
    "load_suite": "suite",
    "RESULTS_FILE": "results",
    "RECORD_FIELDS": "results",
    "RUN_SETTINGS": "results",
    "ENV_SETTINGS": "results",
    "LoadedResults": "results",
    "read_results": "results",
    "load_results": "results",
    "episode_key": "results",
    "episode_settings": "results",
    "settings_key": "results",
    "policy_fingerprint": "results",
    "ENV_WORKER_MODES": "runner",
    "run_leaderboard": "runner",
    "default_threads": "runner",
    "env_worker_kind": "runner",
    "pass_at_k": "report",
    "summarize_results": "report",
    "policy_labels": "report",
    "COLUMNS": "report",
    "write_reports": "report",
    "chart_figure": "report",
    "write_hf_dataset": "report",
}

__all__ = sorted(_MOVED)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"agentgym_envs.eval.{_MOVED[name]}"
    warnings.warn(
        f"agentgym_envs.eval.leaderboard is deprecated: import {name} from {module}", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(module), name)

