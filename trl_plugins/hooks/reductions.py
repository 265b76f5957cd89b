"""Masked reductions and per-token loss terms shared by every algorithm (the hooks, PPO and the trainer).

Tensors are ``(batch, tokens)`` over the completion; ``mask`` is 1 on model-generated tokens only, so environment
observation tokens never enter a loss or a statistic.  Each formula is written once here: the trainer's default
policy loss and AEPO's clip share :func:`clipped_surrogate`, the trainer's metrics and the value loss share
:func:`masked_mean`, PPO's statistics and the trainer's clip metrics share :func:`clip_regions`.

Example:
    >>> import torch
    >>> float(masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])))
    2.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from trl_plugins.distributed import Ranks
from trl_plugins.errors import LossHookConfigError

__all__ = [
    "masked_mean",
    "masked_whiten",
    "turn_token_mean",
    "entropy_metrics",
    "clip_regions",
    "clipped_surrogate",
    "ppo_clip_token_loss",
    "importance_log_weights",
    "policy_token_loss",
    "per_token_kl",
]


def masked_mean(
    values: torch.Tensor,
    mask: torch.Tensor,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty, keeping the graph).

    ``all_reduce`` (e.g. ``lambda t: accelerator.reduce(t, reduction="sum")``) sums the masked total and the token
    count across processes first, giving the mean over every process's tokens.

    Example:
        >>> float(masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])))
        2.0
    """
    m = mask.to(values.dtype)
    total = (torch.where(mask.bool(), values, torch.zeros_like(values)) * m).sum()
    count = m.sum()
    if all_reduce is not None:
        total, count = all_reduce(torch.stack([total, count]))
    return total / count.clamp(min=1.0)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, ranks: Ranks | None = None
) -> torch.Tensor:
    """Standardise ``x`` over valid positions (unbiased std, 0 outside ``mask``).

    With several processes (``ranks``) the mean and std are over the valid positions of every process (PPO's
    advantage whitening over the global batch); each process whitens its own positions with them.  The statistics
    carry no gradient.

    Example:
        >>> masked_whiten(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([1, 1, 0]))
        tensor([-0.7071,  0.7071,  0.0000])
    """
    valid = mask.bool()
    zeros = torch.zeros_like(x)
    ranks = ranks or Ranks()
    # float64 sums: a bf16 count is exact only up to 256
    count_and_total = ranks.sum(torch.stack([valid.sum().double(), torch.where(valid, x, zeros).double().sum()]))
    count = int(count_and_total[0])
    mean = (count_and_total[1] / max(count, 1)).to(x.dtype)
    if count < 2:  # nothing to scale by: only centred
        return torch.where(valid, x - mean if shift_mean else x, zeros)
    # Two passes (the mean, then the squared deviations from it), as torch.var, rather than E[x^2] - E[x]^2.
    var = (ranks.sum(torch.where(valid, (x - mean) ** 2, zeros).double().sum()) / (count - 1)).to(x.dtype)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(valid, out, zeros)


def turn_token_mean(
    values: torch.Tensor, mask: torch.Tensor, turn_ids: torch.Tensor | None = None, ranks: Ranks | None = None
) -> torch.Tensor:
    """EPO's multi-turn average: mean over trajectories of the mean over turns of the token-mean of each turn.

    ``(1/B) sum_j (1/T_j) sum_t (1/|tau_jt|) sum_i values_jti`` -- every turn counts equally, however long.  Each row
    is one trajectory; ``turn_ids`` gives the turn of each token (ignored where ``mask`` is 0).  Without
    ``turn_ids`` every row is a single turn.  Rows without any valid token are left out of the mean over B.
    With several processes (``ranks``) B counts the rows of every process and this process's share is returned
    (:meth:`~trl_plugins.distributed.Ranks.mean_share`).

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
    return (ranks or Ranks()).mean_share((row_means * has).sum(), has.sum())


def entropy_metrics(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    turn_ids: torch.Tensor | None = None,
    max_turns: int | None = 10,
    ranks: Ranks | None = None,
) -> dict[str, float]:
    """Logging helper: token-mean entropy and the token-mean entropy of each turn index (below ``max_turns``).

    ``max_turns=None`` reports every turn present in the batch.  With several processes (``ranks``) every mean is
    over the model tokens of every process (a turn index one process lacks still gets the others' tokens).

    Example:
        >>> entropy_metrics(torch.tensor([[1.0, 3.0]]), torch.ones(1, 2), torch.tensor([[0, 1]]))
        {'entropy/mean': 2.0, 'entropy/turn_0': 1.0, 'entropy/turn_1': 3.0}
    """
    ranks = ranks or Ranks()
    h = entropy.detach()
    tokens = mask.bool()
    total = torch.stack([torch.where(tokens, h, 0.0).double().sum(), tokens.double().sum()])
    n_turns = 0
    if turn_ids is not None:
        valid = tokens & (turn_ids >= 0)
        local_turns = int(turn_ids[valid].max()) + 1 if valid.any() else 0
        # Every process sums into buffers of the same size (the collective needs it): the most turns of any process.
        n_turns = int(ranks.max(torch.tensor(local_turns, device=h.device)))
    if n_turns:
        index = torch.where(valid, turn_ids.long(), torch.zeros_like(turn_ids, dtype=torch.long)).reshape(-1)
        weight = valid.reshape(-1).double()
        zeros = torch.zeros(n_turns, dtype=torch.float64, device=h.device)
        sums = zeros.index_add(0, index, h.reshape(-1).double().nan_to_num() * weight)
        total = torch.cat([total, sums, zeros.index_add(0, index, weight)])
    total = ranks.sum(total)  # one collective for the mean and every turn's sums and counts
    out = {"entropy/mean": float(total[0] / total[1].clamp(min=1.0))}
    sums, counts = total[2 : 2 + n_turns], total[2 + n_turns :]
    for t in range(n_turns):
        if counts[t] > 0 and (max_turns is None or t < max_turns):
            out[f"entropy/turn_{t}"] = float(sums[t] / counts[t])
    return out


def clip_regions(
    ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where PPO's ratio clip is active (zero gradient): ``(A < 0 and r < 1-eps_l, A > 0 and r > 1+eps_h)``.

    Example:
        >>> low, high = clip_regions(torch.tensor([0.5, 1.5, 1.0]), torch.tensor([-1.0, 1.0, 1.0]))
        >>> low.tolist(), high.tolist()
        ([True, False, False], [False, True, False])
    """
    return (ratio < 1.0 - eps_low) & (advantages < 0), (ratio > 1.0 + eps_high) & (advantages > 0)


def clipped_surrogate(
    ratio: torch.Tensor,
    clipped_ratio: torch.Tensor,
    advantages: torch.Tensor,
    dual_clip: float | None = None,
) -> torch.Tensor:
    """The per-token clipped surrogate ``max(-A r, -A r_clip)``, dual-clipped to ``min(., -c A)`` where ``A < 0``.

    PPO passes ``r_clip = clip(r, 1-eps_l, 1+eps_h)``; AEPO a clip whose upper branch keeps a gradient.

    Example:
        >>> r = torch.tensor([1.5])
        >>> float(clipped_surrogate(r, r.clamp(0.8, 1.2), torch.tensor([1.0])))
        -1.2000000476837158
    """
    loss = torch.maximum(-advantages * ratio, -advantages * clipped_ratio)
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    return loss


def ppo_clip_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    delta: float | None = None,
) -> torch.Tensor:
    """PPO's per-token clipped loss ``max(-A r, -A clip(r, 1-eps_l, 1+eps_h))`` (the default policy loss).

    ``delta`` caps the unclipped ratio (TRL's two-sided GRPO clip, ``GRPOConfig.delta``); ``dual_clip`` bounds the
    loss of negative advantages at ``-dual_clip * A``.

    Example:
        >>> float(ppo_clip_token_loss(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0])))
        -1.2000000476837158
    """
    ratio = torch.exp(logps - old_logps)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    return clipped_surrogate(unclipped, clipped, advantages, dual_clip)


def importance_log_weights(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """``log(pi/pi_old)`` per token (``level="token"``) or its token mean per sequence, ``(batch, 1)`` (``"sequence"``,
    GSPO), as TRL's ``importance_sampling_level``.

    Example:
        >>> lw = importance_log_weights(torch.tensor([[0.2, 0.4, 9.0]]), torch.zeros(1, 3), torch.tensor([[1, 1, 0]]),
        ...                             "sequence")
        >>> [round(v, 6) for v in lw.flatten().tolist()]
        [0.3]
    """
    log_ratio = logps - old_logps
    if level == "token":
        return log_ratio
    if level == "sequence":
        m = mask.to(log_ratio.dtype)
        return ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    raise LossHookConfigError(f"importance_sampling_level must be 'token' or 'sequence', not {level!r}")


def policy_token_loss(
    loss_type: str,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    level: str = "token",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    delta: float | None = None,
    sapo_temperatures: tuple[float, float] = (1.0, 1.05),
    vespo: tuple[float, float, float, float] = (2.0, 3.0, 3.0, 2.0),
    sampling_ratio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's per-token policy loss for ``loss_type`` and the importance weights it used, ``(token_loss, weights)``.

    ``weights = exp(importance_log_weights(logps, old_logps, mask, level))`` (with grad; ``(batch, 1)`` at sequence
    level), as TRL's ``coef_1`` (it also scales the KL term under ``use_bias_correction_kl``).

    * ``grpo``/``bnpo``/``dr_grpo``/``dapo``/``luspo``: PPO's clip (:func:`clipped_surrogate`; ``delta`` caps the
      unclipped ratio, ``dual_clip`` bounds negative advantages);
    * ``cispo``: ``-sg(min(r, eps_high)) * A * log pi`` (``eps_high`` is the ratio cap, as in TRL);
    * ``sapo``: ``-sigmoid(tau * (r - 1)) * 4 / tau * A`` with ``tau = sapo_temperatures[0]`` for ``A > 0`` and ``[1]``
      otherwise;
    * ``vespo``: ``-phi(w) * A * log pi`` with TRL's gamma weight ``phi`` of the sequence ratio (``vespo`` is
      ``(k_pos, lambda_pos, k_neg, lambda_neg)``; ``sampling_ratio`` is TRL's vLLM importance-sampling ratio,
      folded into the sequence weight as TRL does).

    ``token_loss`` is ``(batch, tokens)`` (a sequence-level weight is broadcast over the tokens).

    Example:
        >>> loss, w = policy_token_loss("dapo", torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.ones(1, 1),
        ...                             torch.ones(1, 1))
        >>> float(loss), float(w)
        (-1.2000000476837158, 1.5)
    """
    ratio = torch.exp(importance_log_weights(logps, old_logps, mask, level))
    if loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo"):
        clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
        unclipped = ratio if delta is None else ratio.clamp(max=delta)
        loss = clipped_surrogate(unclipped, clipped, advantages, dual_clip)
    elif loss_type == "cispo":
        loss = -ratio.clamp(max=eps_high).detach() * advantages * logps
    elif loss_type == "sapo":
        pos, neg = sapo_temperatures
        tau = torch.where(advantages > 0, pos, neg).to(ratio.dtype)
        loss = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * advantages
    elif loss_type == "vespo":
        from trl import GRPOTrainer  # TRL's own gamma weights (no gradient), so VESPO's phi is TRL's by construction

        k_pos, lambda_pos, k_neg, lambda_neg = vespo
        phi = GRPOTrainer.get_gamma_weights(
            advantages=advantages, log_ratio_per_token=logps - old_logps, mask=mask,
            importance_sampling_ratio=sampling_ratio,
            k_pos=k_pos, lambda_pos=lambda_pos, k_neg=k_neg, lambda_neg=lambda_neg,
        )  # fmt: skip
        loss = -phi * advantages * logps
    else:
        raise LossHookConfigError(f"unknown loss_type {loss_type!r}")
    return loss.expand(torch.broadcast_shapes(loss.shape, logps.shape)), ratio


def per_token_kl(ref_logps: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(pi || pi_ref) per token, ``exp(ref - logp) - (ref - logp) - 1`` (as TRL's GRPO).

    Example:
        >>> float(per_token_kl(torch.tensor([0.0]), torch.tensor([0.0])))
        0.0
    """
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1
