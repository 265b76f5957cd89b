"""The rollout engine: all live episodes generate in one batch per turn, environments step through workers.

:func:`run_episodes` is the one loop the trainer (``trl_plugins``) and the leaderboard
(:mod:`agentgym_envs.eval`) run.  Per turn it sends one request per live episode to a generation
backend (:mod:`agentgym_envs.generation`), decodes each reply, calls ``step_async`` on every live
episode's environment worker and then ``step_wait`` on each (so workers in other processes step in
parallel), and appends the turn.  Each request carries its episode's key, so a backend can carry the
episode's KV cache from turn to turn; an episode that ends is released from the backend.

When environments step outside this process (worker processes, Ray actors: ``steps_in_background``), a slow
step no longer holds up the batch (``RolloutConfig.overlap``): the engine collects the steps that have
finished, waits for the others only as long as the last generation took, and generates for the episodes
that are ready while the stragglers keep stepping; they join the next batch.  With environments that step
faster than the model generates, every batch stays whole (``RolloutStats.env_wait_seconds`` is the time
spent waiting on environments, ``overlapped_batches`` counts batches generated while steps were running).

Backends:

* a token backend (:class:`~agentgym_envs.generation.base.GenerationBackend`): token-exact
  bookkeeping (``RolloutConfig.reply="tokens"``, training) or the reply's text tokenized again
  (``reply="text"``, evaluation, where a chat client's view of the conversation is the reference);
* a text backend (:class:`~agentgym_envs.generation.text.TextBackend`, an endpoint): the engine
  sends each episode's messages and keeps the reply's text; there are no token ids, so the context
  budget is the server's;
* a plain ``generate_fn(contexts, max_new_tokens) -> list[list[int]]`` (adapted by :class:`CallableBackend`).

Environments: anything with ``reset_async``/``reset_wait``/``step_async``/``step_wait`` is used as an
environment worker; a plain Gymnasium environment is wrapped in :class:`InProcessWorker`.

A rollout that forks episodes (one task's episode continued twice from a turn, each in its own copy of the
environment) is a loop of its own built from the public steps here: :func:`start_episodes`,
:func:`next_context`, :func:`apply_action`, :func:`fork_episode` (the episode and its environment's state) and
:func:`new_run_id` (its generation keys).

Limits give defined outcomes, recorded in ``Episode.truncation_reason``: the environment's own step
limit (``"step_limit"``), a simulator crash or any other exception escaping the environment's
``step`` (``"crash"``, with ``info["error"]``), ``max_turns`` (``"max_turns"``) and the context
budget (``"context_budget"``: the next turn would not fit into ``max_context_tokens``; the sequence
then ends with the last model turn, within the budget; an opening prompt that does not fit ends the
episode before its first turn); a reply with ids that name no token (negative, or past the tokenizer's
vocabulary) ends the episode before that turn with ``"generation_error"`` (``info["error"]`` says which).
A turn that hits ``max_new_tokens`` is sent to the environment as it
is and counted in ``Turn.hit_token_limit``.

Example:
    >>> fmt = ChatFormat(tokenizer, stop_ids=stop_ids_for(tokenizer, model.generation_config))  # doctest: +SKIP
    >>> backend = TransformersBackend(model, tokenizer.pad_token_id,
    ...                               SamplingSettings(stop_ids=fmt.stop_ids))                  # doctest: +SKIP
    >>> episodes = run_episodes(envs, [(task, seed, group)] * 4, backend, fmt,
    ...                         RolloutConfig(max_turns=8))                                     # doctest: +SKIP
    >>> ids, mask, turn_ids = episodes[0].completion()                                           # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import gymnasium as gym

from agentgym_envs.core import SupportsSnapshot
from agentgym_envs.engine.chat import ChatFormat
from agentgym_envs.engine.episode import Episode, RolloutConfig, RolloutStats, Turn, state_key
from agentgym_envs.generation.base import GenerationBackend, GenerationOutput, GenerationRequest, SamplingSettings
from agentgym_envs.generation.text import TextBackend, TextRequest
from agentgym_envs.prompts import episode_messages, first_messages, observation_message
from agentgym_envs.workers import EnvWorker, InProcessWorker

#: ``generate_fn(contexts, max_new_tokens) -> sampled ids`` for a batch of token-id contexts.
GenerateFn = Callable[[list[list[int]], int], list[list[int]]]
#: A step's result: ``(observation, reward, terminated, truncated, info)``.
StepResult = tuple[str, float, bool, bool, dict[str, Any]]

_RUNS = itertools.count()


def new_run_id() -> int:
    """A process-unique id for one run of episodes: its generation requests are keyed ``(run_id, episode_index)``.

    A loop of its own outside :func:`run_episodes` (one that forks episodes, say) takes one per run so its keys never
    meet another run's in a backend that carries KV caches by key.

    Example:
        >>> new_run_id() != new_run_id()
        True
    """
    return next(_RUNS)


# ---- environments ---------------------------------------------------------------------------------
def as_worker(env: Any) -> Any:
    """``env`` if it is an environment worker (:class:`~agentgym_envs.workers.EnvWorker`), else an
    :class:`~agentgym_envs.workers.InProcessWorker` around it (an exception in its ``step`` then ends
    the episode as a ``"crash"`` truncation instead of the run)."""
    if isinstance(env, EnvWorker):
        return env
    return InProcessWorker(env)


def _opening_messages(worker: Any, observation: str, info: dict[str, Any], config: RolloutConfig) -> list[dict]:
    env = getattr(worker, "env", None)
    if env is not None:
        return episode_messages(env, observation, config.prompt)
    # The environment lives elsewhere (a worker process, a Ray actor): ask it for the opening prompt's parts.
    instruction, instructions = worker.call("instruction"), worker.call("parser.instructions")
    return first_messages(str(instruction), observation, str(instructions), config.prompt)


# ---- backends -------------------------------------------------------------------------------------
class CallableBackend:
    """A ``generate_fn(contexts, max_new_tokens) -> list[list[int]]`` as a :class:`GenerationBackend`.

    Example:
        >>> backend = CallableBackend(lambda ctxs, n: [[7, 2] for _ in ctxs], stop_ids=(2,))
        >>> backend.generate([GenerationRequest(0, [1, 5])], 4)[0].finish_reason
        'stop'
    """

    def __init__(self, generate_fn: GenerateFn, stop_ids: Iterable[int] = ()):
        self.generate_fn = generate_fn
        self.settings = SamplingSettings(stop_ids=tuple(stop_ids))

    def generate(self, requests: Sequence[GenerationRequest], max_new_tokens: int) -> list[GenerationOutput]:
        sampled = self.generate_fn([list(r.context_ids) for r in requests], max_new_tokens)
        stops = set(self.settings.stop_ids)
        return [
            GenerationOutput(list(ids), None, "stop" if ids and ids[-1] in stops else "length") for ids in sampled
        ]

    def release(self, keys: Iterable[Hashable]) -> None:
        pass

    def close(self) -> None:
        pass


def as_backend(backend: Any, fmt: ChatFormat | None) -> Any:
    """A token or text backend; a plain callable is wrapped in :class:`CallableBackend` with ``fmt``'s stop ids."""
    if isinstance(backend, TextBackend) or hasattr(backend, "generate"):
        return backend
    if callable(backend):
        return CallableBackend(backend, fmt.stop_ids if fmt is not None else ())
    raise TypeError(f"expected a generation backend or a generate_fn, got {type(backend).__name__}")


def _is_text(backend: Any) -> bool:
    return isinstance(backend, TextBackend)


# ---- episode steps (public: a loop of its own, e.g. one that forks episodes, is built from them) ----
def start_episodes(
    workers: Sequence[Any],
    tasks: Sequence[tuple[Hashable, int | None, Hashable]],
    fmt: ChatFormat | None,
    config: RolloutConfig,
) -> list[Episode]:
    """Reset every worker on its ``(task_id, seed, group)`` (all resets in flight at once) and open the episodes.

    An opening prompt that leaves no room for ``max_new_tokens`` within ``max_context_tokens`` ends its
    episode at once (``"context_budget"``, no turns; ``prompt_ids`` keep the prompt's last tokens within
    the budget and ``info["error"]`` says what happened) instead of failing the run.
    """
    for worker, (task_id, seed, _) in zip(workers, tasks, strict=False):
        worker.reset_async(seed=seed, options={"task": task_id})
    episodes = []
    for worker, (task_id, seed, group) in zip(workers, tasks, strict=False):
        obs, info = worker.reset_wait()
        messages = _opening_messages(worker, obs, info, config)
        prompt_ids = fmt.prompt_ids(messages) if fmt is not None else []
        ep = Episode(group=group, task_id=task_id, seed=seed, prompt_ids=prompt_ids, messages=messages)
        ep.first_observation = ep.last_observation = obs
        ep.info = dict(info)
        room = config.max_context_tokens - config.max_new_tokens
        if fmt is not None and len(prompt_ids) > room:
            ep.info["error"] = (
                f"the opening prompt of task {task_id!r} has {len(prompt_ids)} tokens; with max_new_tokens="
                f"{config.max_new_tokens} it does not fit max_context_tokens={config.max_context_tokens}"
            )
            ep.prompt_ids = prompt_ids[-max(1, room) :]
            ep._end("context_budget", truncated=True)
        episodes.append(ep)
    return episodes


def next_context(ep: Episode, config: RolloutConfig) -> list[int] | None:
    """The next turn's context, or ``None`` after ending the episode on the context budget."""
    ctx = ep.context_ids(config.history_turns if config.context_mode == "stepwise" else None)
    if len(ctx) + config.max_new_tokens > config.max_context_tokens:
        ep._end("context_budget", truncated=True)
        if ep.turns:  # the sequence ends with the model's last turn and stays within the budget
            ep.turns[-1].env_ids = []
        return None
    return ctx


def reply_of(output: GenerationOutput, fmt: ChatFormat, config: RolloutConfig) -> tuple[list[int], str, bool, bool]:
    """``(action_ids, text, ended_with_stop, hit_token_limit)`` of a token backend's reply.

    ``reply="tokens"``: the sampled ids verbatim; the turn ended if its last id is one of the stop ids.
    ``reply="text"``: the decoded text (first line only with ``first_line_only``) tokenized again; the
    template closes it in full.
    """
    ids = list(output.ids)
    text = fmt.decode(ids)
    if config.reply == "tokens":
        ended = fmt.ends_turn(ids)
        return ids, text, ended, not ended
    if config.first_line_only and text.strip():
        text = text.split("\n", 1)[0]
    return fmt.encode_text(text), text, False, output.finish_reason == "length"


def record_turn(
    ep: Episode,
    result: StepResult,
    ctx: list[int] | None,
    action_ids: list[int],
    text: str,
    ended_with_stop: bool,
    hit_token_limit: bool,
    fmt: ChatFormat | None,
    config: RolloutConfig,
    logprobs: list[float] | None = None,
    entropies: list[float] | None = None,
) -> None:
    """Append the turn whose action was ``text`` and whose step gave ``result``; end the episode if it is over.

    ``logprobs`` and ``entropies``: what the backend recorded for the reply's sampled ids (kept on the turn).
    """
    obs, reward, terminated, truncated, info = result
    turn = Turn(
        action_ids=action_ids,
        text=text,
        reward=float(reward),
        observation=obs,
        state_key=state_key(ep.last_observation),
        parse_error=info.get("parse_error"),
        hit_token_limit=hit_token_limit,
        context_ids=ctx if config.context_mode == "stepwise" else None,
        logprobs=logprobs,
        entropies=entropies,
        action=info.get("action"),
    )
    ep.turns.append(turn)
    ep.messages += [{"role": "assistant", "content": text}, observation_message(obs)]
    ep.last_observation, ep.info = obs, info
    if terminated or truncated:
        ep.won = bool(info.get("won"))
        ep._end(info.get("truncation_reason") if truncated else None, truncated=bool(truncated))
    elif len(ep.turns) == config.max_turns:
        ep._end("max_turns", truncated=True)
    elif fmt is not None:
        turn.env_ids = fmt.env_ids(observation_message(obs)["content"], ended_with_stop)


def apply_action(
    ep: Episode, env: Any, ctx: list[int], output: GenerationOutput | list[int], fmt: ChatFormat, config: RolloutConfig
) -> None:
    """Step ``env`` (an environment or worker) with the reply and append the turn (one episode, synchronously)."""
    if not isinstance(output, GenerationOutput):
        ids = list(output)
        output = GenerationOutput(ids, None, "stop" if fmt.ends_turn(ids) else "length")
    if _bad_reply(ep, output, fmt):
        return
    action_ids, text, ended, hit = reply_of(output, fmt, config)
    worker = as_worker(env)
    worker.step_async(text)
    record_turn(
        ep, worker.step_wait(), ctx, action_ids, text, ended, hit, fmt, config, output.logprobs, output.entropies
    )


def check_stop_ids(backend: Any, fmt: ChatFormat | None, config: RolloutConfig) -> None:
    """Token-exact rollouts need the backend and the chat format to agree on the one set of stop ids."""
    if fmt is None or _is_text(backend) or config.reply != "tokens":
        return
    ids = tuple(getattr(getattr(backend, "settings", None), "stop_ids", ()) or ())
    if ids and set(ids) != set(fmt.stop_ids):
        raise ValueError(
            f"the backend stops on {sorted(ids)} but the chat format on {sorted(fmt.stop_ids)}; use one set of stop "
            "ids (stop_ids_for(tokenizer, generation_config)) for both"
        )


# ---- forks: an episode and its environment's state, continued twice ---------------------------------
def fork_env(env: gym.Env, spare: gym.Env, task_id: Hashable, seed: int | None) -> gym.Env:
    """``env``'s episode state put into ``spare`` (reset on the same task first); returns the environment to use.

    Uses ``unwrapped.snapshot()`` / ``restore()`` where the family has them
    (:class:`~agentgym_envs.core.SupportsSnapshot`; the shared wrappers hold no episode state), else returns
    ``copy.deepcopy(env)`` in place of ``spare``.

    Raises:
        TypeError: the environment has neither (it cannot be forked).

    Example:
        >>> env2 = fork_env(env, env2, task_id=3, seed=0)  # doctest: +SKIP
    """
    base, target = env.unwrapped, spare.unwrapped
    if isinstance(base, SupportsSnapshot) and isinstance(target, SupportsSnapshot) and type(base) is type(target):
        spare.reset(seed=seed, options={"task": task_id})  # wrappers (order enforcing) see a reset
        target.restore(base.snapshot())
        return spare
    try:
        return copy.deepcopy(env)
    except Exception as exc:  # noqa: BLE001 - any failure means this family cannot fork
        raise TypeError(
            f"forking an episode needs environments with snapshot()/restore() or deepcopy support; "
            f"{type(base).__name__} has neither ({exc})"
        ) from exc


def fork_episode(ep: Episode, parent: int, env: gym.Env, spare: gym.Env) -> tuple[Episode, gym.Env]:
    """Fork episode ``parent`` (``ep``, playing in ``env``) at its current turn: ``(branch, its environment)``.

    The branch is :meth:`Episode.fork` (the same prompt and turns, ``branch.parent == parent``,
    ``branch.branch_turn == len(ep.turns)``); its environment is ``spare`` holding ``env``'s state
    (:func:`fork_env`).  Both then go on independently: generate the branch's next action from
    :func:`next_context` and step it with :func:`apply_action`, as for any episode.  This is the seam a branching
    rollout uses to fork episodes from outside the engine.

    Example:
        >>> branch, branch_env = fork_episode(episodes[i], i, envs[i], spare_env)  # doctest: +SKIP
        >>> episodes.append(branch)                                                 # doctest: +SKIP
    """
    return ep.fork(parent), fork_env(env, spare, ep.task_id, ep.seed)


# ---- the loop -------------------------------------------------------------------------------------
def run_episodes(
    envs: Sequence[Any],
    tasks: Sequence[tuple[Hashable, int | None, Hashable]],
    backend: GenerationBackend | TextBackend | GenerateFn,
    fmt: ChatFormat | None = None,
    config: RolloutConfig | None = None,
    stats: RolloutStats | None = None,
    on_episode_end: Callable[[int, Episode], None] | None = None,
) -> list[Episode]:
    """Play one episode per ``(task_id, seed, group)`` in ``envs`` (one environment or worker each), batched per turn.

    ``on_episode_end(index, episode)`` is called as each episode ends (for example to save its result
    before the others finish).  Each turn's wall time is shared equally among the episodes live in it
    (``episode.info["wall_seconds"]``), so the shares of a batch add up to its time.

    Example:
        >>> run_episodes(envs, [(30001, 7, 0)] * 2, backend, ChatFormat(tok))  # doctest: +SKIP
    """
    config = config if config is not None else RolloutConfig()
    if len(envs) < len(tasks):
        raise ValueError(f"{len(tasks)} episodes need as many environments, got {len(envs)}")
    backend = as_backend(backend, fmt)
    text_backend = _is_text(backend)
    if fmt is None and not text_backend:
        raise ValueError("a token backend needs a ChatFormat (fmt)")
    check_stop_ids(backend, fmt if not text_backend else None, config)
    stats = stats if stats is not None else RolloutStats()
    run = new_run_id()
    keys = [(run, i) for i in range(len(tasks))]
    workers = [as_worker(env) for env in envs[: len(tasks)]]
    start = time.perf_counter()
    shares = [0.0] * len(tasks)
    reported: set[int] = set()

    def finish(ended: Iterable[int]) -> None:
        ended = [i for i in ended if i not in reported]
        if not ended:
            return
        backend.release([keys[i] for i in ended])
        for i in ended:
            reported.add(i)
            episodes[i].info["wall_seconds"] = shares[i]
            if on_episode_end is not None:
                on_episode_end(i, episodes[i])

    try:
        episodes = start_episodes(workers, tasks, None if text_backend else fmt, config)
        reset_seconds = time.perf_counter() - start
        stats.env_seconds += reset_seconds
        for i in range(len(episodes)):
            shares[i] += reset_seconds / max(1, len(episodes))
        finish(i for i, ep in enumerate(episodes) if ep.done)
        overlap = config.overlap
        if overlap is None:
            overlap = any(getattr(w, "steps_in_background", False) for w in workers)
        in_flight: dict[int, tuple[list[int] | None, tuple]] = {}  # episode -> (context, reply) of its running step
        last_generate: float | None = None
        while True:
            if in_flight:
                t0 = time.perf_counter()
                something_to_generate = any(not episodes[i].done and i not in in_flight for i in range(len(episodes)))
                collected = _collect_steps(workers, in_flight, overlap, last_generate, something_to_generate)
                for i in collected:
                    ctx, (action_ids, text, ended, hit, logprobs, entropies) = in_flight.pop(i)
                    result = workers[i].step_wait()
                    record_turn(
                        episodes[i], result, ctx, action_ids, text, ended, hit, fmt, config, logprobs, entropies
                    )
                waited = time.perf_counter() - t0
                stats.env_seconds += waited
                stats.env_wait_seconds += waited
                for i in collected:
                    shares[i] += waited / max(1, len(collected))
                finish(i for i in collected if episodes[i].done)
            waiting = [i for i, ep in enumerate(episodes) if not ep.done and i not in in_flight]
            if not waiting and not in_flight:
                break
            if not waiting:
                continue
            if in_flight:
                stats.overlapped_batches += 1
            t0 = time.perf_counter()
            in_flight.update(
                _generate_and_submit(waiting, episodes, workers, keys, backend, text_backend, fmt, config, stats, shares)
            )
            last_generate = time.perf_counter() - t0
            finish(i for i in waiting if episodes[i].done)
        finish(i for i, ep in enumerate(episodes) if ep.done)
    finally:
        backend.release(keys)
    stats.seconds += time.perf_counter() - start
    return episodes


def _collect_steps(
    workers: Sequence[Any],
    in_flight: dict[int, Any],
    overlap: bool,
    last_generate: float | None,
    something_to_generate: bool,
) -> list[int]:
    """The episodes whose running step to collect now, waiting as long as it pays.

    Without ``overlap`` every running step is collected (the batch moves in lockstep).  With it, the steps that
    have finished are collected; the engine waits for the others as long as the last generation took (a
    straggler that would keep the batch idle longer than generating again costs joins the next batch), and
    without anything else to generate it waits for at least one.
    """
    running = list(in_flight)
    if not overlap:
        return running
    polls = {i: getattr(workers[i], "poll", None) for i in running}
    ready: list[int] = []
    start = time.perf_counter()
    grace = float("inf") if last_generate is None else last_generate
    while True:
        for i in running:
            if i not in ready and (polls[i] is None or polls[i](0.0)):
                ready.append(i)
        if len(ready) == len(running):
            return ready
        waited = time.perf_counter() - start
        if (ready or something_to_generate) and waited >= grace:
            return ready
        time.sleep(0.002)


def _generate_and_submit(
    group: list[int],
    episodes: list[Episode],
    workers: list[Any],
    keys: list[tuple[int, int]],
    backend: Any,
    text_backend: bool,
    fmt: ChatFormat | None,
    config: RolloutConfig,
    stats: RolloutStats,
    shares: list[float],
) -> dict[int, tuple[list[int] | None, tuple]]:
    """Generate the next reply of each live episode of ``group`` and send it to its environment (``step_async``).

    Returns ``{index: (context, reply)}`` of each submitted step (empty when no episode of the group is live).
    """
    t0 = time.perf_counter()
    live: list[int] = []
    contexts: list[list[int] | None] = []
    for i in group:
        ep = episodes[i]
        if ep.done:
            continue
        ctx = None if text_backend else next_context(ep, config)
        if ctx is None and not text_backend:
            continue
        live.append(i)
        contexts.append(ctx)
    if not live:
        return {}
    if text_backend:
        stop = ("\n",) if config.first_line_only else ()
        requests = [TextRequest(keys[i], list(episodes[i].messages), _turn_seed(episodes[i]), stop) for i in live]
        outputs: list[Any] = backend.generate_text(requests, config.max_new_tokens)
    else:
        token_requests = [GenerationRequest(keys[i], ctx) for i, ctx in zip(live, contexts, strict=True)]  # type: ignore[arg-type]
        outputs = backend.generate(token_requests, config.max_new_tokens)
    generated = time.perf_counter()
    stats.generate_seconds += generated - t0
    stats.turn_generate_seconds.append(generated - t0)
    stats.generate_calls += 1
    submitted = {}
    for i, ctx, output in zip(live, contexts, outputs, strict=True):
        if text_backend:
            text = output.text
            if config.first_line_only and text.strip():
                text = text.split("\n", 1)[0]
            reply: tuple = ([], text, False, output.finish_reason == "length", None, None)
        else:
            if _bad_reply(episodes[i], output, fmt):  # type: ignore[arg-type]
                continue
            stats.model_tokens += len(output.ids)
            reply = (*reply_of(output, fmt, config), output.logprobs, output.entropies)  # type: ignore[arg-type]
        workers[i].step_async(reply[1])
        submitted[i] = (ctx, reply)
    stats.env_seconds += time.perf_counter() - generated
    for i in live:
        shares[i] += (time.perf_counter() - t0) / len(live)
    return submitted


def _bad_reply(ep: Episode, output: GenerationOutput, fmt: ChatFormat) -> bool:
    """End ``ep`` with ``"generation_error"`` if ``output`` holds ids that name no token; True if it did."""
    bad = fmt.invalid_ids(output.ids)
    if bad:
        ep._end_on_generation_error(
            f"GenerationError: the backend returned token ids outside the vocabulary [0, {len(fmt.tokenizer)}): "
            f"{bad[:5]}"
        )
    return bool(bad)


def _turn_seed(ep: Episode) -> int | None:
    """The seed of an episode's next reply from a text backend: the episode seed plus the turn index."""
    return None if ep.seed is None else int(ep.seed) + len(ep.turns)


__all__ = [
    "CallableBackend",
    "GenerateFn",
    "StepResult",
    "apply_action",
    "as_backend",
    "as_worker",
    "check_stop_ids",
    "fork_env",
    "fork_episode",
    "new_run_id",
    "next_context",
    "record_turn",
    "reply_of",
    "run_episodes",
    "start_episodes",
]
