"""Training glue around the rollout engine: AEPO's branching loop, action entropies and episode metrics.

The engine itself -- :class:`ChatFormat`, :class:`RolloutConfig`, :class:`Turn`, :class:`Episode`, the
token bookkeeping and the batched loop -- lives in :mod:`agentgym_envs.engine` (shared with the
leaderboard) and is re-exported here, so ``trl_plugins.ChatFormat``, ``RolloutConfig`` and
``run_episodes`` keep working.  :func:`run_episodes` here adds AEPO branching
(``RolloutConfig.aepo``) on top of the engine's :func:`agentgym_envs.engine.run_episodes`.

An episode's token sequence is ``prompt_ids`` then, per turn, the sampled ``action_ids`` (verbatim)
and the template's ``env_ids``; for a prefix-preserving chat template the concatenation equals the
template applied to the whole conversation (``tests/test_trainer_rollout.py`` checks it).

Example:
    >>> fmt = ChatFormat(tokenizer)                                   # doctest: +SKIP
    >>> episodes = run_episodes(envs, [(task, seed, group)] * 4, backend, fmt,
    ...                         RolloutConfig(max_turns=8))          # doctest: +SKIP
    >>> ids, mask, turn_ids = episodes[0].completion()                 # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from agentgym_envs.core import SupportsSnapshot
from agentgym_envs.engine import engine as _engine
from agentgym_envs.engine.chat import ChatFormat, stop_ids_for
from agentgym_envs.engine.engine import (
    CallableBackend,
    GenerateFn,
    apply_action,
    as_backend,
    as_worker,
    check_stop_ids,
    next_context,
    start_episodes,
)
from agentgym_envs.engine.episode import CONTEXT_MODES, Episode, RolloutConfig, RolloutStats, Turn, state_key
from agentgym_envs.generation.base import GenerationBackend, GenerationRequest
from agentgym_envs.workers import InProcessWorker
from trl_plugins.hooks.aepo import AEPOBranchConfig, BranchPenaltyState, aepo_rollout_budget

#: ``entropy_fn(contexts, actions) -> mean policy entropy over each action's tokens`` (AEPO branching).
EntropyFn = Callable[[list[list[int]], list[list[int]]], list[float]]


def run_episodes(
    envs: Sequence[Any],
    tasks: Sequence[tuple[Hashable, int | None, Hashable]],
    generate_fn: GenerationBackend | GenerateFn,
    fmt: ChatFormat,
    config: RolloutConfig | None = None,
    stats: RolloutStats | None = None,
    entropy_fn: EntropyFn | None = None,
    rng: random.Random | None = None,
) -> list[Episode]:
    """Play one episode per ``(task_id, seed, group)`` in ``envs`` (one environment each), batched per turn.

    ``generate_fn`` is a generation backend (:mod:`agentgym_envs.generation`) or a plain
    ``generate_fn(contexts, max_new_tokens) -> list[list[int]]``.  With ``config.aepo`` set, the
    episodes of each group are played with AEPO's dynamic entropy-balanced rollout
    (:func:`run_episodes_aepo`); that needs ``entropy_fn``.  Otherwise this is
    :func:`agentgym_envs.engine.run_episodes`.

    Example:
        >>> episodes = run_episodes(envs, [(30001, 7, 0)] * 2, generate_fn, ChatFormat(tok))  # doctest: +SKIP
    """
    config = config if config is not None else RolloutConfig()
    if config.aepo is not None:
        if len(envs) < len(tasks):
            raise ValueError(f"{len(tasks)} episodes need as many environments, got {len(envs)}")
        if entropy_fn is None:
            raise ValueError("AEPO branching (RolloutConfig.aepo) needs an entropy_fn")
        return run_episodes_aepo(envs, tasks, generate_fn, entropy_fn, fmt, config, stats, rng)
    return _engine.run_episodes(envs, tasks, generate_fn, fmt, config, stats)


def copy_env_state(src: gym.Env, dst: gym.Env, task_id: Hashable, seed: int | None) -> gym.Env:
    """Put ``src``'s episode state into ``dst`` (reset on the same task first); returns the env to use.

    Uses ``unwrapped.snapshot()`` / ``restore()`` where the family has them (the shared wrappers
    hold no episode state), else ``copy.deepcopy(src)`` (returned in place of ``dst``).

    Example:
        >>> env2 = copy_env_state(env, env2, task_id=3, seed=0)  # doctest: +SKIP
    """
    base, target = src.unwrapped, dst.unwrapped
    if isinstance(base, SupportsSnapshot) and isinstance(target, SupportsSnapshot) and type(base) is type(target):
        dst.reset(seed=seed, options={"task": task_id})  # wrappers (order enforcing) see a reset
        target.restore(base.snapshot())
        return dst
    try:
        return copy.deepcopy(src)
    except Exception as exc:  # noqa: BLE001 - any failure means this family cannot branch
        raise TypeError(
            f"AEPO branching needs environments with snapshot()/restore() or deepcopy support; "
            f"{type(base).__name__} has neither ({exc})"
        ) from exc


def _branch_episode(ep: Episode, parent: int) -> Episode:
    """A copy of ``ep``'s token history and messages up to now, recorded as a branch of ``parent``."""
    return Episode(
        group=ep.group,
        task_id=ep.task_id,
        seed=ep.seed,
        prompt_ids=list(ep.prompt_ids),
        messages=copy.deepcopy(ep.messages),
        turns=copy.deepcopy(ep.turns),
        info=copy.deepcopy(ep.info),
        last_observation=ep.last_observation,
        parent=parent,
        branch_turn=len(ep.turns),
    )


@dataclass
class _Group:
    """AEPO state of one task group (one prompt's ``k`` samples)."""

    task_id: Hashable
    seed: int | None
    slots: list[int]  # indices into ``envs`` reserved for this group
    used: int = 0
    probe: int = -1
    budget: int | None = None  # m: independent rollouts; None until pre-monitoring is done
    root_entropy: float = 0.0
    probe_entropies: list[float] = field(default_factory=list)  # every turn of the probe, the first one included
    penalty: BranchPenaltyState | None = None


def run_episodes_aepo(
    envs: Sequence[gym.Env],
    tasks: Sequence[tuple[Hashable, int | None, Hashable]],
    generate_fn: GenerationBackend | GenerateFn,
    entropy_fn: EntropyFn,
    fmt: ChatFormat,
    config: RolloutConfig,
    stats: RolloutStats | None = None,
    rng: random.Random | None = None,
) -> list[Episode]:
    """AEPO's dynamic entropy-balanced rollout: ``k`` samples per group, ``m`` independent and ``k - m`` branches.

    Per group (the ``k`` tasks sharing a group key): a probe episode plays first, alone (pre-monitoring).
    Its first turn's entropy is ``H_root``; ``H_tool`` is the mean entropy of its tool-call steps (the turns
    after an observation; ``H_root`` when it has none; with ``variant="released"`` the mean of all its
    turns).  When the probe has ended, ``m = aepo_rollout_budget(H_root, H_tool, k, beta)`` and ``m - 1``
    more independent episodes start.  At every tool-call step of those, while the group has fewer than
    ``k`` episodes, the step's entropy ``H_now`` decides (with
    :class:`~trl_plugins.hooks.aepo.BranchPenaltyState`, ``H_init = H_root``) whether to branch: the
    branch gets a copy of the environment state and of the token history before that step's
    action, and samples its own action from the same context.  The consecutive-branch penalty counts
    rounds of generation (one batched ``generate_fn`` call): ``l`` is fixed within a round and grows by
    one after each round in which the group branched, else returns to 0.  Slots left when a group's
    episodes have all ended are filled with independent episodes (``stats.fallback_independent``).

    Example:
        >>> cfg = RolloutConfig(max_turns=4, aepo=AEPOBranchConfig(p_branch=0.2))
        >>> eps = run_episodes(envs, [(0, 1, 0)] * 4, gen, fmt, cfg, entropy_fn=ent)  # doctest: +SKIP
    """
    aepo = config.aepo or AEPOBranchConfig()
    backend = as_backend(generate_fn, fmt)
    check_stop_ids(backend, fmt, config)
    stats = stats if stats is not None else RolloutStats()
    rng = rng if rng is not None else random.Random(aepo.seed)
    start = time.perf_counter()
    run = next(_engine._RUNS)
    groups: dict[Hashable, _Group] = {}
    for slot, (task_id, seed, group) in enumerate(tasks):
        groups.setdefault(group, _Group(task_id, seed, [])).slots.append(slot)
    envs = list(envs)
    episodes: list[Episode] = []
    env_of: list[int] = []

    def start_independent(key: Hashable, g: _Group) -> int:
        slot = g.slots[g.used]
        g.used += 1
        episodes.extend(start_episodes([as_worker(envs[slot])], [(g.task_id, g.seed, key)], fmt, config))
        env_of.append(slot)
        stats.independent += 1
        return len(episodes) - 1

    def set_budget(g: _Group, tool_entropy: float) -> None:
        k = len(g.slots)
        g.budget = aepo_rollout_budget(g.root_entropy, tool_entropy, k=k, beta=aepo.beta)
        g.penalty = BranchPenaltyState(g.root_entropy, threshold=aepo.p_branch, w=aepo.w, penalty=aepo.penalty)
        stats.tool_entropy.append(tool_entropy)

    def finish_probe(key: Hashable, g: _Group) -> None:
        """Pre-monitoring is over (the probe ended): H_tool, the budget m, and the other m - 1 independent ones."""
        entropies = g.probe_entropies if aepo.variant == "released" else g.probe_entropies[1:]
        set_budget(g, sum(entropies) / len(entropies) if entropies else g.root_entropy)
        for _ in range(g.budget - 1):  # type: ignore[operator]
            start_independent(key, g)

    for key, g in groups.items():
        g.probe = start_independent(key, g)
    stats.env_seconds += time.perf_counter() - start

    while True:
        live: list[int] = []
        contexts: list[list[int]] = []
        for i, ep in enumerate(episodes):
            if not ep.done:
                ctx = next_context(ep, config)
                if ctx is not None:
                    live.append(i)
                    contexts.append(ctx)
                elif groups[ep.group].budget is None and i == groups[ep.group].probe:  # out of context
                    finish_probe(ep.group, groups[ep.group])
        if not live and any(not episodes[j].done for j in range(len(episodes))):
            continue  # a probe just ended and started its group's independent episodes
        if not live:
            idle = [(key, g) for key, g in groups.items() if g.used < len(g.slots)]
            if not idle:
                break
            t0 = time.perf_counter()
            for key, g in idle:  # the branch budget was not used up: play the rest independently
                if g.budget is None:
                    set_budget(g, g.root_entropy)
                while g.used < len(g.slots):
                    start_independent(key, g)
                    stats.fallback_independent += 1
            stats.env_seconds += time.perf_counter() - t0
            continue
        t0 = time.perf_counter()
        requests = [GenerationRequest((run, i), ctx) for i, ctx in zip(live, contexts, strict=True)]
        sampled = backend.generate(requests, config.max_new_tokens)
        entropies = entropy_fn(contexts, [list(a.ids[: aepo.entropy_tokens]) for a in sampled])
        stats.generate_seconds += time.perf_counter() - t0
        stats.turn_generate_seconds.append(time.perf_counter() - t0)
        stats.generate_calls += 1
        t0 = time.perf_counter()
        branched_in_round = False
        for i, ctx, output, entropy in zip(live, contexts, sampled, entropies, strict=True):
            ep = episodes[i]
            g = groups[ep.group]
            step = len(ep.turns)
            if i == g.probe and g.budget is None:  # pre-monitoring: the probe plays alone
                g.probe_entropies.append(float(entropy))
                if step == 0:
                    g.root_entropy = float(entropy)
                    stats.root_entropy.append(g.root_entropy)
            elif step >= 1:  # a tool-call step: the model acts on an observation
                if g.penalty is not None and g.used < len(g.slots):
                    stats.branch_decisions += 1
                    if g.penalty.decide(float(entropy), rng.random()):
                        slot = g.slots[g.used]
                        g.used += 1
                        envs[slot] = copy_env_state(envs[env_of[i]], envs[slot], ep.task_id, ep.seed)
                        episodes.append(_branch_episode(ep, parent=i))
                        env_of.append(slot)
                        stats.branches += 1
                        branched_in_round = True
            stats.model_tokens += len(output.ids)
            apply_action(ep, envs[env_of[i]], ctx, output, fmt, config)
            if ep.done:
                backend.release([(run, i)])
            if g.budget is None and i == g.probe and ep.done:
                finish_probe(ep.group, g)
        if aepo.variant == "paper" or branched_in_round:  # released: counts move only in rounds with a branch
            for g in groups.values():
                if g.penalty is not None:
                    g.penalty.end_round()
        stats.env_seconds += time.perf_counter() - t0
    backend.release([(run, i) for i in range(len(episodes))])
    stats.seconds += time.perf_counter() - start
    return episodes


def action_entropies(model: Any, contexts: list[list[int]], actions: list[list[int]], pad_id: int) -> list[float]:
    """Mean full-vocabulary entropy of ``model``'s next-token distributions over each action's tokens.

    One no-grad forward pass over ``context + action`` (left-padded, positions from the mask);
    an empty action gets the entropy of the first sampled position.  An :data:`EntropyFn` for AEPO.

    Example:
        >>> from trl_plugins.models import tiny_model, tiny_tokenizer
        >>> tok = tiny_tokenizer(); model = tiny_model(tok)
        >>> len(action_entropies(model, [[5, 6], [7]], [[8, 9], [10]], pad_id=0))
        2
    """
    import torch

    device = next(model.parameters()).device
    rows = [list(c) + list(a) for c, a in zip(contexts, actions, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        attention[r, width - len(row) :] = 1
    ids, attention = ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)  # (rows, width): entropy of the prediction at each position
    out = []
    for r, action in enumerate(actions):
        n = max(1, len(action))
        # The prediction of an action's first token sits at the context's last position.
        out.append(entropy[r, width - len(action) - 1 : width - len(action) - 1 + n].mean().item())
    return out


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Success rate, mean return, turns, invalid-action rate, tokens per turn and truncation rates.

    Example:
        >>> episode_metrics([Episode(0, 1, 0, [1], [], won=True, done=True)])["success_rate"]
        1.0
    """
    n = max(1, len(episodes))
    turns = [t for ep in episodes for t in ep.turns]
    nt = max(1, len(turns))
    out = {
        "success_rate": sum(ep.won for ep in episodes) / n,
        "mean_return": sum(ep.total_return for ep in episodes) / n,
        "turns_per_episode": len(turns) / n,
        "invalid_action_rate": sum(t.parse_error is not None for t in turns) / nt,
        "tokens_per_turn": sum(len(t.action_ids) for t in turns) / nt,
        "turn_token_limit_rate": sum(t.hit_token_limit for t in turns) / nt,
        "truncation_rate": sum(ep.truncated for ep in episodes) / n,
    }
    for reason in ("step_limit", "max_turns", "context_budget", "crash"):
        out[f"truncated_{reason}"] = sum(ep.truncation_reason == reason for ep in episodes) / n
    return out


__all__ = [
    "CONTEXT_MODES",
    "CallableBackend",
    "ChatFormat",
    "EntropyFn",
    "Episode",
    "GenerateFn",
    "InProcessWorker",
    "RolloutConfig",
    "RolloutStats",
    "Turn",
    "action_entropies",
    "copy_env_state",
    "episode_metrics",
    "run_episodes",
    "run_episodes_aepo",
    "state_key",
    "stop_ids_for",
]
