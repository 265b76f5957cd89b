"""TRL plugins: multi-turn GRPO and PPO trainers for agentgym environments, advantage estimators and loss hooks.

Layout: ``config`` (``AgentGRPOConfig``, ``AgentPPOConfig``), ``trainer`` (``AgentGRPOTrainer``, the TRL glue) with
its jobs beside it -- ``options`` (TRL options it refuses), ``envs`` (environment pool, task dataset), ``generation``
(generation backend, vLLM weight sync), ``batch`` (episodes -> tensors, micro-batches), ``scoring`` (log-probs and
entropy), ``metrics`` (what it logs), ``evaluation`` (held-out evaluation), ``run_log`` (``metrics.jsonl``) --,
``ppo_trainer`` (``AgentPPOTrainer``), ``ppo`` (critic, GAE, value loss, ``CriticConfig``), ``hooks/`` (the
loss-hook interface, EPO, ERC, the shared reductions, schedules and the one loss pipeline), ``aepo/`` (all of
AEPO: its loss hook, its branching rollout on the engine of :mod:`agentgym_envs.engine`, its settings),
``advantages`` (estimators), ``errors`` (``TrainerError`` and its subclasses).

Importing the package is cheap; the trainer (which imports torch and TRL) loads on first use.

Example:
    >>> from trl_plugins import grpo_advantages
    >>> grpo_advantages([1.0, 0.0], [0, 0]).tolist()[0] > 0
    True
"""

from __future__ import annotations

from typing import Any

from agentgym_envs.errors import MissingDependencyError

# What `pip install 'agentgym-envs[train]'` installs, by import name.
_TRAIN_MODULES = frozenset({"torch", "transformers", "trl", "peft", "datasets", "accelerate", "gguf", "yaml"})


def _missing_train_extra(exc: ModuleNotFoundError) -> ImportError:
    """A :class:`MissingDependencyError` naming the ``[train]`` extra, or ``exc`` if another module is missing."""
    top = (exc.name or "").split(".")[0]
    if top not in _TRAIN_MODULES:
        return exc
    return MissingDependencyError("train", "train", [top], what="trl_plugins (the trainer and its estimators)")


try:
    from trl_plugins.advantages import (
        dr_grpo_advantages,
        gigpo_advantages,
        grpo_advantages,
        reinforce_pp_advantages,
        rloo_advantages,
        turn_advantages,
    )
except ModuleNotFoundError as _exc:
    raise _missing_train_extra(_exc) from _exc

_LAZY = {
    "AgentGRPOConfig": "trl_plugins.config",
    "AgentPPOConfig": "trl_plugins.config",
    "RunSpec": "trl_plugins.config",
    "AgentGRPOTrainer": "trl_plugins.trainer",
    "AgentPPOTrainer": "trl_plugins.ppo_trainer",
    "build_hooks": "trl_plugins.hooks",
    "compose_loss": "trl_plugins.hooks",
    "LossContext": "trl_plugins.hooks",
    "LossHook": "trl_plugins.hooks",
    "EPOHook": "trl_plugins.hooks",
    "EPOConfig": "trl_plugins.hooks",
    "ERCHook": "trl_plugins.hooks",
    "ERCConfig": "trl_plugins.hooks",
    "AEPOHook": "trl_plugins.aepo",
    "AEPOConfig": "trl_plugins.aepo",
    "AEPOBranchConfig": "trl_plugins.aepo",
    "CriticConfig": "trl_plugins.ppo",
    "TrainerError": "trl_plugins.errors",
    "TrainerConfigError": "trl_plugins.errors",
    "LossHookConfigError": "trl_plugins.errors",
    "ChatFormat": "agentgym_envs.engine",
    "RolloutConfig": "agentgym_envs.engine",
    "run_episodes": "agentgym_envs.engine",
    "expert_dataset": "trl_plugins.sft",
    "smollm2_dir": "trl_plugins.models",
    "load_smollm2": "trl_plugins.models",
    "tiny_model": "trl_plugins.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            raise _missing_train_extra(exc) from exc
        return getattr(module, name)
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
