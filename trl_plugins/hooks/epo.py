"""EPO (arXiv 2509.22576): a multi-turn entropy bonus with an entropy-history smoothing penalty.

The math follows ``shared/specs/algorithms.md``.  The pure functions (:func:`epo_smoothing_penalty`,
:func:`epo_entropy_loss`) can be called directly; :class:`EPOHook` adds configuration, the entropy history
(:class:`EntropyHistory`, updated once per RL step and saved with checkpoints) and metrics.

Example:
    >>> import torch
    >>> from trl_plugins.hooks import LossContext, compose_loss
    >>> ctx = LossContext(logps=torch.zeros(1, 3, requires_grad=True), old_logps=torch.zeros(1, 3),
    ...                   advantages=torch.ones(1, 3), mask=torch.ones(1, 3), entropy=torch.full((1, 3), 0.5))
    >>> compose_loss(ctx, [EPOHook()]).loss.backward()
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from trl_plugins.distributed import Ranks
from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks.base import LossContext, LossHook, MetricAccumulator, require_input
from trl_plugins.hooks.reductions import masked_mean, turn_token_mean
from trl_plugins.hooks.schedules import epo_phase_weight, released_epo_weight

__all__ = ["epo_smoothing_penalty", "epo_entropy_loss", "EntropyHistory", "EPOConfig", "EPOHook"]


def epo_smoothing_penalty(
    entropy: torch.Tensor, reference: float | torch.Tensor, kappa_low: float = 0.0, kappa_high: float = 2.0
) -> torch.Tensor:
    """EPO's per-token hinge ``P = [k_l*ref - H]_+ + [H - k_r*ref]_+``.

    Differentiable: dP/dH = -1 below the corridor ``(k_l*ref, k_r*ref)``, +1 above it, 0 inside.

    Example:
        >>> epo_smoothing_penalty(torch.tensor([0.1, 1.0, 3.0]), 1.0, kappa_low=0.5, kappa_high=2.0)
        tensor([0.4000, 0.0000, 1.0000])
    """
    if kappa_low > kappa_high:
        raise LossHookConfigError(f"kappa_low ({kappa_low}) must not exceed kappa_high ({kappa_high})")
    ref = torch.as_tensor(reference, dtype=entropy.dtype, device=entropy.device)
    return F.relu(kappa_low * ref - entropy) + F.relu(entropy - kappa_high * ref)


def epo_entropy_loss(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    turn_ids: torch.Tensor | None,
    reference: float | None,
    step: int,
    total_steps: int,
    *,
    coef: float = 1e-3,
    alpha: float = 0.1,
    kappa_low: float = 0.0,
    kappa_high: float = 2.0,
    gamma: float = 3.0,
    ranks: Ranks | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """EPO's added loss ``-lambda * (L_H - beta_k * L_smooth)`` and its parts (paper form).

    ``L_H`` is :func:`turn_token_mean` of the entropy, ``L_smooth = alpha * turn_token_mean(P)`` with ``P`` from
    :func:`epo_smoothing_penalty` around ``reference`` (the entropy history H_W^k); ``L_smooth = 0`` when
    ``reference`` is None (step 0, empty history).  ``beta_k`` is :func:`~trl_plugins.hooks.schedules.epo_phase_weight`.
    With several processes (``ranks``) the means are over every process's micro-batch (this process's share).

    Returns:
        ``(loss, stats)`` with stats ``entropy_term`` (L_H), ``penalty`` (mean P), ``smooth`` (L_smooth) as detached
        0-dim tensors (no host sync) and ``beta`` as a float.

    Example:
        >>> h = torch.tensor([[0.5, 2.0]], requires_grad=True)
        >>> loss, stats = epo_entropy_loss(h, torch.ones(1, 2), None, reference=None, step=0, total_steps=10)
        >>> stats["beta"], round(float(loss.detach()), 6)
        (2.0, -0.00125)
    """
    ranks = ranks or Ranks()
    l_h = turn_token_mean(entropy, mask, turn_ids, ranks)
    beta = epo_phase_weight(step, total_steps, gamma)
    if reference is None:
        l_smooth = torch.zeros((), dtype=entropy.dtype, device=entropy.device)
        mean_pen = torch.zeros((), dtype=entropy.dtype, device=entropy.device)
    else:
        pen = epo_smoothing_penalty(entropy, reference, kappa_low, kappa_high)
        l_smooth = alpha * turn_token_mean(pen, mask, turn_ids, ranks)
        mean_pen = masked_mean(pen.detach(), mask, ranks.sum if ranks.distributed else None)
    loss = -coef * (l_h - beta * l_smooth)
    stats = {"entropy_term": l_h.detach(), "penalty": mean_pen, "smooth": l_smooth.detach(), "beta": beta}
    return loss, stats


@dataclass
class EntropyHistory:
    """EPO's entropy history: the mean over ALL past RL steps of each step's token-mean entropy.

    Example:
        >>> h = EntropyHistory()
        >>> h.reference() is None
        True
        >>> h.push(1.0); h.push(2.0); h.reference()
        1.5
    """

    total: float = 0.0
    count: int = 0

    def push(self, step_mean: float) -> None:
        if not math.isfinite(step_mean):
            return  # a step without valid tokens (or a NaN) must not poison the reference forever
        self.total += float(step_mean)
        self.count += 1

    def reference(self) -> float | None:
        return None if self.count == 0 else self.total / self.count


@dataclass
class EPOConfig:
    """Parameters of :class:`EPOHook` (defaults: the paper's, with ALFWorld's alpha).

    Attributes:
        coef: lambda, weight of the whole entropy term (paper 0.001).
        alpha: weight of the smoothing penalty inside it (0.1 ALFWorld, 0.05 ScienceWorld).
        kappa_low, kappa_high: the corridor ``(k_l * H_ref, k_r * H_ref)`` (paper 0 and 2).
        gamma: decay rate of beta_k (paper 3).
        mode: ``"paper"`` (default) or ``"released"``: the smoothing term of the authors' released code
            (WujiangXu/EPO, ``dp_actor.update_policy`` with ``entropy_smooth`` and ``enable_smooth_weights``), opt-in
            only -- a constant (gradient-free) out-of-corridor penalty ``released_out_penalty`` per token outside
            ``(released_low, released_high) * H_turn`` (strict), the history kept per turn index, token means over the
            micro-batch, the decaying weight :func:`~trl_plugins.hooks.schedules.released_epo_weight` instead of beta_k,
            and the released turn gating: the smoothing term is applied to a micro-batch only if one of its model
            tokens belongs to a turn ``t >= released_max_step // 2`` (otherwise the loss is the entropy bonus alone).
        released_max_step: the released code's ``max_step`` of that gating (``None``: the trainer's ``max_turns``;
            50, the released default, when the hook is used without a trainer).
    """

    coef: float = 1e-3
    alpha: float = 0.1
    kappa_low: float = 0.0
    kappa_high: float = 2.0
    gamma: float = 3.0
    mode: Literal["paper", "released"] = "paper"
    released_low: float = 0.8
    released_high: float = 1.2
    released_out_penalty: float = 0.1
    released_max_step: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("paper", "released"):
            raise LossHookConfigError(f"EPO mode must be 'paper' or 'released', not {self.mode!r}")
        if self.kappa_low > self.kappa_high or self.released_low > self.released_high:
            raise LossHookConfigError("EPO corridor: the low bound must not exceed the high bound")
        if self.coef < 0 or self.alpha < 0:
            raise LossHookConfigError("EPO coef and alpha must be >= 0")


class EPOHook(LossHook):
    """EPO (arXiv 2509.22576): multi-turn entropy bonus with an entropy-history smoothing penalty.

    Adds ``-lambda * (L_H - beta_k * L_smooth)`` to the loss (:func:`epo_entropy_loss`).  The history is updated in
    :meth:`end_step` with the token-mean entropy of the step's batch and saved with checkpoints.

    Example:
        >>> hook = EPOHook(EPOConfig(alpha=0.05))
        >>> hook.needs_entropy
        True
    """

    name = "epo"
    needs_entropy = True

    def __init__(self, config: EPOConfig | None = None, **overrides: Any) -> None:
        self.config = EPOConfig(**{**asdict(config or EPOConfig()), **overrides})
        self.history = EntropyHistory()
        self.turn_history: dict[int, EntropyHistory] = {}  # released mode only
        self._step_sum: Any = 0.0
        self._step_count: Any = 0.0
        self._turn_sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._ranks = Ranks()  # the run's processes, from the last training micro-batch (end_step sums over them)
        self._metrics = MetricAccumulator()

    def extra_loss(self, ctx: LossContext) -> torch.Tensor:
        entropy = require_input(ctx.entropy, "entropy", "EPO")
        mask = ctx.mask.bool()
        h = entropy.detach()
        if ctx.training:  # evaluation passes must not feed the history
            self._step_sum = self._step_sum + torch.where(mask, h, torch.zeros_like(h)).sum()
            self._step_count = self._step_count + mask.sum()
            self._ranks = ctx.ranks
        if self.config.mode == "released":
            loss, stats = self._released_loss(ctx, entropy, mask)
        else:
            c = self.config
            loss, stats = epo_entropy_loss(
                entropy, ctx.mask, ctx.turn_ids, self.history.reference(), ctx.step, ctx.total_steps,
                coef=c.coef, alpha=c.alpha, kappa_low=c.kappa_low, kappa_high=c.kappa_high, gamma=c.gamma,
                ranks=ctx.ranks,
            )  # fmt: skip
            ref = self.history.reference()
            stats["reference"] = float("nan") if ref is None else ref
        for k, v in stats.items():
            self._metrics.add(f"epo/{k}", v)
        self._metrics.add("epo/loss", loss.detach())
        return loss

    def _released_loss(
        self, ctx: LossContext, entropy: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.config
        h = entropy.detach()
        turns = ctx.turn_ids if ctx.turn_ids is not None else torch.zeros_like(h, dtype=torch.long)
        if ctx.training:  # evaluation passes must not feed the history
            for t in torch.unique(turns[mask]).tolist():
                sel = mask & (turns == t)
                acc = self._turn_sums[int(t)]
                acc[0] += float(h[sel].sum())
                acc[1] += float(sel.sum())
        max_step = 50 if c.released_max_step is None else int(c.released_max_step)
        # The released gate: np.any(rollout_step >= max_step // 2) over the micro-batch's samples (turns), of every
        # process (one process holding them all would gate them together).
        local_gate = bool((turns[mask] >= max_step // 2).any()) if mask.any() else False
        gated = bool(ctx.ranks.max(torch.tensor(float(local_gate))) > 0)
        ref = torch.full_like(h, float("nan"))
        for t, hist in self.turn_history.items():
            r = hist.reference()
            if r is not None:
                ref[turns == t] = r
        known = mask & ~torch.isnan(ref)
        inside = (h > c.released_low * ref) & (h < c.released_high * ref)
        # A constant: no gradient flows through the released smoothing term.
        pen = torch.where(known & ~inside & gated, c.released_out_penalty, 0.0).to(h.dtype)
        weight = released_epo_weight(ctx.step, ctx.total_steps, c.gamma)
        m = ctx.mask.to(entropy.dtype)
        l_h = ctx.ranks.mean_share((entropy * m).sum(), m.sum())
        l_pen = ctx.ranks.mean_share((pen * m).sum(), m.sum())
        loss = -c.coef * (l_h - c.alpha * weight * l_pen)
        stats = {"entropy_term": l_h.detach(), "penalty": l_pen, "beta": weight, "gated": float(gated)}
        return loss, stats

    def end_step(self, step: int) -> None:
        # The step's mean entropy is over every process's tokens (each process pushes the same value).
        ranks = self._ranks
        total = ranks.sum(torch.stack([torch.as_tensor(self._step_sum, dtype=torch.float64).cpu(),
                                       torch.as_tensor(self._step_count, dtype=torch.float64).cpu()]))
        if float(total[1]) > 0:
            self.history.push(float(total[0]) / float(total[1]))
        turn_sums = dict(self._turn_sums)
        if ranks.distributed:
            turn_sums = {}
            for part in ranks.gather_objects([dict(self._turn_sums)])[0]:
                for t, (s, n) in part.items():
                    acc = turn_sums.setdefault(t, [0.0, 0.0])
                    acc[0] += s
                    acc[1] += n
        for t, (s, n) in sorted(turn_sums.items()):
            if n > 0:
                self.turn_history.setdefault(t, EntropyHistory()).push(s / n)
        self._step_sum, self._step_count = 0.0, 0.0
        self._turn_sums.clear()

    def metrics(self) -> dict[str, float]:
        return self._metrics.pop()

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": asdict(self.history),
            "turn_history": {str(t): asdict(h) for t, h in self.turn_history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = EntropyHistory(**state.get("history", {}))
        self.turn_history = {int(t): EntropyHistory(**h) for t, h in state.get("turn_history", {}).items()}
