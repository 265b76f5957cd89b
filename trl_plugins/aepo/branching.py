"""AEPO's rollout half (arXiv 2510.14545): the dynamic entropy-balanced rollout, built on the engine's branching seam.

* :func:`aepo_rollout_budget` (entropy pre-monitoring: how many of a group's ``k`` samples start independently),
  :func:`aepo_branch_probability` and :class:`BranchPenaltyState` (the per-prompt branching decision);
* :func:`run_branching_episodes`: the rollout itself, a loop of its own built from the engine's public steps
  (:func:`~agentgym_envs.engine.start_episodes`, :func:`~agentgym_envs.engine.next_context`,
  :func:`~agentgym_envs.engine.apply_action`) and its fork (:func:`~agentgym_envs.engine.fork_episode`: an episode
  and its environment's state); :class:`BranchingStats` is what it counts;
* :func:`action_entropies`: the sampling policy's entropy (at the sampling temperature) over sampled actions (the
  branching signal, an :data:`EntropyFn`); :func:`recorded_action_entropies`: the same numbers read from what a
  sampler that records entropies (``GenerationOutput.entropies``) gave, which the rollout uses instead of a forward.

Example:
    >>> aepo_rollout_budget(1.0, 1.0, k=12)
    7
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym_envs.engine import (
    ChatFormat,
    Episode,
    GenerateFn,
    RolloutConfig,
    RolloutStats,
    apply_action,
    as_backend,
    as_worker,
    check_stop_ids,
    fork_episode,
    new_run_id,
    next_context,
    start_episodes,
)
from agentgym_envs.generation.base import GenerationBackend, GenerationOutput, GenerationRequest
from trl_plugins.aepo.config import AEPOBranchConfig
from trl_plugins.errors import LossHookConfigError, TrainerConfigError

__all__ = [
    "BranchPenaltyState",
    "BranchingStats",
    "EntropyFn",
    "action_entropies",
    "aepo_branch_probability",
    "aepo_rollout_budget",
    "recorded_action_entropies",
    "run_branching_episodes",
]

#: ``entropy_fn(contexts, actions) -> mean policy entropy over each action's tokens`` (AEPO's branching signal).
EntropyFn = Callable[[list[list[int]], list[list[int]]], list[float]]


def aepo_rollout_budget(root_entropy: float, tool_entropy: float, k: int = 12, beta: float = 0.5) -> int:
    """AEPO's entropy pre-monitoring: how many of a prompt's ``k`` samples start as independent rollouts.

    ``m = clip(floor(k * sigmoid(beta * (H_root - H_tool))) + 1, 1, k)``; the other ``k - m`` are branches.

    Example:
        >>> aepo_rollout_budget(1.0, 1.0, k=12)  # sigmoid(0) = 0.5 -> 6 + 1
        7
    """
    if k < 1:
        raise LossHookConfigError(f"k must be >= 1, got {k}")
    sig = 1.0 / (1.0 + math.exp(-beta * (root_entropy - tool_entropy)))
    return int(min(max(math.floor(k * sig) + 1, 1), k))


def aepo_branch_probability(
    entropy_now: float,
    entropy_init: float,
    consecutive_branches: int,
    u: float,
    w: float = 0.2,
    penalty: float = 0.05,
) -> float:
    """AEPO's branching probability at a tool-call step, with the consecutive-branch penalty.

    ``p = clip((u + w * (H_now - H_init)) * max(0, 1 - penalty * l), 0, 1)``; ``u ~ U(0, 1)`` is drawn by the caller
    (so this stays pure) and ``l`` counts the consecutive branching rounds of the prompt (rounds of generation in which
    it branched, up to the current one; :class:`BranchPenaltyState`).  Branch when ``p >= p_branch``.

    Example:
        >>> aepo_branch_probability(2.0, 1.0, consecutive_branches=2, u=0.5)  # (0.5 + 0.2) * 0.9
        0.63
    """
    if consecutive_branches < 0:
        raise LossHookConfigError("consecutive_branches must be >= 0")
    p = (u + w * (entropy_now - entropy_init)) * max(0.0, 1.0 - penalty * consecutive_branches)
    return round(min(max(p, 0.0), 1.0), 12)


@dataclass
class BranchPenaltyState:
    """Per-prompt branching state for the rollout engine: consecutive branching rounds and totals.

    Within one round of generation every decision of the prompt uses the same count ``l`` (:meth:`decide`);
    :meth:`end_round` then adds one if the prompt branched in that round and resets it to 0 otherwise.

    Example:
        >>> s = BranchPenaltyState(entropy_init=1.0)
        >>> s.decide(entropy_now=3.0, u=0.6), s.decide(entropy_now=3.0, u=0.6), s.consecutive
        (True, True, 0)
        >>> s.end_round(); s.consecutive, s.branches
        (1, 2)
    """

    entropy_init: float
    threshold: float = 0.5
    w: float = 0.2
    penalty: float = 0.05
    consecutive: int = 0
    branches: int = 0
    decisions: int = 0
    branched_this_round: bool = False

    def decide(self, entropy_now: float, u: float) -> bool:
        """Whether to branch at this tool-call step (the consecutive count changes only in :meth:`end_round`)."""
        p = aepo_branch_probability(entropy_now, self.entropy_init, self.consecutive, u, self.w, self.penalty)
        branch = p >= self.threshold
        self.decisions += 1
        self.branches += int(branch)
        self.branched_this_round = self.branched_this_round or branch
        return branch

    def end_round(self) -> None:
        """Close a round of generation: one more consecutive branching round, or back to 0."""
        self.consecutive = self.consecutive + 1 if self.branched_this_round else 0
        self.branched_this_round = False


@dataclass
class BranchingStats(RolloutStats):
    """The engine's timing of a rollout plus AEPO's branching counts.

    Attributes:
        independent: episodes started from a reset (the probes, the budget's others and the fallbacks).
        branches: episodes forked from another at a tool-call step.
        branch_decisions: branching decisions taken (tool-call steps of a group with free slots).
        fallback_independent: independent episodes started because a group's branch budget was not used up.
        root_entropy / tool_entropy: each group's ``H_root`` and ``H_tool``.

    Example:
        >>> BranchingStats(independent=3, branches=1).metrics()["aepo/branches"]
        1.0
    """

    independent: int = 0
    branches: int = 0
    branch_decisions: int = 0
    fallback_independent: int = 0
    root_entropy: list[float] = field(default_factory=list)
    tool_entropy: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The counts as the trainer logs them (``aepo/*``; the entropies as their means, when there are any)."""
        out = {
            "aepo/independent_rollouts": float(self.independent),
            "aepo/branches": float(self.branches),
            "aepo/branch_decisions": float(self.branch_decisions),
            "aepo/fallback_independent": float(self.fallback_independent),
        }
        for name, values in (("root_entropy", self.root_entropy), ("tool_entropy", self.tool_entropy)):
            if values:
                out[f"aepo/{name}"] = sum(values) / len(values)
        return out


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

    @property
    def full(self) -> bool:
        return self.used >= len(self.slots)


def recorded_action_entropies(
    sampled: Sequence[GenerationOutput],
    sampled_at: float | None,
    entropy_temperature: float | None,
    entropy_tokens: int,
) -> list[float | None]:
    """What :func:`action_entropies` gives each sampled action, read from the entropies its sampler recorded.

    ``sampled_at`` is the backend's sampling temperature, ``entropy_temperature`` the one the rollout's
    :data:`EntropyFn` takes its entropies at (``None``: unknown).  An action's value is the mean of its first
    ``entropy_tokens`` recorded entropies: :func:`action_entropies` over ``ids[:entropy_tokens]`` averages the
    same positions of the same distribution, ``softmax(logits / T)`` over the whole vocabulary (the sampler records
    it before top-k/top-p filtering), after the same context, from the same weights.  ``None`` where the recorded
    numbers are not that quantity, so the caller runs its entropy forward: no entropies recorded (vLLM, OpenAI and
    callable backends, which may re-tokenise text), not one per sampled id, another temperature, or an empty reply.

    Example:
        >>> out = GenerationOutput(ids=[5, 6, 7], logprobs=None, finish_reason="length", entropies=[1.0, 2.0, 6.0])
        >>> recorded_action_entropies([out], 0.7, 0.7, entropy_tokens=2), recorded_action_entropies([out], 0.7, 1.0, 2)
        ([1.5], [None])
    """
    if entropy_temperature is None or sampled_at != entropy_temperature:
        return [None] * len(sampled)
    out: list[float | None] = []
    for output in sampled:
        recorded = output.entropies
        # An empty reply's branching entropy is that of its first sampled position, which nothing recorded; a count
        # other than one per id means they do not lie along the ids the entropy forward would read.
        if not recorded or len(recorded) != len(output.ids):
            out.append(None)
            continue
        head = recorded[:entropy_tokens]
        out.append(sum(head) / len(head))
    return out


class _BranchingRollout:
    """One call of :func:`run_branching_episodes`: the groups, the episodes and the environment each plays in."""

    def __init__(
        self,
        envs: Sequence[Any],
        tasks: Sequence[tuple[Hashable, int | None, Hashable]],
        backend: Any,
        entropy_fn: EntropyFn,
        fmt: ChatFormat,
        config: RolloutConfig,
        branching: AEPOBranchConfig,
        stats: BranchingStats,
        rng: random.Random,
        entropy_temperature: float | None = None,
    ) -> None:
        self.envs = list(envs)
        self.backend, self.entropy_fn, self.fmt, self.config = backend, entropy_fn, fmt, config
        self.entropy_temperature = entropy_temperature
        self.branching, self.stats, self.rng = branching, stats, rng
        self.run = new_run_id()
        self.groups: dict[Hashable, _Group] = {}
        for slot, (task_id, seed, group) in enumerate(tasks):
            self.groups.setdefault(group, _Group(task_id, seed, [])).slots.append(slot)
        self.episodes: list[Episode] = []
        self.env_of: list[int] = []  # the slot in ``envs`` each episode plays in

    # ---- starting episodes ----------------------------------------------------------------------
    def start_independent(self, key: Hashable, g: _Group) -> int:
        slot = g.slots[g.used]
        g.used += 1
        self.episodes += start_episodes([as_worker(self.envs[slot])], [(g.task_id, g.seed, key)], self.fmt, self.config)
        self.env_of.append(slot)
        self.stats.independent += 1
        return len(self.episodes) - 1

    def set_budget(self, g: _Group, tool_entropy: float) -> None:
        b = self.branching
        g.budget = aepo_rollout_budget(g.root_entropy, tool_entropy, k=len(g.slots), beta=b.beta)
        g.penalty = BranchPenaltyState(g.root_entropy, threshold=b.p_branch, w=b.w, penalty=b.penalty)
        self.stats.tool_entropy.append(tool_entropy)

    def finish_probe(self, key: Hashable, g: _Group) -> None:
        """Pre-monitoring is over (the probe ended): H_tool, the budget m, and the other m - 1 independent ones."""
        entropies = g.probe_entropies if self.branching.variant == "released" else g.probe_entropies[1:]
        self.set_budget(g, sum(entropies) / len(entropies) if entropies else g.root_entropy)
        for _ in range(g.budget - 1):  # type: ignore[operator]
            self.start_independent(key, g)

    def fill_idle_groups(self) -> bool:
        """Play the slots left by groups whose episodes have all ended independently; ``False`` if there are none."""
        idle = [(key, g) for key, g in self.groups.items() if not g.full]
        if not idle:
            return False
        t0 = time.perf_counter()
        for key, g in idle:
            if g.budget is None:
                self.set_budget(g, g.root_entropy)
            while not g.full:
                self.start_independent(key, g)
                self.stats.fallback_independent += 1
        self.stats.env_seconds += time.perf_counter() - t0
        return True

    # ---- one round of generation ----------------------------------------------------------------
    def live_contexts(self) -> tuple[list[int], list[list[int]]]:
        """The live episodes and their next contexts (a probe out of context ends its group's pre-monitoring)."""
        live: list[int] = []
        contexts: list[list[int]] = []
        for i, ep in enumerate(self.episodes):  # grows while it runs: a finished probe starts the others
            if ep.done:
                continue
            ctx = next_context(ep, self.config)
            g = self.groups[ep.group]
            if ctx is not None:
                live.append(i)
                contexts.append(ctx)
            elif g.budget is None and i == g.probe:
                self.finish_probe(ep.group, g)
        return live, contexts

    def generate(self, live: list[int], contexts: list[list[int]]) -> tuple[list[GenerationOutput], list[float]]:
        """Each live episode's next action and its entropy over the first ``entropy_tokens`` tokens.

        The entropy comes from what the sampler recorded where that is :func:`action_entropies`' number (no forward
        whose result is already known); the others from ``entropy_fn``, in one call.
        """
        t0 = time.perf_counter()
        requests = [GenerationRequest((self.run, i), ctx) for i, ctx in zip(live, contexts, strict=True)]
        sampled = self.backend.generate(requests, self.config.max_new_tokens)
        n = self.branching.entropy_tokens
        sampled_at = getattr(getattr(self.backend, "settings", None), "temperature", None)
        recorded = recorded_action_entropies(sampled, sampled_at, self.entropy_temperature, n)
        missing = [j for j, h in enumerate(recorded) if h is None]
        computed = iter(
            self.entropy_fn([contexts[j] for j in missing], [list(sampled[j].ids[:n]) for j in missing])
            if missing
            else []
        )
        entropies = [h if h is not None else next(computed) for h in recorded]
        elapsed = time.perf_counter() - t0
        self.stats.generate_seconds += elapsed
        self.stats.turn_generate_seconds.append(elapsed)
        self.stats.generate_calls += 1
        return sampled, entropies

    def observe(self, i: int, entropy: float) -> bool:
        """Record episode ``i``'s entropy at this step; whether to fork it here (before its action is applied)."""
        ep = self.episodes[i]
        g = self.groups[ep.group]
        if i == g.probe and g.budget is None:  # pre-monitoring: the probe plays alone
            g.probe_entropies.append(entropy)
            if not ep.turns:
                g.root_entropy = entropy
                self.stats.root_entropy.append(entropy)
            return False
        if not ep.turns or g.penalty is None or g.full:  # branch only at tool-call steps, while slots are free
            return False
        self.stats.branch_decisions += 1
        return g.penalty.decide(entropy, self.rng.random())

    def fork(self, i: int) -> None:
        """Fork episode ``i`` before its action: the branch gets the next free slot of its group."""
        ep = self.episodes[i]
        g = self.groups[ep.group]
        slot = g.slots[g.used]
        g.used += 1
        branch, self.envs[slot] = fork_episode(ep, i, self.envs[self.env_of[i]], self.envs[slot])
        self.episodes.append(branch)
        self.env_of.append(slot)
        self.stats.branches += 1

    def play_round(self, live: list[int], contexts: list[list[int]]) -> None:
        """Generate, decide the forks, apply every action; then close the round of each group's branching count."""
        sampled, entropies = self.generate(live, contexts)
        t0 = time.perf_counter()
        branched = False
        for i, ctx, output, entropy in zip(live, contexts, sampled, entropies, strict=True):
            if self.observe(i, float(entropy)):
                self.fork(i)
                branched = True
            ep = self.episodes[i]
            self.stats.model_tokens += len(output.ids)
            apply_action(ep, self.envs[self.env_of[i]], ctx, output, self.fmt, self.config)
            if ep.done:
                self.backend.release([(self.run, i)])
            g = self.groups[ep.group]
            if g.budget is None and i == g.probe and ep.done:
                self.finish_probe(ep.group, g)
        if self.branching.variant == "paper" or branched:  # released: counts move only in rounds with a branch
            for g in self.groups.values():
                if g.penalty is not None:
                    g.penalty.end_round()
        self.stats.env_seconds += time.perf_counter() - t0

    def play(self) -> list[Episode]:
        start = time.perf_counter()
        for key, g in self.groups.items():
            g.probe = self.start_independent(key, g)
        self.stats.env_seconds += time.perf_counter() - start
        try:
            while True:
                live, contexts = self.live_contexts()
                if live:
                    self.play_round(live, contexts)
                elif all(ep.done for ep in self.episodes) and not self.fill_idle_groups():
                    break
                # else: a probe just ran out of context and started its group's independent episodes
        finally:
            self.backend.release([(self.run, i) for i in range(len(self.episodes))])
        self.stats.seconds += time.perf_counter() - start
        return self.episodes


def run_branching_episodes(
    envs: Sequence[Any],
    tasks: Sequence[tuple[Hashable, int | None, Hashable]],
    backend: GenerationBackend | GenerateFn,
    fmt: ChatFormat,
    config: RolloutConfig,
    *,
    entropy_fn: EntropyFn,
    branching: AEPOBranchConfig | None = None,
    stats: BranchingStats | None = None,
    rng: random.Random | None = None,
    entropy_temperature: float | None = None,
) -> list[Episode]:
    """AEPO's dynamic entropy-balanced rollout: ``k`` samples per group, ``m`` independent and ``k - m`` branches.

    ``envs`` are environments (one per task; a branch's state is copied into the slot it takes, with
    ``snapshot()``/``restore()`` or ``deepcopy``), ``backend`` a generation backend or a plain
    ``generate_fn(contexts, max_new_tokens)``, ``entropy_fn`` the policy's entropy over sampled actions
    (:func:`action_entropies`).  Returns the ``len(tasks)`` episodes; a branch records the episode it was forked from
    and the turn (``Episode.parent``, ``Episode.branch_turn``).

    ``entropy_temperature``: the temperature ``entropy_fn`` takes the sampling policy's entropy at (what
    :func:`action_entropies` is given; stating it says ``entropy_fn`` scores with the backend's weights).  When the
    backend samples at it and records entropies
    (:class:`~agentgym_envs.generation.transformers.TransformersBackend`), an action's entropy is read from them
    (:func:`recorded_action_entropies`) and ``entropy_fn`` runs only for the others: the same numbers, no forward.
    ``None`` (default): ``entropy_fn`` gives every entropy.

    Per group (the ``k`` tasks sharing a group key): a probe episode plays first, alone (pre-monitoring).
    Its first turn's entropy is ``H_root``; ``H_tool`` is the mean entropy of its tool-call steps (the turns
    after an observation; ``H_root`` when it has none; with ``variant="released"`` the mean of all its
    turns).  When the probe has ended, ``m = aepo_rollout_budget(H_root, H_tool, k, beta)`` and ``m - 1``
    more independent episodes start.  At every tool-call step of those, while the group has fewer than
    ``k`` episodes, the step's entropy ``H_now`` decides (with :class:`BranchPenaltyState`, ``H_init = H_root``)
    whether to branch: the branch is forked (:func:`agentgym_envs.engine.fork_episode`) before that step's action
    and samples its own action from the same context.  The consecutive-branch penalty counts rounds of generation
    (one batched ``generate`` call): ``l`` is fixed within a round and grows by one after each round in which the
    group branched, else returns to 0.  Slots left when a group's episodes have all ended are filled with
    independent episodes (``stats.fallback_independent``).

    Example:
        >>> eps = run_branching_episodes(envs, [(0, 1, 0)] * 4, gen, fmt, RolloutConfig(max_turns=4),
        ...                              entropy_fn=ent, branching=AEPOBranchConfig(p_branch=0.2))  # doctest: +SKIP
    """
    if len(envs) < len(tasks):
        raise ValueError(f"{len(tasks)} episodes need as many environments, got {len(envs)}")
    branching = branching if branching is not None else AEPOBranchConfig()
    backend = as_backend(backend, fmt)
    check_stop_ids(backend, fmt, config)
    stats = stats if stats is not None else BranchingStats()
    rng = rng if rng is not None else random.Random(branching.seed)
    return _BranchingRollout(
        envs, tasks, backend, entropy_fn, fmt, config, branching, stats, rng, entropy_temperature
    ).play()


def action_entropies(
    model: Any, contexts: list[list[int]], actions: list[list[int]], pad_id: int, temperature: float = 1.0
) -> list[float]:
    """Mean full-vocabulary entropy of the sampling distribution ``softmax(logits / temperature)`` over each action.

    ``temperature`` is the one the actions were sampled at: the paper's token entropy is that of the decoding
    distribution, the released code reads the sampler's own log-probabilities, and the trainer's loss-side entropy
    (which AEPO's advantage standardises) is taken at the same temperature (``docs/loss_hooks.md``).  One no-grad
    forward pass over ``context + action`` (left-padded, positions from the mask); an empty action gets the entropy
    of the first sampled position.  An :data:`EntropyFn` for AEPO once ``model``, ``pad_id`` and ``temperature``
    are bound.

    Raises:
        TrainerConfigError: ``temperature`` is not a finite number above 0.

    Example:
        >>> from trl_plugins.models import tiny_model, tiny_tokenizer
        >>> tok = tiny_tokenizer(); model = tiny_model(tok)
        >>> len(action_entropies(model, [[5, 6], [7]], [[8, 9], [10]], pad_id=0, temperature=0.7))
        2
    """
    import torch

    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise TrainerConfigError(f"AEPO's branching entropy needs a sampling temperature > 0, got {temperature!r}")
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
    logp = torch.log_softmax(logits / temperature, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)  # (rows, width): entropy of the prediction at each position
    out = []
    for r, action in enumerate(actions):
        n = max(1, len(action))
        # The prediction of an action's first token sits at the context's last position.
        out.append(entropy[r, width - len(action) - 1 : width - len(action) - 1 + n].mean().item())
    return out
