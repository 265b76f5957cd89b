"""Entropy loss hooks: EPO, ERC and AEPO, as small hook classes over pure functions.

The math follows ``shared/specs/algorithms.md`` (the papers' forms).  Every functional piece can be called directly;
the hook classes (subclasses of :class:`trl_plugins.hooks_base.LossHook`) add configuration, step state (EPO's
entropy history), checkpointing and metrics, and compose in any order, e.g. ``build_hooks(["epo", "erc"])``.

Tensors are ``(batch, tokens)`` over the completion; ``mask`` is 1 on model-generated tokens only, so environment
observation tokens never enter a loss or a statistic.

Example:
    >>> import torch
    >>> from trl_plugins.hooks_base import LossContext
    >>> logps = torch.zeros(1, 3, requires_grad=True)
    >>> ctx = LossContext(logps=logps, old_logps=torch.zeros(1, 3), advantages=torch.ones(1, 3),
    ...                   mask=torch.ones(1, 3), entropy=torch.full((1, 3), 0.5), old_entropy=torch.full((1, 3), 0.5))
    >>> loss, _ = apply_loss_hooks(ctx, build_hooks(["epo", "erc"]))
    >>> loss.backward()
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from agentgym_envs.errors import AgentGymError
from trl_plugins.hooks_base import LossContext, LossHook
from trl_plugins.schedules import epo_phase_weight, released_epo_weight

__all__ = [
    "LossHookConfigError",
    "masked_mean",
    "turn_token_mean",
    "entropy_metrics",
    "epo_smoothing_penalty",
    "epo_entropy_loss",
    "EntropyHistory",
    "EPOConfig",
    "EPOHook",
    "entropy_ratio_mask",
    "erc_token_loss",
    "ERCConfig",
    "ERCHook",
    "aepo_entropy_advantages",
    "aepo_policy_loss",
    "aepo_rollout_budget",
    "aepo_branch_probability",
    "BranchPenaltyState",
    "AEPOConfig",
    "AEPOHook",
    "ppo_clip_token_loss",
    "apply_loss_hooks",
    "build_hooks",
    "HOOKS",
]


class LossHookConfigError(AgentGymError, ValueError):
    """A loss hook was configured wrongly or lacks an input it needs (e.g. ``old_entropy`` for ERC)."""


# ----------------------------------------------------------------------------------------------------------------
# Reductions and metrics


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty, keeping the graph).

    Example:
        >>> float(masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])))
        2.0
    """
    m = mask.to(values.dtype)
    return (torch.where(mask.bool(), values, torch.zeros_like(values)) * m).sum() / m.sum().clamp(min=1.0)


def turn_token_mean(values: torch.Tensor, mask: torch.Tensor, turn_ids: torch.Tensor | None = None) -> torch.Tensor:
    """EPO's multi-turn average: mean over trajectories of the mean over turns of the token-mean of each turn.

    ``(1/B) sum_j (1/T_j) sum_t (1/|tau_jt|) sum_i values_jti`` -- every turn counts equally, however long.  Each row
    is one trajectory; ``turn_ids`` gives the turn of each token (ignored where ``mask`` is 0).  Without
    ``turn_ids`` every row is a single turn.  Rows without any valid token are left out of the mean over B.

    Example:
        >>> v = torch.tensor([[1.0, 1.0, 1.0, 4.0]])
        >>> float(turn_token_mean(v, torch.ones(1, 4), torch.tensor([[0, 0, 0, 1]])))  # (1 + 4) / 2
        2.5
    """
    if values.shape != mask.shape:
        raise LossHookConfigError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ")
    m = mask.bool()
    if values.dim() == 1:
        values, m = values.unsqueeze(0), m.unsqueeze(0)
        turn_ids = None if turn_ids is None else turn_ids.unsqueeze(0)
    batch = values.shape[0]
    tid = torch.zeros_like(m, dtype=torch.long) if turn_ids is None else turn_ids.long().clamp(min=0)
    tid = torch.where(m, tid, torch.zeros_like(tid))
    n_turns = int(tid.max()) + 1 if tid.numel() else 1  # the only host sync: sizes the per-turn buffers
    flat_idx = (torch.arange(batch, device=values.device).unsqueeze(1) * n_turns + tid).reshape(-1)
    w = m.to(values.dtype)
    vals = torch.where(m, values, torch.zeros_like(values))
    sums = torch.zeros(batch * n_turns, device=values.device, dtype=values.dtype).index_add(
        0, flat_idx, (vals * w).reshape(-1)
    )
    counts = torch.zeros(batch * n_turns, device=values.device, dtype=values.dtype).index_add(
        0, flat_idx, w.reshape(-1)
    )
    present = (counts > 0).to(values.dtype)
    turn_means = (sums / counts.clamp(min=1.0) * present).view(batch, n_turns)
    turns_per_row = present.view(batch, n_turns).sum(1)
    row_means = turn_means.sum(1) / turns_per_row.clamp(min=1.0)
    has = (turns_per_row > 0).to(values.dtype)
    # Rows without valid tokens are left out; an all-empty batch gives 0 (and keeps the graph).
    return (row_means * has).sum() / has.sum().clamp(min=1.0)


def entropy_metrics(
    entropy: torch.Tensor, mask: torch.Tensor, turn_ids: torch.Tensor | None = None, max_turns: int = 10
) -> dict[str, float]:
    """Logging helper: token-mean entropy and the token-mean entropy of each turn index (up to ``max_turns``).

    Example:
        >>> entropy_metrics(torch.tensor([[1.0, 3.0]]), torch.ones(1, 2), torch.tensor([[0, 1]]))
        {'entropy/mean': 2.0, 'entropy/turn_0': 1.0, 'entropy/turn_1': 3.0}
    """
    h = entropy.detach()
    out = {"entropy/mean": float(masked_mean(h, mask))}
    if turn_ids is not None:
        for t in range(max_turns):
            sel = mask.bool() & (turn_ids == t)
            if sel.any():
                out[f"entropy/turn_{t}"] = float(h[sel].mean())
    return out


class _Metrics:
    """Means of scalars added since the last :meth:`pop`; tensors stay on device until then (no host sync)."""

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


def _require(t: torch.Tensor | None, what: str, hook: str) -> torch.Tensor:
    if t is None:
        raise LossHookConfigError(f"the {hook} hook needs LossContext.{what}, which the trainer did not provide")
    return t


# ----------------------------------------------------------------------------------------------------------------
# EPO


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
) -> tuple[torch.Tensor, dict[str, Any]]:
    """EPO's added loss ``-lambda * (L_H - beta_k * L_smooth)`` and its parts (paper form).

    ``L_H`` is :func:`turn_token_mean` of the entropy, ``L_smooth = alpha * turn_token_mean(P)`` with ``P`` from
    :func:`epo_smoothing_penalty` around ``reference`` (the entropy history H_W^k); ``L_smooth = 0`` when
    ``reference`` is None (step 0, empty history).  ``beta_k`` is :func:`~trl_plugins.schedules.epo_phase_weight`.

    Returns:
        ``(loss, stats)`` with stats ``entropy_term`` (L_H), ``penalty`` (mean P), ``smooth`` (L_smooth) as detached
        0-dim tensors (no host sync) and ``beta`` as a float.

    Example:
        >>> h = torch.tensor([[0.5, 2.0]], requires_grad=True)
        >>> loss, stats = epo_entropy_loss(h, torch.ones(1, 2), None, reference=None, step=0, total_steps=10)
        >>> stats["beta"], round(float(loss.detach()), 6)
        (2.0, -0.00125)
    """
    l_h = turn_token_mean(entropy, mask, turn_ids)
    beta = epo_phase_weight(step, total_steps, gamma)
    if reference is None:
        l_smooth = torch.zeros((), dtype=entropy.dtype, device=entropy.device)
        mean_pen = torch.zeros((), dtype=entropy.dtype, device=entropy.device)
    else:
        pen = epo_smoothing_penalty(entropy, reference, kappa_low, kappa_high)
        l_smooth = alpha * turn_token_mean(pen, mask, turn_ids)
        mean_pen = masked_mean(pen.detach(), mask)
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
        mode: ``"paper"`` (default) or ``"released"``: the authors' released code's behaviour, opt-in only --
            constant (gradient-free) out-of-corridor penalty ``released_out_penalty`` with corridor
            ``(released_low, released_high) * H_turn``, the history kept per turn index, token-mean averaging,
            and the decaying weight :func:`~trl_plugins.schedules.released_epo_weight` instead of beta_k.
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
        self._metrics = _Metrics()

    def extra_loss(self, ctx: LossContext) -> torch.Tensor:
        entropy = _require(ctx.entropy, "entropy", "EPO")
        mask = ctx.mask.bool()
        h = entropy.detach()
        self._step_sum = self._step_sum + torch.where(mask, h, torch.zeros_like(h)).sum()
        self._step_count = self._step_count + mask.sum()
        if self.config.mode == "released":
            loss, stats = self._released_loss(ctx, entropy, mask)
        else:
            c = self.config
            loss, stats = epo_entropy_loss(
                entropy, ctx.mask, ctx.turn_ids, self.history.reference(), ctx.step, ctx.total_steps,
                coef=c.coef, alpha=c.alpha, kappa_low=c.kappa_low, kappa_high=c.kappa_high, gamma=c.gamma,
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
        for t in torch.unique(turns[mask]).tolist():
            sel = mask & (turns == t)
            acc = self._turn_sums[int(t)]
            acc[0] += float(h[sel].sum())
            acc[1] += float(sel.sum())
        ref = torch.full_like(h, float("nan"))
        for t, hist in self.turn_history.items():
            r = hist.reference()
            if r is not None:
                ref[turns == t] = r
        known = mask & ~torch.isnan(ref)
        inside = (h > c.released_low * ref) & (h < c.released_high * ref)
        # A constant: no gradient flows through the released smoothing term.
        pen = torch.where(known & ~inside, c.released_out_penalty, 0.0).to(h.dtype)
        weight = released_epo_weight(ctx.step, ctx.total_steps, c.gamma)
        l_h = masked_mean(entropy, ctx.mask)
        l_pen = masked_mean(pen, ctx.mask)
        loss = -c.coef * (l_h - c.alpha * weight * l_pen)
        stats = {"entropy_term": l_h.detach(), "penalty": l_pen, "beta": weight}
        return loss, stats

    def end_step(self, step: int) -> None:
        if float(self._step_count) > 0:
            self.history.push(float(self._step_sum) / float(self._step_count))
        for t, (s, n) in self._turn_sums.items():
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


# ----------------------------------------------------------------------------------------------------------------
# ERC


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
    rho = (entropy.detach() + 1e-8) / (old_entropy.detach() + 1e-8)
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
        self._metrics = _Metrics()

    def transform_token_loss(self, ctx: LossContext, token_loss: torch.Tensor) -> torch.Tensor:
        entropy = _require(ctx.entropy, "entropy", "ERC")
        old = _require(ctx.old_entropy, "old_entropy", "ERC")
        valid = ctx.mask.bool()
        keep = entropy_ratio_mask(entropy, old, self.config.beta_low, self.config.beta_high)
        rho = (entropy.detach() + 1e-8) / (old + 1e-8)
        n = valid.sum().clamp(min=1)
        self._metrics.add("erc/clip_fraction", (~keep & valid).sum() / n)
        self._metrics.add("erc/clip_low_fraction", ((rho <= 1 - self.config.beta_low) & valid).sum() / n)
        self._metrics.add("erc/clip_high_fraction", ((rho >= 1 + self.config.beta_high) & valid).sum() / n)
        return erc_token_loss(token_loss, keep | ~valid)

    def metrics(self) -> dict[str, float]:
        return self._metrics.pop()


# ----------------------------------------------------------------------------------------------------------------
# PPO clip (the default per-token policy loss) and AEPO


def ppo_clip_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> torch.Tensor:
    """PPO's per-token clipped loss ``max(-A r, -A clip(r, 1-eps_l, 1+eps_h))`` (optionally dual-clipped for A < 0).

    Example:
        >>> float(ppo_clip_token_loss(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0])))
        -1.2000000476837158
    """
    ratio = torch.exp(logps - old_logps)
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high))
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    return loss


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
    loss = torch.maximum(-advantages * ratio, -advantages * clipped)
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
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
    (so this stays pure) and ``l`` counts consecutive branching steps of the prompt.  Branch when ``p >= p_branch``.

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
    """Per-prompt branching state for the rollout engine: counts consecutive branches and totals.

    Example:
        >>> s = BranchPenaltyState(entropy_init=1.0)
        >>> s.decide(entropy_now=3.0, u=0.6), s.consecutive, s.branches
        (True, 1, 1)
    """

    entropy_init: float
    threshold: float = 0.5
    w: float = 0.2
    penalty: float = 0.05
    consecutive: int = 0
    branches: int = 0
    decisions: int = 0

    def decide(self, entropy_now: float, u: float) -> bool:
        """Whether to branch at this tool-call step; updates the consecutive-branch counter."""
        p = aepo_branch_probability(entropy_now, self.entropy_init, self.consecutive, u, self.w, self.penalty)
        branch = p >= self.threshold
        self.decisions += 1
        self.branches += int(branch)
        self.consecutive = self.consecutive + 1 if branch else 0
        return branch


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

    The rollout half of AEPO (:func:`aepo_rollout_budget`, :func:`aepo_branch_probability`,
    :class:`BranchPenaltyState`) lives in the rollout engine; report its counts with :meth:`record_branching`.

    Example:
        >>> AEPOHook(coef=0.1).config.coef
        0.1
    """

    name = "aepo"
    needs_entropy = True

    def __init__(self, config: AEPOConfig | None = None, **overrides: Any) -> None:
        self.config = AEPOConfig(**{**asdict(config or AEPOConfig()), **overrides})
        self.needs_old_entropy = self.config.use_old_entropy
        self._metrics = _Metrics()

    def transform_advantages(self, ctx: LossContext) -> torch.Tensor:
        source = ctx.old_entropy if self.config.use_old_entropy else ctx.entropy
        entropy = _require(source, "old_entropy" if self.config.use_old_entropy else "entropy", "AEPO")
        return aepo_entropy_advantages(ctx.advantages, entropy, ctx.mask, self.config.coef)

    def policy_loss(self, ctx: LossContext) -> torch.Tensor:
        c = self.config
        valid = ctx.mask.bool()
        with torch.no_grad():
            ratio = torch.exp(ctx.logps.detach() - ctx.old_logps)
            n = valid.sum().clamp(min=1)
            preserved = (ctx.advantages > 0) & (ratio > 1 + c.eps_high) & valid
            self._metrics.add("aepo/preserved_grad_fraction", preserved.sum() / n)
            low = (ctx.advantages < 0) & (ratio < 1 - c.eps_low) & valid
            self._metrics.add("aepo/clip_low_fraction", low.sum() / n)
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


# ----------------------------------------------------------------------------------------------------------------
# Composition


HOOKS: dict[str, type[LossHook]] = {"epo": EPOHook, "erc": ERCHook, "aepo": AEPOHook}


def build_hooks(spec: Iterable[str | LossHook | dict[str, Any]] | None) -> list[LossHook]:
    """Hooks from a trainer-config list: names, ``{"name": "epo", **params}`` dicts, or hook instances.

    Example:
        >>> [h.name for h in build_hooks(["epo", {"name": "erc", "beta_low": 0.1}])]
        ['epo', 'erc']
    """
    hooks: list[LossHook] = []
    for item in spec or []:
        if isinstance(item, LossHook):
            hooks.append(item)
            continue
        params: dict[str, Any] = {}
        if isinstance(item, dict):
            params = dict(item)
            name = params.pop("name", None)
        else:
            name = item
        if not isinstance(name, str) or name.lower() not in HOOKS:
            raise LossHookConfigError(f"unknown loss hook {name!r}; known: {sorted(HOOKS)}")
        try:
            hooks.append(HOOKS[name.lower()](**params))
        except TypeError as exc:
            raise LossHookConfigError(f"bad parameters for loss hook {name!r}: {exc}") from exc
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise LossHookConfigError(f"a loss hook is listed twice: {names}")
    return hooks


def apply_loss_hooks(
    ctx: LossContext,
    hooks: Sequence[LossHook],
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation of the hook order documented in :class:`~trl_plugins.hooks_base.LossHook`.

    1. advantages transformed by each hook; 2. the first hook's ``policy_loss`` or PPO's clip; 3. each hook's
    ``transform_token_loss``; 4. reduction ``sum(token_loss * mask) / normalizer`` (default: number of valid tokens,
    masked-out-by-hook tokens still count); 5. each hook's ``extra_loss`` added.  ``ctx.advantages`` is updated.

    Returns:
        ``(loss, token_loss)``.

    Example:
        >>> ctx = LossContext(logps=torch.zeros(1, 2, requires_grad=True), old_logps=torch.zeros(1, 2),
        ...                   advantages=torch.ones(1, 2), mask=torch.tensor([[1.0, 0.0]]))
        >>> float(apply_loss_hooks(ctx, [])[0].detach())
        -1.0
    """
    for hook in hooks:
        ctx.advantages = hook.transform_advantages(ctx)
    token_loss = None
    for hook in hooks:
        token_loss = hook.policy_loss(ctx)
        if token_loss is not None:
            break
    if token_loss is None:
        token_loss = ppo_clip_token_loss(ctx.logps, ctx.old_logps, ctx.advantages, eps_low, eps_high, dual_clip)
    for hook in hooks:
        token_loss = hook.transform_token_loss(ctx, token_loss)
    mask = ctx.mask.to(token_loss.dtype)
    denom = mask.sum().clamp(min=1.0) if normalizer is None else normalizer
    loss = (torch.where(ctx.mask.bool(), token_loss, torch.zeros_like(token_loss)) * mask).sum() / denom
    for hook in hooks:
        extra = hook.extra_loss(ctx)
        if extra is not None:
            loss = loss + extra
    return loss, token_loss


@dataclass
class HookSpec:
    """Config-file form of a list of hooks, e.g. ``HookSpec(names=["epo", "erc"], params={"epo": {"alpha": 0.05}})``.

    Example:
        >>> [h.name for h in HookSpec(names=["erc"]).build()]
        ['erc']
    """

    names: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def build(self) -> list[LossHook]:
        unknown = set(self.params) - set(self.names)
        if unknown:
            raise LossHookConfigError(f"parameters given for hooks that are not enabled: {sorted(unknown)}")
        return build_hooks([{"name": n, **self.params.get(n, {})} for n in self.names])
