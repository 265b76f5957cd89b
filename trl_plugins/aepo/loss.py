"""AEPO's loss half (arXiv 2510.14545): entropy-aware advantages and the entropy-balanced clip, as a loss hook.

:func:`aepo_entropy_advantages` and :func:`aepo_policy_loss` are the formulas; :class:`AEPOHook` applies them in the
trainer's loss pipeline (:mod:`trl_plugins.hooks`, which finds it by the name ``"aepo"``).  Its parameters are
:class:`~trl_plugins.aepo.config.AEPOConfig`'s.

Example:
    >>> AEPOHook(coef=0.1).config.coef
    0.1
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from trl_plugins.aepo.config import AEPOConfig
from trl_plugins.distributed import Ranks
from trl_plugins.hooks.base import LossContext, LossHook, MetricAccumulator, require_input
from trl_plugins.hooks.reductions import clip_regions, clipped_surrogate

__all__ = ["AEPOHook", "aepo_entropy_advantages", "aepo_policy_loss"]


def aepo_entropy_advantages(
    advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, coef: float = 0.2, ranks: Ranks | None = None
) -> torch.Tensor:
    """AEPO's entropy-aware advantage ``A * (1 + c * sg(H_hat))``, ``H_hat`` standardised over valid batch tokens.

    The std is unbiased; it is replaced by 1 when zero or undefined (fewer than two valid tokens).  Positions outside
    ``mask`` keep their advantage.  With several processes (``ranks``) the mean and std are over every process's
    valid tokens.

    Example:
        >>> aepo_entropy_advantages(torch.ones(1, 3), torch.tensor([[0.0, 1.0, 2.0]]), torch.ones(1, 3), coef=0.5)
        tensor([[0.5000, 1.0000, 1.5000]])
    """
    ranks = ranks or Ranks()
    h = entropy.detach()
    valid = mask.bool()
    w = valid.to(h.dtype)
    total, n = ranks.sum(torch.stack([(h * w).sum(), w.sum()]))
    mean = total / n.clamp(min=1.0)
    var = ranks.sum((((h - mean) * w) ** 2).sum()) / (n - 1.0).clamp(min=1.0)
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


class AEPOHook(LossHook):
    """AEPO (arXiv 2510.14545): entropy-aware advantages and the gradient-preserving (entropy-balanced) clip.

    Its parameters are :class:`~trl_plugins.aepo.config.AEPOConfig`'s (the hook ignores ``branching``, which the
    trainer's rollout reads).  The rollout half of AEPO is :func:`trl_plugins.aepo.run_branching_episodes`; a
    rollout of another kind reports its counts with :meth:`record_branching`.

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
        return aepo_entropy_advantages(ctx.advantages, entropy, ctx.mask, self.config.coef, ctx.ranks)

    def policy_loss(self, ctx: LossContext) -> torch.Tensor:
        c = self.config
        valid = ctx.mask.bool()
        with torch.no_grad():
            ratio = torch.exp(ctx.logps.detach() - ctx.old_logps)
            low, preserved = clip_regions(ratio, ctx.advantages, c.eps_low, c.eps_high)
            dual = (ctx.advantages < 0) & (ratio > (c.dual_clip if c.dual_clip is not None else float("inf"))) & valid
            # Fractions of every process's model tokens (one reduction for the four counts).
            counts = ctx.ranks.sum(
                torch.stack([valid.sum(), (preserved & valid).sum(), (low & valid).sum(), dual.sum()]).float()
            )
            n = counts[0].clamp(min=1)
            self._metrics.add("aepo/preserved_grad_fraction", counts[1] / n)
            self._metrics.add("aepo/clip_low_fraction", counts[2] / n)
            if c.dual_clip is not None:
                self._metrics.add("aepo/dual_clip_fraction", counts[3] / n)
        return aepo_policy_loss(ctx.logps, ctx.old_logps, ctx.advantages, ctx.mask, c.eps_low, c.eps_high, c.dual_clip)

    def record_branching(self, independent: int, branches: int) -> None:
        """Log the rollout engine's counts for this step (independent rollouts and branches)."""
        self._metrics.add("aepo/independent_rollouts", independent)
        self._metrics.add("aepo/branches", branches)

    def metrics(self) -> dict[str, float]:
        return self._metrics.pop()
