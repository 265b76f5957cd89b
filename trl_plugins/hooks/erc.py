"""ERC (arXiv 2512.05591): stop the policy gradient of tokens whose entropy ratio left a band around 1.

Example:
    >>> import torch
    >>> entropy_ratio_mask(torch.tensor([1.0, 1.04, 1.05, 0.9]), torch.ones(4))
    tensor([ True,  True, False, False])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks.base import LossContext, LossHook, MetricAccumulator, require_input

__all__ = ["entropy_ratio", "entropy_ratio_mask", "erc_token_loss", "ERCConfig", "ERCHook"]


def entropy_ratio(entropy: torch.Tensor, old_entropy: torch.Tensor) -> torch.Tensor:
    """ERC's ratio ``rho = (H + 1e-8) / (H_old + 1e-8)`` (no gradient).

    Example:
        >>> entropy_ratio(torch.tensor([2.0]), torch.tensor([1.0]))
        tensor([2.])
    """
    return (entropy.detach() + 1e-8) / (old_entropy.detach() + 1e-8)


def entropy_ratio_mask(
    entropy: torch.Tensor, old_entropy: torch.Tensor, beta_low: float = 0.05, beta_high: float = 0.05
) -> torch.Tensor:
    """ERC's keep-mask: True where ``1 - beta_low < rho < 1 + beta_high`` (strict), ``rho = (H+1e-8)/(H_old+1e-8)``.

    Example:
        >>> entropy_ratio_mask(torch.tensor([1.0, 1.04, 1.05, 0.9]), torch.ones(4))
        tensor([ True,  True, False, False])
    """
    if beta_low < 0 or beta_high < 0:
        raise LossHookConfigError("ERC beta_low and beta_high must be >= 0")
    rho = entropy_ratio(entropy, old_entropy)
    return (rho > 1.0 - beta_low) & (rho < 1.0 + beta_high)


def erc_token_loss(token_loss: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Tokens outside the ERC band keep their loss value but lose their gradient (they still count in the normaliser).

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> erc_token_loss(x * 3, torch.tensor([True, False])).sum().backward(); x.grad
        tensor([3., 0.])
    """
    return torch.where(keep, token_loss, token_loss.detach())


@dataclass
class ERCConfig:
    """Parameters of :class:`ERCHook` (paper defaults 0.05 / 0.05)."""

    beta_low: float = 0.05
    beta_high: float = 0.05

    def __post_init__(self) -> None:
        if self.beta_low < 0 or self.beta_high < 0 or self.beta_low >= 1:
            raise LossHookConfigError(f"ERC needs 0 <= beta_low < 1 and beta_high >= 0, got {self}")


class ERCHook(LossHook):
    """ERC (arXiv 2512.05591): stop the policy gradient of tokens whose entropy ratio left ``(1-b_l, 1+b_h)``.

    Needs ``ctx.old_entropy``, stored with the old log-probabilities when the batch was scored.  Only the per-token
    policy loss is masked (the entropy bonus and KL terms are not).  With a single on-policy step rho == 1.

    Example:
        >>> ERCHook(beta_low=0.1).config.beta_low
        0.1
    """

    name = "erc"
    needs_entropy = True
    needs_old_entropy = True

    def __init__(self, config: ERCConfig | None = None, **overrides: Any) -> None:
        self.config = ERCConfig(**{**asdict(config or ERCConfig()), **overrides})
        self._metrics = MetricAccumulator()

    def transform_token_loss(self, ctx: LossContext, token_loss: torch.Tensor) -> torch.Tensor:
        entropy = require_input(ctx.entropy, "entropy", "ERC")
        old = require_input(ctx.old_entropy, "old_entropy", "ERC")
        valid = ctx.mask.bool()
        keep = entropy_ratio_mask(entropy, old, self.config.beta_low, self.config.beta_high)
        rho = entropy_ratio(entropy, old)
        # Fractions of every process's model tokens (one reduction for the four counts).
        counts = ctx.ranks.sum(
            torch.stack([
                valid.sum(), (~keep & valid).sum(),
                ((rho <= 1 - self.config.beta_low) & valid).sum(), ((rho >= 1 + self.config.beta_high) & valid).sum(),
            ]).float()
        )  # fmt: skip
        n = counts[0].clamp(min=1)
        self._metrics.add("erc/clip_fraction", counts[1] / n)
        self._metrics.add("erc/clip_low_fraction", counts[2] / n)
        self._metrics.add("erc/clip_high_fraction", counts[3] / n)
        return erc_token_loss(token_loss, keep | ~valid)

    def metrics(self) -> dict[str, float]:
        return self._metrics.pop()
