"""What the trainer logs per batch, appended to TRL's metric lists (``trainer._metrics[mode]``).

:func:`rollout_metrics` (the episodes: ``env/*``, ``reward``, ``rollout/*``, AEPO's ``aepo/*``),
:func:`sampling_gap_metrics` (vLLM: TRL's ``sampling/*``), :func:`loss_metrics` (``policy_loss``, ``entropy``,
``clip_ratio/*``, ``kl``, ``entropy/turn_<k>``) and :func:`hook_metrics` (the loss hooks': ``hooks/<hook>/*``).
Means over tokens are over the model tokens of every process.

Example:
    >>> from collections import defaultdict
    >>> from agentgym_envs.engine import Episode, RolloutStats
    >>> metrics = defaultdict(list)
    >>> episode = Episode(group=0, task_id="t", seed=None, prompt_ids=[1], messages=[])
    >>> rollout_metrics(metrics, [episode], RolloutStats())
    >>> metrics["reward"], metrics["env/turns_per_episode"]
    ([0.0], [0.0])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from agentgym_envs.engine import Episode, RolloutStats, episode_metrics
from trl_plugins.aepo import BranchingStats
from trl_plugins.hooks import LossContext, LossHook, clip_regions, entropy_metrics
from trl_plugins.hooks.reductions import masked_mean, per_token_kl

__all__ = [
    "hook_metric_name",
    "hook_metrics",
    "loss_metrics",
    "merge_rollout_stats",
    "rollout_metrics",
    "sampling_gap_metrics",
]


def rollout_metrics(
    metrics: dict[str, list], episodes: Sequence[Episode], stats: RolloutStats
) -> None:
    """The episodes' metrics (``env/*``), rewards and rollout timings; after AEPO's branching rollout
    (:class:`~trl_plugins.aepo.BranchingStats`), its branching counts (``aepo/*``)."""
    for key, value in episode_metrics(episodes).items():
        metrics[f"env/{key}"].append(value)
    returns = torch.tensor([ep.total_return for ep in episodes], dtype=torch.float32)
    metrics["reward"].append(returns.mean().item())
    metrics["reward_std"].append(returns.std().item() if len(returns) > 1 else 0.0)
    metrics["rewards/environment_reward/mean"].append(returns.mean().item())
    metrics["rollout/seconds"].append(stats.seconds)
    metrics["rollout/generate_seconds"].append(stats.generate_seconds)
    metrics["rollout/env_seconds"].append(stats.env_seconds)
    metrics["rollout/tokens_per_second"].append(stats.model_tokens / max(stats.seconds, 1e-9))
    if isinstance(stats, BranchingStats):
        for key, value in stats.metrics().items():
            metrics[key].append(value)


def merge_rollout_stats(parts: Sequence[RolloutStats]) -> RolloutStats:
    """The rollout stats of several processes as one: durations are the slowest process's (the step waits for it),
    counts are summed and lists (per-call timings, AEPO's entropies) concatenated.

    Example:
        >>> merged = merge_rollout_stats([RolloutStats(seconds=2.0, model_tokens=5), RolloutStats(seconds=3.0, model_tokens=7)])
        >>> merged.seconds, merged.model_tokens
        (3.0, 12)
    """
    merged = dataclasses.replace(parts[0])
    for field in dataclasses.fields(merged):
        values = [getattr(p, field.name) for p in parts]
        if isinstance(values[0], list):
            value: Any = [v for part in values for v in part]
        elif isinstance(values[0], float) and field.name.endswith("seconds"):
            value = max(values)
        else:
            value = sum(values)
        setattr(merged, field.name, value)
    return merged


def hook_metric_name(hook: str, key: str) -> str:
    """``hooks/<hook>/<key>``, with one level of the hook's name even when its key already starts with it.

    Example:
        >>> hook_metric_name("epo", "epo/beta"), hook_metric_name("counting", "steps_done")
        ('hooks/epo/beta', 'hooks/counting/steps_done')
    """
    return f"hooks/{hook}/{key.removeprefix(hook + '/')}"


def hook_metrics(metrics: dict[str, list], hooks: Sequence[LossHook]) -> None:
    """The loss hooks' metrics since the last log (:meth:`~trl_plugins.hooks.LossHook.metrics`), as ``hooks/<hook>/*``.

    A value that is not defined yet (``None`` or NaN, e.g. EPO's reference entropy before it has a history) is left
    out rather than logged as ``None``.
    """
    for hook in hooks:
        for key, value in hook.metrics().items():
            if value is None or math.isnan(float(value)):
                continue
            metrics[hook_metric_name(hook.name, key)].append(float(value))


def sampling_gap_metrics(
    metrics: dict[str, list],
    accelerator: Any,
    old_logps: torch.Tensor,
    sampling: torch.Tensor,
    is_ratio: torch.Tensor | None,
    loss_mask: torch.Tensor,
) -> None:
    """TRL's ``sampling/*`` metrics: the sampler's log-prob gap to the trainer's and the IS ratio's range."""
    mask = loss_mask.bool()
    delta = torch.abs(old_logps - sampling)[mask]
    delta = delta[~torch.isnan(delta)]
    zero = torch.zeros((), device=old_logps.device)
    metrics["sampling/sampling_logp_difference/mean"].append(
        accelerator.gather(delta.mean() if delta.numel() else zero).mean().item()
    )
    metrics["sampling/sampling_logp_difference/max"].append(
        accelerator.gather(delta.max() if delta.numel() else zero).max().item()
    )
    if is_ratio is None:
        return
    flat = is_ratio.flatten() if is_ratio.size(-1) == 1 else is_ratio[mask]
    for name, reduce in (("min", torch.min), ("mean", torch.mean), ("max", torch.max)):
        gathered = accelerator.gather(reduce(flat) if flat.numel() else zero)
        metrics[f"sampling/importance_sampling_ratio/{name}"].append(reduce(gathered.float()).item())


def loss_metrics(
    metrics: dict[str, list],
    accelerator: Any,
    ctx: LossContext,
    policy_loss: torch.Tensor,
    entropy: torch.Tensor,
    ratio: torch.Tensor,
    clip: tuple[float, float],
) -> None:
    """One micro-batch's loss metrics; ``clip`` is ``(epsilon_low, epsilon_high)`` for the clip regions."""
    mask = ctx.mask

    def global_mean(x: torch.Tensor) -> float:  # over the model tokens of every process
        return masked_mean(x.detach().float(), mask, lambda t: accelerator.reduce(t, reduction="sum")).item()

    metrics["policy_loss"].append(accelerator.gather(policy_loss).mean().item())
    metrics["entropy"].append(global_mean(entropy))
    low, high = clip_regions(ratio, ctx.advantages, *clip)
    metrics["clip_ratio/low_mean"].append(global_mean(low))
    metrics["clip_ratio/high_mean"].append(global_mean(high))
    metrics["clip_ratio/region_mean"].append(global_mean(low | high))
    if ctx.ref_logps is not None:
        metrics["kl"].append(global_mean(per_token_kl(ctx.ref_logps, ctx.logps)))
    if ctx.turn_ids is not None:
        for key, value in entropy_metrics(entropy, mask, ctx.turn_ids, max_turns=None, ranks=ctx.ranks).items():
            if key != "entropy/mean":  # logged as "entropy" above
                metrics[key].append(value)
