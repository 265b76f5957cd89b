"""AEPO (arXiv 2510.14545), all of it: entropy-aware advantages, the entropy-balanced clip, and the rollout half.

* loss: :func:`aepo_entropy_advantages`, :func:`aepo_policy_loss` and :class:`AEPOHook` / :class:`AEPOConfig`;
* rollout: :class:`AEPOBranchConfig` (the branching settings), :func:`aepo_rollout_budget` (entropy
  pre-monitoring), :func:`aepo_branch_probability` and :class:`BranchPenaltyState` (the per-prompt branching state).
  The rollout engine (:func:`trl_plugins.rollout.run_episodes_aepo`) imports them from here.

Example:
    >>> aepo_rollout_budget(1.0, 1.0, k=12)
    7
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks.base import LossContext, LossHook, MetricAccumulator, require_input
from trl_plugins.hooks.reductions import clip_regions, clipped_surrogate

__all__ = [
    "aepo_entropy_advantages",
    "aepo_policy_loss",
    "aepo_rollout_budget",
    "aepo_branch_probability",
    "AEPOBranchConfig",
    "BranchPenaltyState",
    "AEPOConfig",
    "AEPOHook",
]


def aepo_entropy_advantages(
    advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, coef: float = 0.2
) -> torch.Tensor:
    """AEPO's entropy-aware advantage ``A * (1 + c * sg(H_hat))``, ``H_hat`` standardised over valid batch tokens.

    The std is unbiased; it is replaced by 1 when zero or undefined (fewer than two valid tokens).  Positions outside
    ``mask`` keep their advantage.

    Example:
        >>> aepo_entropy_advantages(torch.ones(1, 3), torch.tensor([[0.0, 1.0, 2.0]]), torch.ones(1, 3), coef=0.5)
        tensor([[0.5000, 1.0000, 1.5000]])
    """
    h = entropy.detach()
    valid = mask.bool()
    w = valid.to(h.dtype)
    n = w.sum()
    mean = (h * w).sum() / n.clamp(min=1.0)
    var = (((h - mean) * w) ** 2).sum() / (n - 1.0).clamp(min=1.0)
    # Unbiased std; 1 when it is 0 or undefined (fewer than two valid tokens).  No host sync.
    std = torch.where((n > 1) & (var > 0), var.sqrt(), torch.ones_like(var))
    h_hat = (h - mean) / std
    return torch.where(valid, advantages * (1.0 + coef * h_hat), advantages)


def aepo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = 3.0,
) -> torch.Tensor:
    """AEPO's per-token loss with the gradient-preserving upper clip (zeros outside ``mask``).

    ``max(-A r, -A clip(r, 1-eps_l, (1+eps_h) r / sg(r)))`` then the dual clip ``min(., -c A)`` for ``A < 0``.  When
    ``A > 0`` and ``r > 1+eps_h`` the value is the clipped one but the gradient is ``-(1+eps_h) A grad(log pi)``
    (PPO's is 0); every other case equals PPO.

    Example:
        >>> lp = torch.tensor([0.5], requires_grad=True)
        >>> aepo_policy_loss(lp, torch.zeros(1), torch.ones(1), torch.ones(1)).sum().backward()
        >>> round(float(lp.grad), 4)
        -1.2
    """
    ratio = torch.exp(logp - old_logp)
    upper = (1.0 + eps_high) * ratio / ratio.detach()  # value 1+eps_h, gradient (1+eps_h) * grad log pi
    clipped = torch.where(ratio > 1.0 + eps_high, upper, ratio.clamp(min=1.0 - eps_low))
    loss = clipped_surrogate(ratio, clipped, advantages, dual_clip)
    return torch.where(mask.bool(), loss, torch.zeros_like(loss))


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


@dataclass(frozen=True)
class AEPOBranchConfig:
    """AEPO's dynamic entropy-balanced rollout (arXiv 2510.14545); see :func:`trl_plugins.rollout.run_episodes`.

    ``k`` of the paper is the group size (the number of ``tasks`` sharing a group key).

    Attributes:
        beta: temperature of the budget ``m = clip(floor(k * sigmoid(beta * (H_root - H_tool))) + 1, 1, k)``.
        w: weight of ``H_now - H_init`` in the branching probability.
        p_branch: branch when the probability reaches it.
        penalty: consecutive-branch penalty per consecutive branching round (0.05 in the paper).
        entropy_tokens: the entropy of a turn is the mean over its first ``entropy_tokens`` sampled tokens.
        seed: seed of the ``U(0, 1)`` draws (``None``: not reproducible).
        variant: ``"paper"`` (default): ``H_tool`` is the mean entropy of the probe's tool-call steps (its turns after
            an observation), and a round in which a prompt does not branch resets its consecutive count.
            ``"released"`` (opt-in, the authors' ARPO/AEPO rollout code): ``H_tool`` averages every generation
            round of the probe, its first one included, and the consecutive counts are only updated (incremented
            or reset) in rounds in which some prompt of the batch branched.

    Example:
        >>> AEPOBranchConfig(p_branch=0.2).w
        0.2
    """

    beta: float = 0.5
    w: float = 0.2
    p_branch: float = 0.5
    penalty: float = 0.05
    entropy_tokens: int = 10
    seed: int | None = None
    variant: str = "paper"

    def __post_init__(self) -> None:
        if self.variant not in ("paper", "released"):
            raise LossHookConfigError(f"AEPO branching variant must be 'paper' or 'released', not {self.variant!r}")
        if self.entropy_tokens < 1:
            raise LossHookConfigError(f"entropy_tokens must be >= 1, got {self.entropy_tokens}")
        if self.penalty < 0:
            raise LossHookConfigError(f"penalty must be >= 0, got {self.penalty}")


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
class AEPOConfig:
    """Parameters of :class:`AEPOHook`.

    Attributes:
        coef: c of the entropy-aware advantage (paper 0.2).
        eps_low, eps_high: clip range (the spec gives none; PPO's 0.2 on both sides).
        dual_clip: dual-clip constant for negative advantages (3); None disables it.
        use_old_entropy: standardise the sampling-time entropy (``ctx.old_entropy``) instead of the current one.
    """

    coef: float = 0.2
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = 3.0
    use_old_entropy: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.eps_low < 1 or self.eps_high < 0:
            raise LossHookConfigError(f"AEPO needs 0 <= eps_low < 1 and eps_high >= 0, got {self}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise LossHookConfigError(f"dual_clip must be > 1, got {self.dual_clip}")


class AEPOHook(LossHook):
    """AEPO (arXiv 2510.14545): entropy-aware advantages and the gradient-preserving (entropy-balanced) clip.

    The rollout half of AEPO (:class:`AEPOBranchConfig`, :func:`aepo_rollout_budget`,
    :func:`aepo_branch_probability`, :class:`BranchPenaltyState`) is defined in this module and used by the rollout
    engine (:func:`trl_plugins.rollout.run_episodes_aepo`); other engines report their counts with
    :meth:`record_branching`.

    Example:
        >>> AEPOHook(coef=0.1).config.coef
        0.1
    """

    name = "aepo"

    def __init__(self, config: AEPOConfig | None = None, **overrides: Any) -> None:
        self.config = AEPOConfig(**{**asdict(config or AEPOConfig()), **overrides})
        # The advantage reads one of the two entropies: the trainer then computes only that one.
        self.needs_old_entropy = self.config.use_old_entropy
        self.needs_entropy = not self.config.use_old_entropy
        self._metrics = MetricAccumulator()

    def transform_advantages(self, ctx: LossContext) -> torch.Tensor:
        source = ctx.old_entropy if self.config.use_old_entropy else ctx.entropy
        entropy = require_input(source, "old_entropy" if self.config.use_old_entropy else "entropy", "AEPO")
        return aepo_entropy_advantages(ctx.advantages, entropy, ctx.mask, self.config.coef)

    def policy_loss(self, ctx: LossContext) -> torch.Tensor:
        c = self.config
        valid = ctx.mask.bool()
        with torch.no_grad():
            ratio = torch.exp(ctx.logps.detach() - ctx.old_logps)
            n = valid.sum().clamp(min=1)
            low, preserved = clip_regions(ratio, ctx.advantages, c.eps_low, c.eps_high)
            self._metrics.add("aepo/preserved_grad_fraction", (preserved & valid).sum() / n)
            self._metrics.add("aepo/clip_low_fraction", (low & valid).sum() / n)
            if c.dual_clip is not None:
                dual = (ctx.advantages < 0) & (ratio > c.dual_clip) & valid
                self._metrics.add("aepo/dual_clip_fraction", dual.sum() / n)
        return aepo_policy_loss(ctx.logps, ctx.old_logps, ctx.advantages, ctx.mask, c.eps_low, c.eps_high, c.dual_clip)

    def record_branching(self, independent: int, branches: int) -> None:
        """Log the rollout engine's counts for this step (independent rollouts and branches)."""
        self._metrics.add("aepo/independent_rollouts", independent)
        self._metrics.add("aepo/branches", branches)

    def metrics(self) -> dict[str, float]:
        return self._metrics.pop()
