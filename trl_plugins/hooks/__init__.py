"""Loss hooks: the interface, one module per algorithm, the shared reductions and the one pipeline.

=================  ==========================================================================================
``base``           :class:`LossContext` and :class:`LossHook` (the interface every hook implements)
``reductions``     masked reductions and per-token terms shared by all (``masked_mean``, ``turn_token_mean``,
                   ``masked_whiten``, ``entropy_metrics``, ``ppo_clip_token_loss``, ...)
``epo``            EPO: ``EPOHook``, ``EPOConfig``, ``EntropyHistory``, ``epo_entropy_loss``, ...
``erc``            ERC: ``ERCHook``, ``ERCConfig``, ``entropy_ratio_mask``, ``erc_token_loss``
``compose``        ``build_hooks`` (the one builder), ``compose_loss`` (the one pipeline), ``reduce_token_loss``
                   (TRL's reductions of every ``loss_type``)
``schedules``      step schedules: ``epo_phase_weight``, ``released_epo_weight``, ``scaling_inter_horizon``,
                   ``ScalingInterSchedule``
``checkpoint``     ``save_hooks_state`` / ``load_hooks_state``: hook state in a trainer checkpoint
=================  ==========================================================================================

AEPO, which has a rollout half too, is its own package (:mod:`trl_plugins.aepo`); its hook is found here by the
name ``"aepo"`` all the same.

Example:
    >>> import torch
    >>> from trl_plugins.hooks import LossContext, build_hooks, compose_loss
    >>> logps = torch.zeros(1, 3, requires_grad=True)
    >>> ctx = LossContext(logps=logps, old_logps=torch.zeros(1, 3), advantages=torch.ones(1, 3),
    ...                   mask=torch.ones(1, 3), entropy=torch.full((1, 3), 0.5), old_entropy=torch.full((1, 3), 0.5))
    >>> compose_loss(ctx, build_hooks(["epo", "erc"])).loss.backward()
"""

from __future__ import annotations

from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks.base import LossContext, LossHook, MetricAccumulator, require_input
from trl_plugins.hooks.checkpoint import HOOKS_STATE_FILE, load_hooks_state, save_hooks_state
from trl_plugins.hooks.compose import (
    HOOKS,
    LOSS_TYPES,
    UNSCALED_LOSS_TYPES,
    LossTerms,
    build_hooks,
    compose_loss,
    reduce_token_loss,
)
from trl_plugins.hooks.epo import EntropyHistory, EPOConfig, EPOHook, epo_entropy_loss, epo_smoothing_penalty
from trl_plugins.hooks.erc import ERCConfig, ERCHook, entropy_ratio, entropy_ratio_mask, erc_token_loss
from trl_plugins.hooks.reductions import (
    clip_regions,
    clipped_surrogate,
    entropy_metrics,
    masked_mean,
    masked_whiten,
    per_token_kl,
    ppo_clip_token_loss,
    turn_token_mean,
)
from trl_plugins.hooks.schedules import (
    ScalingInterSchedule,
    epo_phase_weight,
    released_epo_weight,
    scaling_inter_horizon,
)

__all__ = [
    "HOOKS",
    "HOOKS_STATE_FILE",
    "LOSS_TYPES",
    "UNSCALED_LOSS_TYPES",
    "EPOConfig",
    "EPOHook",
    "ERCConfig",
    "ERCHook",
    "EntropyHistory",
    "LossContext",
    "LossHook",
    "LossHookConfigError",
    "LossTerms",
    "ScalingInterSchedule",
    "MetricAccumulator",
    "build_hooks",
    "clip_regions",
    "clipped_surrogate",
    "compose_loss",
    "entropy_metrics",
    "entropy_ratio",
    "epo_phase_weight",
    "entropy_ratio_mask",
    "epo_entropy_loss",
    "epo_smoothing_penalty",
    "erc_token_loss",
    "load_hooks_state",
    "masked_mean",
    "masked_whiten",
    "per_token_kl",
    "ppo_clip_token_loss",
    "reduce_token_loss",
    "released_epo_weight",
    "require_input",
    "save_hooks_state",
    "scaling_inter_horizon",
    "turn_token_mean",
]
