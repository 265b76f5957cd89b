"""Construction-time checks: TRL options the multi-turn trainer does not implement, and the prompt budget.

The trainer refuses, when it is built, every ``GRPOConfig`` setting it would otherwise ignore, each named with what
to use instead (:func:`check_trl_options`, :func:`check_vllm_options`), and a system prompt that leaves no room for
a turn (:func:`check_prompt_budget`).

Example:
    >>> from trl_plugins.config import AgentGRPOConfig
    >>> check_trl_options(AgentGRPOConfig(output_dir="/tmp/x", use_transformers_continuous_batching=True))
    Traceback (most recent call last):
    ...
    NotImplementedError: use_transformers_continuous_batching is not supported by AgentGRPOTrainer
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agentgym_envs.core import as_text_env
from agentgym_envs.engine import ChatFormat, RolloutConfig
from agentgym_envs.prompts import first_messages
from trl_plugins.config import AgentGRPOConfig
from trl_plugins.errors import TrainerConfigError

__all__ = ["check_prompt_budget", "check_trl_options", "check_vllm_options"]


def check_trl_options(args: AgentGRPOConfig) -> None:
    """Raise ``NotImplementedError`` naming the ``GRPOConfig`` options set in ``args`` that the trainer lacks."""
    if args.use_vllm:
        check_vllm_options(args)
    if args.use_transformers_continuous_batching:
        raise NotImplementedError("use_transformers_continuous_batching is not supported by AgentGRPOTrainer")
    if args.top_entropy_quantile < 1.0 or args.use_adaptive_entropy or args.off_policy_mask_threshold is not None:
        raise NotImplementedError(
            "top_entropy_quantile, use_adaptive_entropy and off_policy_mask_threshold are not supported by "
            "AgentGRPOTrainer; use a loss hook instead"
        )
    unsupported = args.unsupported_trl_options()
    if unsupported:
        raise NotImplementedError(
            "AgentGRPOTrainer does not support these GRPOConfig options: " + "; ".join(unsupported)
        )


def check_vllm_options(args: AgentGRPOConfig) -> None:
    """Refuse TRL vLLM settings the multi-turn rollouts do not implement (``use_vllm=True``)."""
    unsupported = []
    if args.vllm_structured_outputs_regex:
        unsupported.append("vllm_structured_outputs_regex (actions are parsed by the environment's format)")
    if args.vllm_enable_sleep_mode:
        unsupported.append("vllm_enable_sleep_mode")
    if args.vllm_mode == "colocate" and args.vllm_tensor_parallel_size != 1:
        unsupported.append("vllm_tensor_parallel_size > 1 in colocate mode")
    if args.repetition_penalty not in (None, 1.0) or args.min_p is not None or args.generation_kwargs:
        unsupported.append(
            "repetition_penalty, min_p and generation_kwargs with use_vllm (sampling is temperature, top_p and top_k)"
        )
    if args.vllm_mode not in ("colocate", "server"):
        unsupported.append(f"vllm_mode={args.vllm_mode!r} (use 'colocate' or 'server')")
    if (
        args.loss_type == "vespo"
        and args.vllm_importance_sampling_correction
        and args.vllm_importance_sampling_mode not in ("token_truncate", "token_mask")
    ):
        unsupported.append(
            "loss_type='vespo' with a sequence-level vllm_importance_sampling_mode (TRL: "
            "'token_truncate' or 'token_mask')"
        )
    if unsupported:
        raise NotImplementedError("use_vllm=True: not supported by AgentGRPOTrainer: " + "; ".join(unsupported))


def check_prompt_budget(env: gym.Env | Any, chat_format: ChatFormat, config: RolloutConfig) -> None:
    """Raise :class:`~trl_plugins.errors.TrainerConfigError` when the system prompt and the format instructions
    alone leave no room for a turn of ``config.max_new_tokens`` within ``config.max_context_tokens``."""
    static = first_messages("", "", as_text_env(env).parser.instructions(), config.prompt)
    n = len(chat_format.prompt_ids(static))
    if n + config.max_new_tokens > config.max_context_tokens:
        raise TrainerConfigError(
            f"the system prompt and format instructions alone take {n} tokens; with max_new_tokens_per_turn="
            f"{config.max_new_tokens} they do not fit max_context_tokens={config.max_context_tokens}"
        )
