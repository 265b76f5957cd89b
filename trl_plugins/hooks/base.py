"""The interface between the trainer's loss and the loss hooks (EPO, ERC, AEPO, ...).

The trainer builds one :class:`LossContext` per micro-batch and passes it through
every configured hook, in the order :func:`trl_plugins.hooks.compose.compose_loss` applies.  All tensors are ``(batch, tokens)`` over the
completion part of the sequences; ``mask`` is 1 only on model-generated tokens, so
environment observation tokens never carry loss or enter a statistic.

A hook may change the advantages, replace the per-token policy loss, edit the
per-token loss (e.g. stop its gradient), add a scalar loss term, and report metrics.

Example:
    >>> class Nothing(LossHook):
    ...     name = "nothing"
    >>> Nothing().metrics()
    {}
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from trl_plugins.distributed import Ranks
from trl_plugins.errors import LossHookConfigError

__all__ = ["LossContext", "LossHook", "MetricAccumulator", "require_input"]


@dataclass
class LossContext:
    """Everything a hook may read for one micro-batch.

    Attributes:
        logps: log-probabilities of the sampled tokens under the current policy (with grad).
        old_logps: the same under the policy that sampled (or the old policy), no grad.
        advantages: per-token advantages (a sequence's advantage broadcast over its tokens).
        mask: 1.0 on model-generated tokens, 0.0 on prompt, environment and padding tokens.
        entropy: full-vocabulary entropy of the current policy per token (with grad), if any hook needs it.
        old_entropy: the same for the old policy, stored with ``old_logps`` at sampling time.
        turn_ids: turn index of each token (-1 where ``mask`` is 0), for per-turn averaging.
        step: the global RL step (0-based); total_steps: the planned number of RL steps.
        ref_logps: log-probabilities under the reference model, when the KL term is on.
        training: ``False`` in evaluation passes (``trainer.evaluate()``): hooks must not update their running
            statistics (e.g. EPO's entropy history) from them.
        ranks: the run's processes (:class:`~trl_plugins.distributed.Ranks`; default one): a statistic the papers
            define over the batch is computed over every process's micro-batch with it (``ranks.mean_share`` for a
            mean that enters the loss, ``ranks.sum`` for counts), each process keeping its share.
    """

    logps: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor | None = None
    old_entropy: torch.Tensor | None = None
    turn_ids: torch.Tensor | None = None
    step: int = 0
    total_steps: int = 1
    ref_logps: torch.Tensor | None = None
    training: bool = True
    ranks: Ranks = field(default_factory=Ranks)
    extras: dict[str, Any] = field(default_factory=dict)


class LossHook:
    """Base class of loss hooks; every method's default leaves the loss unchanged.

    Order inside the loss, per micro-batch (:func:`~trl_plugins.hooks.compose.compose_loss`):
      1. ``advantages = hook.transform_advantages(ctx)`` for each hook (ctx.advantages updated);
      2. per-token policy loss = the first non-``None`` ``hook.policy_loss(ctx)``, else PPO's clip;
      3. ``token_loss = hook.transform_token_loss(ctx, token_loss)`` for each hook (then the KL term, if any);
      4. ``token_loss`` is reduced with the reducer of the trainer's ``loss_type`` (masked tokens still count);
      5. ``loss += hook.extra_loss(ctx)`` for each hook that returns a tensor;
      6. once per RL step -- after the last micro-batch of a generation batch, whatever ``num_iterations`` and the
         accumulation are -- ``hook.end_step(step)`` with the 0-based RL step.
    """

    name: str = "hook"
    needs_entropy: bool = False
    needs_old_entropy: bool = False

    def transform_advantages(self, ctx: LossContext) -> torch.Tensor:
        return ctx.advantages

    def policy_loss(self, ctx: LossContext) -> torch.Tensor | None:
        return None

    def transform_token_loss(self, ctx: LossContext, token_loss: torch.Tensor) -> torch.Tensor:
        return token_loss

    def extra_loss(self, ctx: LossContext) -> torch.Tensor | None:
        return None

    def end_step(self, step: int) -> None:
        """Called once per RL step (generation batch) after its last micro-batch (hooks with history update it here)."""

    def metrics(self) -> dict[str, float]:
        """Metrics since the last call, logged through TRL's logging."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State to save with checkpoints (e.g. EPO's entropy history)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""


class MetricAccumulator:
    """Means of scalars added since the last :meth:`pop`; tensors stay on device until then (no host sync).

    Example:
        >>> m = MetricAccumulator(); m.add("x", 1.0); m.add("x", torch.tensor(3.0)); m.pop()
        {'x': 2.0}
    """

    def __init__(self) -> None:
        self._sums: dict[str, Any] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, name: str, value: float | torch.Tensor) -> None:
        self._sums[name] = self._sums[name] + (value.detach().float() if torch.is_tensor(value) else float(value))
        self._counts[name] += 1

    def pop(self) -> dict[str, float]:
        out = {k: float(self._sums[k]) / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return out


def require_input(t: torch.Tensor | None, what: str, hook: str) -> torch.Tensor:
    """``t``, or a :class:`~trl_plugins.errors.LossHookConfigError` naming the missing ``LossContext`` field.

    Example:
        >>> require_input(None, "old_entropy", "ERC")
        Traceback (most recent call last):
        ...
        trl_plugins.errors.LossHookConfigError: the ERC hook needs LossContext.old_entropy, which the trainer did not provide
    """
    if t is None:
        raise LossHookConfigError(f"the {hook} hook needs LossContext.{what}, which the trainer did not provide")
    return t
