"""Running the leaderboard: which episodes are left to play, where their environments step, and playing them.

:func:`run_leaderboard` plays every (policy, environment, task, sample) of a suite that is not already in
``out_dir/episodes.jsonl`` (:mod:`agentgym_envs.eval.results`), one policy after another, and writes the
tables (:mod:`agentgym_envs.eval.report`).  Scripted policies play one episode at a time; model policies play
their pending episodes in batches through the rollout engine (:mod:`agentgym_envs.engine`), with the
environments of slow families in worker processes (:func:`env_worker_kind`).

Example:
    >>> from agentgym_envs.eval import load_suite, run_leaderboard
    >>> run_leaderboard(load_suite("quick"), ["random", "expert"], "results/leaderboard")  # doctest: +SKIP

Command line: ``agentgym leaderboard`` (or ``python benchmarks/leaderboard.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym

from agentgym_envs.errors import DataNotFoundError, MissingDependencyError, SuiteError
from agentgym_envs.eval.episodes import play_episode, transcript_record, transcript_turn
from agentgym_envs.eval.policies import HFPolicy, Policy, check_policy_spec, make_policy
from agentgym_envs.eval.report import summarize_results, write_reports
from agentgym_envs.eval.results import (
    RESULTS_FILE,
    LoadedResults,
    append_record,
    drop_partial_last_line,
    episode_key,
    episode_settings,
    load_results,
    settings_key,
)
from agentgym_envs.eval.suite import Suite, SuiteEntry
from agentgym_envs.registry import make, with_step_limit
from agentgym_envs.workers import default_worker_kind, step_deadline_s

#: Pending episodes of one environment: ``(task index, sample)`` pairs.
PendingWork = list[tuple[SuiteEntry, list[tuple[int, int]]]]
#: One episode of a batch: its suite entry, task index and sample.
BatchItem = tuple[SuiteEntry, int, int]
#: Saves one finished episode's record.
SaveRecord = Callable[[dict[str, Any]], None]


# --- Worker placement: where a model policy's batched environments step -------------------------------------

#: Where a model policy's batched environments step: ``"auto"`` (by family: ``Family.worker``),
#: ``"inprocess"`` (all in this process) or ``"process"`` (all in worker processes).
ENV_WORKER_MODES = ("auto", "inprocess", "process")


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
    """Where a batch's environments step: the ``env_workers`` mode, the most worker processes per batch and the
    deadline of one call in a worker process (``None``: the family's)."""

    mode: str
    processes: int
    step_timeout_s: float | None = None


# --- The run -------------------------------------------------------------------------------------------------


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
    env_step_timeout_s: float | None = None,
) -> list[dict[str, Any]]:
    """Play every (policy, environment, task, sample) not already in ``out_dir/episodes.jsonl``; write the tables.

    Policies are named in results by their spec (``random``, ``smollm2``, ``hf:PATH``, ...); a
    model is loaded only if one of its episodes is still to be played.  An episode in the file is
    reused only if it was played with the same settings (:func:`~agentgym_envs.eval.results.episode_settings`);
    how many were reused is printed.  Lines of the file that are not valid episode records, and records of the
    suite's environments beyond its tasks or samples, are set aside (counted, printed and noted under the
    table).  An environment whose data or dependencies are missing is skipped with a note
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
    (default) puts the slow families (``Family(worker="process")``) in worker processes, so their steps run in
    parallel, and keeps the fast ones in this process; ``"process"`` and ``"inprocess"`` force one or the
    other.  The worker processes of a batch are at most ``env_processes`` (default: the number of cores)
    and are all stopped when the batch ends.  Where an environment steps does not change its episodes.  A reset or
    step in a worker process that takes longer than ``env_step_timeout_s`` (default: the family's
    :attr:`~agentgym_envs.registry.Family.step_timeout_s`; ``math.inf``: none) ends its episode with
    ``truncation_reason="time_limit"`` (a stopped simulator cannot hold up the batch).

    Example:
        >>> rows = run_leaderboard(load_suite("quick"), ["random", "expert"], "results/leaderboard")  # doctest: +SKIP
    """
    _check_run(suite, policy_specs, env_workers, env_processes)
    if env_step_timeout_s is not None:
        step_deadline_s("", env_step_timeout_s)  # a bad value fails here, before anything is played
    placement = _Placement(env_workers, env_processes or os.cpu_count() or 1, env_step_timeout_s)
    options = _Options(seed, temperature, max_new_tokens, progress, batch, threads, batch_size, placement)
    run = _Run.start(suite, policy_specs, Path(out_dir), options, max_episodes)
    for spec in policy_specs:
        if run.play_policy(spec) == "budget spent":
            break
    return run.finish()


def _check_run(suite: Suite, policy_specs: Sequence[str], env_workers: str, env_processes: int | None) -> None:
    """Fail on bad arguments, a misspelt policy or an unregistered environment before anything is written."""
    from agentgym_envs.registry import registration, unknown_id_message

    if env_workers not in ENV_WORKER_MODES:
        raise ValueError(f"env_workers must be one of {', '.join(ENV_WORKER_MODES)}, got {env_workers!r}")
    if env_processes is not None and env_processes < 1:
        raise ValueError(f"env_processes must be at least 1, got {env_processes}")
    for spec in policy_specs:
        check_policy_spec(spec)
    for entry in suite.entries:
        try:
            registration(entry.env_id)
        except gym.error.Error as exc:
            raise SuiteError(f"suite {suite.name!r}: {unknown_id_message(entry.env_id)}") from exc


@dataclass(frozen=True)
class _Options:
    """The run's settings that reach the policies and the play loops."""

    seed: int
    temperature: float
    max_new_tokens: int
    progress: bool
    batch: bool
    threads: int | None
    batch_size: int
    placement: _Placement


@dataclass
class _Run:
    """One leaderboard run into a results folder: what is done, what is left, and where records go."""

    suite: Suite
    out: Path
    options: _Options
    available: list[SuiteEntry]  # the entries whose family is installed
    settings: dict[tuple[str, str], dict[str, Any]]  # (policy spec, env_id) -> episode_settings
    done: set[tuple]  # episode keys already played (or beyond a task list)
    budget: int  # new episodes left; -1: no limit
    notes: list[str] = field(default_factory=list)
    reused: int = 0
    unavailable: set[str] = field(default_factory=set)  # environments that could not be built here

    @property
    def results_path(self) -> Path:
        return self.out / RESULTS_FILE

    @classmethod
    def start(
        cls, suite: Suite, policy_specs: Sequence[str], out: Path, options: _Options, max_episodes: int | None
    ) -> _Run:
        """Open the results folder, read what it holds, and note the environments that are not installed."""
        out.mkdir(parents=True, exist_ok=True)
        drop_partial_last_line(out / RESULTS_FILE)
        existing = load_results([out / RESULTS_FILE], suite)
        notes = _set_aside_notes(existing)
        available = _installed_entries(suite, notes)
        settings = {
            (spec, entry.env_id): episode_settings(
                spec, entry, options.seed, options.temperature, options.max_new_tokens
            )
            for spec in policy_specs
            for entry in available
        }
        done = {episode_key(r) for r in existing.records}
        budget = max_episodes if max_episodes is not None else -1
        run = cls(suite, out, options, available, settings, done, budget, notes)
        run.reused = _report_reuse(existing.records, run.done, settings, suite, run.results_path)
        return run

    def key_of(self, spec: str, entry: SuiteEntry, index: int, sample: int) -> tuple:
        return (spec, entry.env_id, index, sample, settings_key(self.settings[(spec, entry.env_id)]))

    def pending_work(self, spec: str) -> PendingWork:
        """The episodes of ``spec`` still to play, per environment, in suite order."""
        work: PendingWork = []
        for entry in self.available:
            pending = [
                (index, sample)
                for sample in range(self.suite.samples)
                for index in range(entry.tasks)
                if self.key_of(spec, entry, index, sample) not in self.done and entry.env_id not in self.unavailable
            ]
            if pending:
                work.append((entry, pending))
        return work

    def within_budget(self, work: PendingWork) -> PendingWork:
        """The first pending episodes within the budget of new episodes, in suite order."""
        if self.budget < 0:
            return work
        left, kept = self.budget, []
        for entry, pending in work:
            if left > 0:
                kept.append((entry, pending[:left]))
                left -= len(kept[-1][1])
        return kept

    def saver(self, spec: str, bar: Any) -> SaveRecord:
        """What saves one of ``spec``'s finished episodes: its settings added, appended to the file, counted."""

        def save(record: dict[str, Any]) -> None:
            record["settings"] = self.settings[(spec, record["env_id"])]
            record["settings_key"] = settings_key(record["settings"])
            append_record(self.results_path, record)
            self.done.add(episode_key(record))
            bar.set_postfix_str(record["env_id"].removeprefix("agentgym/"), refresh=False)
            bar.update(1)
            if self.budget > 0:
                self.budget -= 1

        return save

    def play_policy(self, spec: str) -> Literal["done", "budget spent"]:
        """Play ``spec``'s pending episodes; ``"budget spent"`` when no new episode may be played after them."""
        bar = _progress_bar(spec, self.suite, self.available, self.done, self.settings, self.options.progress)
        policy: Any = None
        try:
            work = self.pending_work(spec)
            if not work:
                return "done"
            if self.budget == 0:
                return "budget spent"
            policy = make_policy(spec, self.options.seed, self.options.temperature, self.options.max_new_tokens)
            if isinstance(policy, HFPolicy):
                _report_threads(self.options.threads)
            work, probes = _buildable(self.within_budget(work), policy, self.unavailable, self.notes)
            bar.set_postfix_str(", ".join(e.env_id.removeprefix("agentgym/") for e, _ in work), refresh=True)
            for entry, index, sample in self._play_work(work, policy, spec, probes, self.saver(spec, bar)):
                self.done.add(self.key_of(spec, entry, index, sample))  # tasks beyond the split's size
                bar.update(1)
            return "budget spent" if self.budget == 0 else "done"
        finally:
            bar.close()
            if hasattr(policy, "close"):  # a vLLM engine: its memory and processes go before the next policy's
                policy.close()

    def _play_work(
        self, work: PendingWork, policy: Any, spec: str, probes: dict[str, _Probe], save: SaveRecord
    ) -> list[BatchItem]:
        """Play ``work`` batched or one episode at a time; returns the episodes beyond a task list."""
        options, suite = self.options, self.suite.name
        if options.batch and hasattr(policy, "engine_backend"):
            return _play_batch(work, _Batches(policy, spec, suite, options, probes, save))
        skipped: list[BatchItem] = []
        for entry, pending in work:
            skipped += [(entry, *p) for p in _play_sequential(entry, pending, policy, spec, options.seed, suite, save)]
        return skipped

    def finish(self) -> list[dict[str, Any]]:
        """Write the tables from the results file's records (less those set aside); returns their rows."""
        with warnings.catch_warnings():  # the lines set aside were noted (and warned about) at the start
            warnings.simplefilter("ignore")
            loaded = load_results([self.results_path], self.suite)
        rows = summarize_results(loaded.records)
        notes = list(self.notes)
        if self.reused:
            notes.append(f"reused {self.reused} episodes already in {RESULTS_FILE} (same settings)")
        write_reports(rows, self.out, f"suite '{self.suite.name}'", notes=notes)
        return rows


def _set_aside_notes(loaded: LoadedResults) -> list[str]:
    """Notes (printed, and listed under the table) on the results lines that the tables leave out."""
    notes = []
    if loaded.set_aside:
        why = ", ".join(f"{count} {reason}" for reason, count in loaded.reasons.items())
        notes.append(
            f"set aside {loaded.set_aside} line(s) of {RESULTS_FILE} that are not valid episode records ({why})"
        )
    if loaded.outside_suite:
        notes.append(
            f"left out {loaded.outside_suite} episodes in {RESULTS_FILE} beyond this suite's tasks or "
            "samples (they stay in the file)"
        )
    for note in notes:
        print(f"[leaderboard] {note}")
    return notes


def _installed_entries(suite: Suite, notes: list[str]) -> list[SuiteEntry]:
    """The suite's entries whose family is installed; the others are noted (printed and under the table)."""
    from agentgym_envs.registry import registration

    available = []
    for entry in suite.entries:
        reg = registration(entry.env_id)
        if not reg.family.installed():
            notes.append(f"skipped {entry.env_id}: pip install 'agentgym-envs[{reg.family.extra}]'")
            print(f"[leaderboard] {notes[-1]}")
            continue
        available.append(entry)
    return available


def _report_reuse(
    existing: Sequence[dict[str, Any]],
    done: set[tuple],
    settings: dict[tuple[str, str], dict[str, Any]],
    suite: Suite,
    results_path: Path,
) -> int:
    """Say how many finished episodes this run reuses, and how many in the file were played otherwise."""
    wanted = {
        (spec, env_id, index, sample, settings_key(s))
        for (spec, env_id), s in settings.items()
        for sample in range(suite.samples)
        for index in range(next(e.tasks for e in suite.entries if e.env_id == env_id))
    }
    reused = len(wanted & done)
    others = sum(1 for r in existing if (r["policy"], r["env_id"]) in settings and episode_key(r) not in wanted)
    if reused:
        print(f"[leaderboard] reused {reused} episodes from {results_path} (same policy, task, sample and settings)")
    if others:
        print(
            f"[leaderboard] {others} episodes in {results_path} were played with other settings (seed, sampling, "
            "suite keywords or model files); they are kept and reported as separate rows"
        )
    return reused


def _progress_bar(
    spec: str,
    suite: Suite,
    entries: Sequence[SuiteEntry],
    done: set[tuple],
    settings: dict[tuple[str, str], dict[str, Any]],
    progress: bool,
) -> Any:
    """One bar per policy: its ETA comes from its own episodes only, and reused episodes do not count in the rate.

    (Scripted episodes take milliseconds and model episodes tens of seconds, so one bar over all
    policies extrapolates the wrong speed.)  The postfix names the environment being played.
    """
    from tqdm.auto import tqdm

    total = suite.samples * sum(e.tasks for e in entries)
    already = sum(
        (spec, e.env_id, i, s, settings_key(settings[(spec, e.env_id)])) in done
        for e in entries
        for s in range(suite.samples)
        for i in range(e.tasks)
    )
    return tqdm(total=total, initial=already, desc=f"{suite.name}: {spec}", unit="ep", disable=not progress)


def default_threads() -> int:
    """torch threads for local models: 1 on machines with at most 2 cores (a second thread that competes with
    the environments and other processes slowed forward passes down by up to 70x there), else half the cores.

    Example:
        >>> default_threads() >= 1
        True
    """
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


# --- Building the environments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """What the batch path needs to know of an environment, read once from one built in this process."""

    task_ids: Sequence[Any]
    family: str
    action_format: str


def _make_env(entry: SuiteEntry, policy: Policy) -> gym.Env:
    return make(entry.env_id, **_env_kwargs(entry, policy))


def _env_kwargs(entry: SuiteEntry, policy: Policy) -> dict[str, Any]:
    """The keywords an environment of ``entry`` is built with (here or in a worker process)."""
    return with_step_limit({"split": "test", **policy.env_kwargs, **entry.kwargs})


def _buildable(
    work: PendingWork, policy: Policy, unavailable: set[str], notes: list[str]
) -> tuple[PendingWork, dict[str, _Probe]]:
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


def _batch_envs(
    items: list[BatchItem], policy: Any, probes: dict[str, _Probe], placement: _Placement, opened: list[Any]
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
            kwargs = _env_kwargs(entry, policy)
            timeout_s = placement.step_timeout_s
            group = make_workers(env_id, len(where), kind="process", max_processes=share, timeout_s=timeout_s, **kwargs)
            opened.append(group)
            for k, worker in zip(where, group, strict=True):
                envs[k] = worker
        else:
            for k in where:
                envs[k] = _make_env(entry, policy)
                opened.append(envs[k])
    return envs


def _close_all(things: Sequence[Any]) -> None:
    """Close every environment and worker group (all of them, even if one fails to close; then its error raises)."""
    with contextlib.ExitStack() as stack:
        for thing in things:
            stack.callback(thing.close)


# --- Playing: one episode at a time ---------------------------------------------------------------------------


def _play_sequential(
    entry: SuiteEntry,
    pending: list[tuple[int, int]],
    policy: Policy,
    spec: str,
    seed: int,
    suite: str,
    save: SaveRecord,
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


# --- Playing: batches through the rollout engine --------------------------------------------------------------


@dataclass(frozen=True)
class _Batches:
    """What every batch of one policy's episodes shares."""

    policy: Any
    spec: str
    suite: str
    options: _Options
    probes: dict[str, _Probe]  # what _buildable read of each environment
    save: SaveRecord


def _play_batch(work: PendingWork, batches: _Batches) -> list[BatchItem]:
    """Pending episodes of a model policy in batches through the engine; each is saved as it ends.

    Episodes of every environment that shares an action format go into one batch (up to ``batch_size``):
    on a CPU a decoding step costs about the same for 2 rows as for 10, so one batch across the suite's
    environments is several times faster than one batch per environment.  The options' placement says where
    the environments step.  Returns the episodes beyond a task list.
    """
    probes, size = batches.probes, max(1, batches.options.batch_size)
    skipped: list[BatchItem] = []
    items: list[BatchItem] = []
    for entry, pending in work:
        count = len(probes[entry.env_id].task_ids)
        skipped += [(entry, i, s) for i, s in pending if i >= count]
        items += [(entry, i, s) for i, s in pending if i < count]
    by_format: dict[str, list[BatchItem]] = {}
    for item in items:
        by_format.setdefault(probes[item[0].env_id].action_format, []).append(item)
    for action_format, group in by_format.items():
        for start in range(0, len(group), size):
            _run_batch(group[start : start + size], action_format == "plain", batches)
    return skipped


def _run_batch(items: list[BatchItem], single_line: bool, batches: _Batches) -> None:
    """Play one batch through the rollout engine and save each episode's record as it ends."""
    from agentgym_envs.engine import RolloutConfig, run_episodes

    policy, seed = batches.policy, batches.options.seed
    opened: list[Any] = []  # environments and worker groups, all closed at the end (no worker process left)
    try:
        envs = _batch_envs(items, policy, batches.probes, batches.options.placement, opened)
        backend, fmt = policy.engine_backend(single_line, seed=seed)
        config = RolloutConfig(
            max_turns=100_000,  # the environment's step limit ends an episode
            max_new_tokens=batches.options.max_new_tokens,
            max_context_tokens=policy.max_context_tokens,
            reply="text",
            first_line_only=single_line,
        )
        tasks = [
            (batches.probes[entry.env_id].task_ids[index], seed + 1000 * sample + index, k)
            for k, (entry, index, sample) in enumerate(items)
        ]

        def on_end(k: int, ep: Any) -> None:
            batches.save(_engine_record(ep, envs[k], items[k], tasks[k][0], tasks[k][1], batches))

        run_episodes(envs, tasks, backend, fmt, config, on_episode_end=on_end)
    finally:
        _close_all(opened)


def _engine_record(
    ep: Any, env: Any, item: BatchItem, task_id: Any, episode_seed: int, batches: _Batches
) -> dict[str, Any]:
    """The record of an episode the rollout engine played (the same fields as :func:`_play`'s)."""
    entry, index, sample = item
    return {
        "suite": batches.suite,
        "policy": batches.spec,
        "env_id": entry.env_id,
        "family": batches.probes[entry.env_id].family,
        "task_index": index,
        "task_id": task_id,
        "sample": sample,
        "seed": episode_seed,
        "won": ep.won,
        "return": ep.total_return,
        "steps": len(ep.turns),
        "invalid_actions": sum(t.parse_error is not None for t in ep.turns),
        "truncated": ep.truncated,
        "truncation_reason": ep.truncation_reason,
        "seconds": float(ep.info.get("wall_seconds", 0.0)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "transcript": transcript_record(
            _instruction(env, ep),
            ep.first_observation,
            [
                transcript_turn(t.text, t.observation, t.reward, {"action": t.action, "parse_error": t.parse_error})
                for t in ep.turns
            ],
        ),
    }


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
