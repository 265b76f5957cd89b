"""AEPO (arXiv 2510.14545), all of it: the loss hook, the branching rollout and their settings.

===============  ====================================================================================================
module           what it holds
===============  ====================================================================================================
``config``       :class:`AEPOConfig` (every setting: the hook's and, in ``branching``, the rollout's) and
                 :class:`AEPOBranchConfig` (the branching rollout's)
``loss``         :class:`AEPOHook` (the loss hook, ``"aepo"`` in :func:`trl_plugins.hooks.build_hooks`),
                 :func:`aepo_entropy_advantages`, :func:`aepo_policy_loss`
``branching``    :func:`run_branching_episodes` (the dynamic entropy-balanced rollout, on the engine's fork
                 :func:`agentgym_envs.engine.fork_episode`), :class:`BranchingStats`, :func:`aepo_rollout_budget`,
                 :func:`aepo_branch_probability`, :class:`BranchPenaltyState`, :func:`action_entropies`,
                 :func:`recorded_action_entropies`
===============  ====================================================================================================

The trainer reads it from one field, ``AgentGRPOConfig.aepo`` (an :class:`AEPOConfig`, a mapping in YAML, JSON text on
the command line): ``loss_hooks=["aepo"]`` turns the loss on, ``aepo={"branching": {...}}`` the rollout.

Example:
    >>> from trl_plugins.aepo import AEPOConfig, AEPOHook
    >>> cfg = AEPOConfig(coef=0.1, branching={"p_branch": 0.05})
    >>> AEPOHook(**cfg.hook_params()).config.coef, cfg.branching.p_branch
    (0.1, 0.05)
"""

from __future__ import annotations

from trl_plugins.aepo.branching import (
    BranchingStats,
    BranchPenaltyState,
    EntropyFn,
    action_entropies,
    aepo_branch_probability,
    aepo_rollout_budget,
    recorded_action_entropies,
    run_branching_episodes,
)
from trl_plugins.aepo.config import AEPOBranchConfig, AEPOConfig
from trl_plugins.aepo.loss import AEPOHook, aepo_entropy_advantages, aepo_policy_loss

__all__ = [
    "AEPOBranchConfig",
    "AEPOConfig",
    "AEPOHook",
    "BranchPenaltyState",
    "BranchingStats",
    "EntropyFn",
    "action_entropies",
    "aepo_branch_probability",
    "aepo_entropy_advantages",
    "aepo_policy_loss",
    "aepo_rollout_budget",
    "recorded_action_entropies",
    "run_branching_episodes",
]
