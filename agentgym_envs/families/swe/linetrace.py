"""A pytest plugin that records which source lines each test executes (the build's test selection).

Loaded in the sandbox with ``-p agentgym_swe_linetrace`` (the build copies this file there under that name).
``$AGENTGYM_SWE_TRACE_FILES`` lists the source files to watch (``os.pathsep``-separated absolute paths) and
``$AGENTGYM_SWE_TRACE_OUT`` is where the JSON goes: ``{"import": [[file, line], ...], "tests": {nodeid: [...]}}``;
``import`` holds the lines run outside any test (imports, collection), where a bug breaks every test.

Example:
    >>> _tracer.__name__  # used as: python -m pytest -p agentgym_swe_linetrace tests/
    '_tracer'
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

_FILES = frozenset(p for p in os.environ.get("AGENTGYM_SWE_TRACE_FILES", "").split(os.pathsep) if p)
_OUT = os.environ.get("AGENTGYM_SWE_TRACE_OUT", "")
_seen: set[tuple[str, int]] = set()
_outside: set[tuple[str, int]] = set()
_by_test: dict[str, list[tuple[str, int]]] = {}


def _local(frame: Any, event: str, arg: Any) -> Any:
    if event == "line":
        _seen.add((frame.f_code.co_filename, frame.f_lineno))
    return _local


def _tracer(frame: Any, event: str, arg: Any) -> Any:
    if frame.f_code.co_filename in _FILES:
        _seen.add((frame.f_code.co_filename, frame.f_lineno))
        return _local
    return None


def pytest_configure(config: Any) -> None:
    sys.settrace(_tracer)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Any:
    _outside.update(_seen)
    _seen.clear()
    sys.settrace(_tracer)
    yield
    sys.settrace(None)
    _by_test[item.nodeid] = sorted(_seen)
    _seen.clear()


def pytest_unconfigure(config: Any) -> None:
    sys.settrace(None)
    if _OUT:
        with open(_OUT, "w") as handle:
            json.dump({"import": sorted(_outside | _seen), "tests": _by_test}, handle)
