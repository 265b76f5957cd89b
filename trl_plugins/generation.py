"""How the trainer's rollouts generate: the generation backend, vLLM weight sync, and the ``generate`` fallback.

:class:`GenerationMixin` is the part of :class:`~trl_plugins.trainer.AgentGRPOTrainer` that samples: it picks the
backend of :mod:`agentgym_envs.generation` (``args.generation_backend``), pushes the policy's weights into a vLLM
engine after optimizer steps, and samples through :meth:`~GenerationMixin.generate_tokens` when a subclass overrides
it or sampling options need transformers' ``generate``.  It reads the trainer's TRL state (``model``,
``accelerator``, ``args``, sampling settings) and is not used on its own.

Example:
    >>> trainer.make_generation_backend()   # doctest: +SKIP
    <agentgym_envs.generation.transformers.TransformersBackend object at ...>
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad

from agentgym_envs.engine import CallableBackend
from agentgym_envs.generation.base import SamplingSettings
from agentgym_envs.generation.sampling import sample_batch
from agentgym_envs.generation.transformers import TransformersBackend
from trl_plugins.aepo import action_entropies

__all__ = ["GenerationMixin"]


class GenerationMixin:
    """Generation for :class:`~trl_plugins.trainer.AgentGRPOTrainer`: backend choice, vLLM sync, ``generate``."""

    #: Parameters of the trained model that the served model does not have (left out of vLLM weight pushes).
    vllm_weight_exclude: tuple[str, ...] = ()
    args: Any
    model: Any
    accelerator: Any

    def make_generation_backend(self) -> Any:
        """The backend rollouts generate with (``args.generation_backend``).

        ``"transformers"`` with the ``"kv"`` sampler: a
        :class:`~agentgym_envs.generation.transformers.TransformersBackend` on the policy (the KV cache carried
        across turns, ``args.carry_kv_cache``).  A subclass that overrides :meth:`generate_tokens`, the
        ``"generate"`` sampler, or sampling options the lean sampler lacks go through :meth:`generate_tokens`.
        ``"vllm"`` (``use_vllm=True``): a vLLM engine, in this process (``vllm_mode="colocate"``,
        :func:`~trl_plugins.vllm_colocate.build_vllm_backend`) or ``trl vllm-serve`` (``"server"``, CUDA,
        :func:`~trl_plugins.vllm_colocate.build_vllm_server_backend`); the policy's weights are pushed into it
        before each rollout that follows an optimizer step (:meth:`sync_vllm_weights`).
        """
        if self.args.generation_backend == "vllm":
            from trl_plugins.vllm_colocate import build_vllm_backend, build_vllm_server_backend

            self._last_loaded_step = -1
            if self.args.vllm_mode == "server":
                return build_vllm_server_backend(self.args, self.chat_format.stop_ids, self.accelerator)
            return build_vllm_backend(self.accelerator.unwrap_model(self.model), self.args, self.chat_format.stop_ids)
        overridden = type(self).generate_tokens is not GenerationMixin.generate_tokens
        if overridden or not self._use_kv_sampler():
            return CallableBackend(self.generate_tokens, self.chat_format.stop_ids)
        settings = SamplingSettings(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, stop_ids=self.chat_format.stop_ids
        )
        return TransformersBackend(
            self.model,
            self._tokenizer.pad_token_id,
            settings,
            carry_cache=self.args.carry_kv_cache,
            model_context=self._generation_model,
        )

    def sync_vllm_weights(self, force: bool = False) -> bool:
        """Push the policy's weights into the vLLM engine if an optimizer step changed them since the last push.

        PEFT adapters are merged for the push (:func:`~agentgym_envs.generation.vllm.policy_weights`); parameters
        named in :attr:`vllm_weight_exclude` (a PPO value head) stay out.  Returns whether weights were pushed.

        Example:
            >>> trainer.sync_vllm_weights(force=True)   # doctest: +SKIP
            True
        """
        if not self.use_vllm or (not force and self.state.global_step == self._last_loaded_step):
            return False
        from agentgym_envs.generation.vllm import policy_weights

        backend = self.generation_backend
        with self._generation_model() as unwrapped:
            loader = getattr(backend, "load_weights_from", None)
            if loader is not None:  # server mode reads the weights twice (names and shapes first)
                loader(lambda: policy_weights(unwrapped, exclude=self.vllm_weight_exclude))
            else:
                backend.load_weights(policy_weights(unwrapped, exclude=self.vllm_weight_exclude))
        self._last_loaded_step = self.state.global_step
        return True

    @contextlib.contextmanager
    def _generation_model(self) -> Iterator[Any]:
        """The policy unwrapped for generation (DeepSpeed/FSDP gathered), without gradients."""
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            yield unwrapped

    def generate_tokens(self, contexts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Sample one continuation per context with the current policy (one batched ``generate``)."""
        device = self.accelerator.device
        tensors = [torch.tensor(c, dtype=torch.long) for c in contexts]
        input_ids = pad(tensors, padding_value=self._tokenizer.pad_token_id, padding_side="left").to(device)
        attention_mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left").to(device)
        generation_config = copy.copy(self.generation_config)
        generation_config.max_new_tokens = max_new_tokens
        with self._generation_model() as unwrapped:
            if self._use_kv_sampler():
                return sample_batch(
                    unwrapped,
                    contexts,
                    max_new_tokens,
                    eos_ids=self.eos_token_ids,
                    pad_id=self._tokenizer.pad_token_id,
                    temperature=self.temperature,
                    top_k=self.top_k,
                    top_p=self.top_p,
                )
            out = unwrapped.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config
            )
        sampled = out[:, input_ids.size(1) :].tolist()
        eos = set(self.eos_token_ids)
        result = []
        for ids in sampled:
            cut = next((i + 1 for i, tok in enumerate(ids) if tok in eos), len(ids))
            result.append(ids[:cut])
        return result

    def action_entropies(self, contexts: list[list[int]], actions: list[list[int]]) -> list[float]:
        """Mean entropy of the sampling distribution (this run's temperature) over each action's tokens (AEPO)."""
        model = self.accelerator.unwrap_model(self.model)
        return action_entropies(model, contexts, actions, self._tokenizer.pad_token_id, temperature=self.temperature)

    def _use_kv_sampler(self) -> bool:
        args = self.args
        plain = (
            self.repetition_penalty in (None, 1.0)
            and self.min_p is None
            and not args.generation_kwargs
            and args.cache_implementation is None
        )
        return args.sampler == "kv" and plain
