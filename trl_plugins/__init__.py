"""TRL plugins: a multi-turn GRPO trainer for agentgym environments, advantage estimators and loss hooks.

Importing the package is cheap; the trainer (which imports torch and TRL) loads on first use.

Example:
    >>> from trl_plugins import grpo_advantages
    >>> grpo_advantages([1.0, 0.0], [0, 0]).tolist()[0] > 0
    True
"""

from __future__ import annotations

from typing import Any

from trl_plugins.advantages import (
    dr_grpo_advantages,
    gigpo_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    turn_advantages,
)

_LAZY = {
    "AgentGRPOConfig": "trl_plugins.config",
    "RunSpec": "trl_plugins.config",
    "AgentGRPOTrainer": "trl_plugins.trainer",
    "build_loss_hooks": "trl_plugins.trainer",
    "ChatFormat": "trl_plugins.rollout",
    "RolloutConfig": "trl_plugins.rollout",
    "run_episodes": "trl_plugins.rollout",
    "expert_dataset": "trl_plugins.sft",
    "smollm2_dir": "trl_plugins.models",
    "load_smollm2": "trl_plugins.models",
    "tiny_model": "trl_plugins.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_plugins' has no attribute {name!r}")


__all__ = [
    "dr_grpo_advantages",
    "gigpo_advantages",
    "grpo_advantages",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "turn_advantages",
    *_LAZY,
]
