"""``AgentGRPOTrainer``: TRL's ``GRPOTrainer`` trained on multi-turn episodes in agentgym environments.

The trainer stays a TRL trainer: ``train()``, ``report_to`` logging, checkpoints and
``resume_from_checkpoint``, PEFT via ``peft_config``, gradient checkpointing and accumulation,
bf16 on CUDA and ``num_iterations > 1`` all work as in ``GRPOTrainer``.  What changes:

* **Data**: tasks come from the environment's train split (a dataset is optional); TRL's sampler
  repeats each task ``num_generations`` times with one seed, so the G episodes of a group play
  the same task.
* **Generation** (:meth:`AgentGRPOTrainer._generate_and_score_completions`): token-exact
  multi-turn rollouts (:mod:`agentgym_envs.engine`; AEPO's branching rollout: :mod:`trl_plugins.aepo`), all
  live episodes in one ``generate`` call per turn.  Environment tokens have ``tool_mask = 0``: no loss, and left out of every statistic.
* **Advantages**: per turn, from :mod:`trl_plugins.advantages` (``advantage_estimator``).
* **Loss** (:meth:`AgentGRPOTrainer._compute_loss`): the one pipeline of :mod:`trl_plugins.hooks.compose`
  (PPO-clip, the configured :class:`~trl_plugins.hooks.LossHook` s in the documented order, TRL's reductions).

PPO with a critic is :class:`~trl_plugins.ppo_trainer.AgentPPOTrainer`, a subclass sharing all of the above.

Example:
    >>> from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
    >>> from trl_plugins.models import smollm2_dir
    >>> args = AgentGRPOConfig(output_dir="runs/tw", env_id="agentgym/TextWorld-w2-o3-q4-v0",
    ...                        env_kwargs={"seed_range": (30001, 30100)}, num_generations=4,
    ...                        per_device_train_batch_size=8, max_turns=12, max_steps=100)  # doctest: +SKIP
    >>> AgentGRPOTrainer(str(smollm2_dir()), args=args).train()                            # doctest: +SKIP

Subclassing: override :meth:`AgentGRPOTrainer.make_env` (how environments are built),
:meth:`AgentGRPOTrainer.episode_advantages` (per-turn advantages of a batch of episodes) or
:meth:`AgentGRPOTrainer.generate_tokens` (the sampler); see ``docs/trainer.md``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import pad, use_adapter

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.core import as_text_env
from agentgym_envs.engine import CallableBackend, ChatFormat, Episode, RolloutStats, episode_metrics, run_episodes
from agentgym_envs.generation.base import SamplingSettings
from agentgym_envs.generation.transformers import TransformersBackend
from agentgym_envs.prompts import first_messages
from agentgym_envs.registry import make_env
from trl_plugins.advantages import turn_advantages
from trl_plugins.aepo import BranchingStats, action_entropies, run_branching_episodes
from trl_plugins.config import AgentGRPOConfig, AgentPPOConfig
from trl_plugins.errors import TrainerConfigError
from trl_plugins.evaluation import HeldOutEvaluation
from trl_plugins.hooks import (
    UNSCALED_LOSS_TYPES,
    EPOHook,
    LossContext,
    LossHook,
    build_hooks,
    clip_regions,
    compose_loss,
    entropy_metrics,
)
from trl_plugins.hooks.reductions import masked_mean, per_token_kl
from trl_plugins.run_log import MetricsLogCallback
from trl_plugins.sampling import sample_batch
from trl_plugins.vllm_colocate import importance_sampling_ratio, sampling_logps

HOOKS_STATE_FILE = "loss_hooks.pt"


def environment_reward(prompts: Any = None, completions: Any = None, env_return: Any = None, **_: Any) -> list[float]:
    """The environment's return of each episode (the trainer's only reward source; named for TRL's logs)."""
    return [float(r) for r in (env_return or [])]


#: The one hook builder under the trainer's historical name (``build_loss_hooks(args.loss_hooks, args.loss_hook_kwargs)``).
build_loss_hooks = build_hooks


class _HookStepCallback(TrainerCallback):
    """Closes the environments at the end of training (``hook.end_step`` is called by ``training_step``)."""

    def __init__(self, trainer: AgentGRPOTrainer):
        self.trainer = trainer

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.close_envs()


class AgentGRPOTrainer(HeldOutEvaluation, GRPOTrainer):
    """GRPO (and Dr.GRPO, RLOO, REINFORCE++, GiGPO) on multi-turn episodes of an agentgym environment.

    Args:
        model: a model id/path, a ``PreTrainedModel`` or a ``PeftModel`` (as for ``GRPOTrainer``).
        args: an :class:`~trl_plugins.config.AgentGRPOConfig`.
        processing_class: the tokenizer (its chat template renders the episodes).
        train_dataset: optional; rows with a ``task_index`` (index into the train split's tasks) or a
            ``task`` (task id) column and an optional ``seed`` column.  Default: every train task.
        callbacks, optimizers, peft_config: as for ``GRPOTrainer``.
        loss_hooks: :class:`~trl_plugins.hooks.LossHook` instances (added after those named in ``args``; the
            whole list goes through :func:`~trl_plugins.hooks.build_hooks`).
        env_factory: builds one environment (default: ``make_env(args.env_id, split="train", ...)``).
        eval_env_factory: builds one held-out environment for ``evaluate()`` (default: the training environment
            on ``args.eval_env_split``; needed with a custom ``env_factory``), see :mod:`trl_plugins.evaluation`.

    Example:
        >>> trainer = AgentGRPOTrainer(model, args=AgentGRPOConfig(output_dir="runs/x"),
        ...                            processing_class=tokenizer)   # doctest: +SKIP
        >>> trainer.train()                                          # doctest: +SKIP
    """

    _tag_names = ["trl", "grpo", "agentgym"]
    _name = "AgentGRPO"
    #: The config class this trainer takes (subclasses such as the PPO trainer narrow it).
    config_class: type[AgentGRPOConfig] = AgentGRPOConfig

    def __init__(
        self,
        model: Any,
        args: AgentGRPOConfig | None = None,
        processing_class: Any = None,
        train_dataset: Dataset | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        peft_config: Any = None,
        loss_hooks: Sequence[LossHook] | None = None,
        env_factory: Callable[[], gym.Env] | None = None,
        eval_env_factory: Callable[[], gym.Env] | None = None,
    ):
        if args is None:
            args = self.config_class(output_dir="runs/agentgym")
        if not isinstance(args, self.config_class) or (
            isinstance(args, AgentPPOConfig) and not issubclass(self.config_class, AgentPPOConfig)
        ):
            raise TypeError(
                f"args must be an {self.config_class.__name__}, got {type(args).__name__}"
                + (" (use AgentPPOTrainer for PPO)" if isinstance(args, AgentPPOConfig) else "")
            )
        if args.use_vllm:
            self._check_vllm_options(args)
        if args.use_transformers_continuous_batching:
            raise NotImplementedError("use_transformers_continuous_batching is not supported by AgentGRPOTrainer")
        if args.top_entropy_quantile < 1.0 or args.use_adaptive_entropy or args.off_policy_mask_threshold is not None:
            raise NotImplementedError(
                "top_entropy_quantile, use_adaptive_entropy and off_policy_mask_threshold are not supported by "
                "AgentGRPOTrainer; use a loss hook instead"
            )
        unsupported = args.unsupported_trl_options()
        if unsupported:
            raise NotImplementedError("AgentGRPOTrainer does not support these GRPOConfig options: " + "; ".join(unsupported))
        #: Where the environments step (:attr:`AgentGRPOConfig.env_workers`); worker groups are built on demand.
        self.env_worker_kind = self._resolve_env_workers(args, custom_factory=env_factory is not None)
        self._worker_groups: list[Any] = []
        self._env_factory = env_factory or self.make_env_factory(args)
        probe = self._env_factory()
        self._task_ids = list(as_text_env(probe).task_ids)
        if args.max_tasks is not None:
            self._task_ids = self._task_ids[: args.max_tasks]
        train_dataset = self._task_dataset(train_dataset, args)
        use_vllm = bool(args.use_vllm)
        # TRL would start its own single-turn vLLM engine; ours (a generation backend of the rollout engine) is
        # built by make_generation_backend, so GRPOTrainer.__init__ sees use_vllm=False and it is set back after.
        args.use_vllm = False
        try:
            super().__init__(
                model=model,
                reward_funcs=[environment_reward],
                args=args,
                train_dataset=train_dataset,
                # the held-out tasks (trl_plugins.evaluation)
                eval_dataset=self.held_out_dataset(args, eval_env_factory, custom_env_factory=env_factory is not None),
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        finally:
            args.use_vllm = use_vllm
        self.use_vllm = use_vllm
        self._last_loaded_step = -1  # the global step whose weights the vLLM engine holds (-1: none pushed yet)
        self._env_pool: list[gym.Env] = [probe]
        # One set of stop ids everywhere: the sampler, the chat format and the token-limit flag (TRL's eos_token_ids
        # are the tokenizer's eos and every end id of the generation config).
        self.chat_format = ChatFormat(self._tokenizer, self.chat_template_kwargs, stop_ids=self.eos_token_ids)
        self.rollout_config = args.rollout_config()
        if self.aux_loss_enabled:
            raise NotImplementedError(
                "router_aux_loss_coef: the MoE router's auxiliary loss is not supported by AgentGRPOTrainer "
                "(set router_aux_loss_coef=0.0)"
            )
        self._check_prompt_budget(probe)
        if self.env_worker_kind != "inprocess":  # the probe only told the tasks and the prompt; workers play
            probe.close()
            self._env_pool.clear()
        self.generation_backend = self.make_generation_backend()
        self.loss_hooks: list[LossHook] = build_hooks([*args.loss_hooks, *(loss_hooks or [])], args.hook_params())
        for hook in self.loss_hooks:  # EPO's released-code gating counts turns against the rollout's turn limit
            if isinstance(hook, EPOHook) and hook.config.released_max_step is None:
                hook.config.released_max_step = args.max_turns
        self._needs_entropy_grad = any(h.needs_entropy for h in self.loss_hooks)
        self._needs_old_entropy = any(h.needs_old_entropy for h in self.loss_hooks)
        self.add_callback(_HookStepCallback(self))
        self.add_callback(MetricsLogCallback())  # output_dir/metrics.jsonl, whatever report_to says
        self.last_episodes: list[Episode] = []
        self.last_rollout_stats = RolloutStats()
        self._aepo_rng = random.Random(args.seed)  # U(0, 1) draws of AEPO branching

    # ---- environments and data ---------------------------------------------------------
    @staticmethod
    def env_make_kwargs(args: AgentGRPOConfig) -> dict[str, Any]:
        """The ``make_env`` keyword arguments of a training environment: the train split and the reward wrappers."""
        kwargs = {k: v for k, v in args.env_kwargs.items() if k != "split"}
        if "seed_range" in kwargs and kwargs["seed_range"] is not None:
            kwargs["seed_range"] = tuple(kwargs["seed_range"])
        return dict(
            reward=args.reward, step_penalty=args.step_penalty, format_penalty=args.format_penalty, split="train",
            **kwargs,
        )

    @staticmethod
    def make_env_factory(args: AgentGRPOConfig) -> Callable[[], gym.Env]:
        """The default environment factory: the train split with the configured reward wrappers.

        With ``args.env_urls`` each call connects to the next server (round-robin) as ``agentgym/Remote-v0``.
        """
        kwargs = AgentGRPOTrainer.env_make_kwargs(args)
        if args.env_urls:
            urls = itertools.cycle(args.env_urls)
            return lambda: gym.make("agentgym/Remote-v0", url=next(urls), env_id=args.env_id, **kwargs)
        return lambda: make_env(args.env_id, **kwargs)

    @staticmethod
    def _resolve_env_workers(args: AgentGRPOConfig, custom_factory: bool) -> str:
        from agentgym_envs.workers import default_worker_kind

        if custom_factory or args.env_urls or args.aepo.branching is not None:
            return "inprocess"  # built by a callable here, played on a server, or copied by AEPO's branching
        return default_worker_kind(args.env_id) if args.env_workers == "auto" else args.env_workers

    def _task_dataset(self, dataset: Dataset | None, args: AgentGRPOConfig) -> Dataset:
        if dataset is None:
            n = len(self._task_ids)
            return Dataset.from_dict(
                {
                    "prompt": [str(t) for t in self._task_ids],
                    "task_index": list(range(n)),
                    "seed": [int(args.seed) * 100_003 + i for i in range(n)],
                }
            )
        columns = set(dataset.column_names)
        if not columns & {"task_index", "task"}:
            raise ValueError("a train_dataset for AgentGRPOTrainer needs a 'task_index' or a 'task' column")
        if "prompt" not in columns:
            dataset = dataset.add_column("prompt", [""] * len(dataset))
        return dataset

    def _envs(self, n: int) -> list[Any]:
        """``n`` environments (or environment workers, see :attr:`env_worker_kind`), built once and reused."""
        missing = n - len(self._env_pool)
        if missing > 0 and self.env_worker_kind == "inprocess":
            self._env_pool += [self._env_factory() for _ in range(missing)]
        elif missing > 0:
            from agentgym_envs.workers import make_workers

            group = make_workers(
                self.args.env_id, missing, kind=self.env_worker_kind, max_processes=self.args.env_processes,
                **self.env_make_kwargs(self.args),
            )
            self._worker_groups.append(group)
            self._env_pool += list(group)
        return self._env_pool[:n]

    def close_envs(self) -> None:
        """Close every environment of the pool (simulators, JVMs, browsers) and a vLLM engine.

        A later rollout (another ``train()`` or ``evaluate()``) builds the environments and the engine again.
        """
        if self._worker_groups:  # each group closes its workers' environments and stops their processes
            for group in self._worker_groups:
                group.close()
        else:
            for env in self._env_pool:
                env.close()
        self._env_pool.clear()
        self._worker_groups.clear()
        self.close_eval_envs()
        if self.use_vllm and getattr(self, "generation_backend", None) is not None:
            self.generation_backend.close()
            self.generation_backend = None

    def _row_task(self, row: dict[str, Any]) -> tuple[Any, int | None, Any]:
        if "task_index" in row and row["task_index"] is not None:
            index = int(row["task_index"])
            task = self._task_ids[index]
        else:
            task = row["task"]
            index = task
        seed = row.get("seed")
        seed = None if seed is None else int(seed)
        return task, seed, (index, seed)

    def _check_prompt_budget(self, env: gym.Env) -> None:
        """Fail at construction when the system prompt and format instructions alone leave no room for a turn."""
        cfg = self.rollout_config
        static = first_messages("", "", as_text_env(env).parser.instructions(), cfg.prompt)
        n = len(self.chat_format.prompt_ids(static))
        if n + cfg.max_new_tokens > cfg.max_context_tokens:
            raise TrainerConfigError(
                f"the system prompt and format instructions alone take {n} tokens; with max_new_tokens_per_turn="
                f"{cfg.max_new_tokens} they do not fit max_context_tokens={cfg.max_context_tokens}"
            )

    # ---- generation -------------------------------------------------------------------
    #: Parameters of the trained model that the served model does not have (left out of vLLM weight pushes).
    vllm_weight_exclude: tuple[str, ...] = ()

    @staticmethod
    def _check_vllm_options(args: AgentGRPOConfig) -> None:
        """Refuse, at construction, TRL vLLM settings the multi-turn rollouts do not implement."""
        unsupported = []
        if args.vllm_structured_outputs_regex:
            unsupported.append("vllm_structured_outputs_regex (actions are parsed by the environment's format)")
        if args.vllm_enable_sleep_mode:
            unsupported.append("vllm_enable_sleep_mode")
        if args.vllm_mode == "colocate" and args.vllm_tensor_parallel_size != 1:
            unsupported.append("vllm_tensor_parallel_size > 1 in colocate mode")
        if args.repetition_penalty not in (None, 1.0) or args.min_p is not None or args.generation_kwargs:
            unsupported.append("repetition_penalty, min_p and generation_kwargs with use_vllm (sampling is "
                               "temperature, top_p and top_k)")
        if args.vllm_mode not in ("colocate", "server"):
            unsupported.append(f"vllm_mode={args.vllm_mode!r} (use 'colocate' or 'server')")
        if (args.loss_type == "vespo" and args.vllm_importance_sampling_correction
                and args.vllm_importance_sampling_mode not in ("token_truncate", "token_mask")):
            unsupported.append("loss_type='vespo' with a sequence-level vllm_importance_sampling_mode (TRL: "
                               "'token_truncate' or 'token_mask')")
        if unsupported:
            raise NotImplementedError("use_vllm=True: not supported by AgentGRPOTrainer: " + "; ".join(unsupported))

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
        overridden = type(self).generate_tokens is not AgentGRPOTrainer.generate_tokens
        if overridden or not self._use_kv_sampler():
            return CallableBackend(self.generate_tokens, self.chat_format.stop_ids)
        settings = SamplingSettings(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, stop_ids=self.chat_format.stop_ids
        )
        return TransformersBackend(
            self.model, self._tokenizer.pad_token_id, settings, carry_cache=self.args.carry_kv_cache,
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

    def episode_advantages(self, episodes: Sequence[Episode]) -> list[torch.Tensor]:
        """One advantage per turn of each episode, with the configured estimator."""
        args: AgentGRPOConfig = self.args  # type: ignore[assignment]
        return turn_advantages(
            args.advantage_estimator,
            [ep.total_return for ep in episodes],
            [ep.group for ep in episodes],
            [ep.step_rewards for ep in episodes],
            [ep.state_keys for ep in episodes],
            gamma=args.discount,
            omega=args.gigpo_omega,
            scale=args.scale_rewards,
        )

    def _samples(self, episodes: Sequence[Episode], advantages: Sequence[torch.Tensor]) -> list[dict[str, list]]:
        samples = []
        # mask_truncated_completions: an episode that did not end in the environment (turn limit, context budget,
        # the environment's time limit, a crash) keeps its place in the advantages but carries no loss.
        drop = [self.args.mask_truncated_completions and ep.truncated for ep in episodes]
        if self.rollout_config.context_mode == "full":
            for ep, adv, dropped in zip(episodes, advantages, drop, strict=True):
                ids, mask, turn_ids = ep.completion()
                if dropped:
                    mask = [0] * len(mask)
                sample = {
                    "prompt": ep.prompt_ids,
                    "completion": ids,
                    "mask": mask,
                    "turn_ids": turn_ids,
                    "advantages": [float(adv[t]) if t >= 0 else 0.0 for t in turn_ids],
                }
                if self.use_vllm:
                    sample["sampling_logps"] = sampling_logps(
                        [_turn_logprobs(turn) for turn in ep.turns], [len(turn.env_ids) for turn in ep.turns]
                    )
                samples.append(sample)
        else:
            for ep, adv, dropped in zip(episodes, advantages, drop, strict=True):
                for t, turn in enumerate(ep.turns):
                    n = len(turn.action_ids)
                    sample = {
                        "prompt": turn.context_ids or [],
                        "completion": turn.action_ids,
                        "mask": [int(not dropped)] * n,
                        "turn_ids": [t] * n,
                        "advantages": [float(adv[t])] * n,
                    }
                    if self.use_vllm:
                        sample["sampling_logps"] = sampling_logps([_turn_logprobs(turn)], [0])
                    samples.append(sample)
        return samples

    def _play_episodes(self, tasks: list[tuple[Any, int | None, Any]]) -> tuple[list[Episode], RolloutStats]:
        """The batch's episodes and their stats: the engine's rollout, or AEPO's branching one (``aepo.branching``)."""
        branching = self.args.aepo.branching
        envs, backend = self._envs(len(tasks)), self.generation_backend
        if branching is None:
            stats = RolloutStats()
            return run_episodes(envs, tasks, backend, self.chat_format, self.rollout_config, stats), stats
        stats = BranchingStats()
        episodes = run_branching_episodes(
            envs, tasks, backend, self.chat_format, self.rollout_config, entropy_fn=self.action_entropies,
            branching=branching, stats=stats, rng=self._aepo_rng,
        )
        return episodes, stats

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        tasks = [self._row_task(row) for row in inputs]
        if self.generation_backend is None:  # closed at the end of an earlier train()
            self.generation_backend = self.make_generation_backend()
        self.sync_vllm_weights()
        episodes, stats = self._play_episodes(tasks)
        self.last_episodes, self.last_rollout_stats = list(episodes), stats
        advantages = self.episode_advantages(episodes)
        samples = self._samples(episodes, advantages)

        pad_id = self._tokenizer.pad_token_id
        prompts = [torch.tensor(s["prompt"], dtype=torch.long) for s in samples]
        completions = [torch.tensor(s["completion"], dtype=torch.long) for s in samples]
        prompt_ids = pad(prompts, padding_value=pad_id, padding_side="left").to(device)
        prompt_mask = pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left").to(device)
        completion_ids = pad(completions, padding_value=pad_id, padding_side="right").to(device)
        completion_mask = pad([torch.ones_like(c) for c in completions], padding_value=0, padding_side="right").to(device)
        tool_mask = pad([torch.tensor(s["mask"], dtype=torch.long) for s in samples], padding_value=0, padding_side="right").to(device)
        turn_ids = pad([torch.tensor(s["turn_ids"], dtype=torch.long) for s in samples], padding_value=-1, padding_side="right").to(device)
        token_adv = pad(
            [torch.tensor(s["advantages"], dtype=torch.float32) for s in samples], padding_value=0.0, padding_side="right"
        ).to(device)
        loss_mask = completion_mask * tool_mask
        num_items_in_batch = self.accelerator.gather(loss_mask.sum()).sum()

        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        generate_every = self.args.steps_per_generation * self.num_iterations
        # With vLLM the sampler is another implementation (and maybe an older policy): old log-probs are always
        # the trainer's own, and TRL's importance-sampling ratio corrects for the sampler's (as GRPOTrainer).
        need_old = (
            self.args.gradient_accumulation_steps % generate_every != 0 or self._needs_old_entropy or self.use_vllm
        )
        old_logps = old_entropy = ref_logps = None
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if need_old:
                old_logps, old_entropy = self.token_logps_and_entropy(
                    self.model, input_ids, attention_mask, logits_to_keep, loss_mask, batch_size
                )
            if self.beta != 0.0:
                if self.ref_model is not None:
                    ref_logps, _ = self.token_logps_and_entropy(
                        self.ref_model, input_ids, attention_mask, logits_to_keep, loss_mask, batch_size
                    )
                else:
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        ref_logps, _ = self.token_logps_and_entropy(
                            self.model, input_ids, attention_mask, logits_to_keep, loss_mask, batch_size
                        )

        self._log_rollout(episodes, stats, loss_mask, prompt_mask, mode)
        sampling = is_ratio = None
        if self.use_vllm:
            sampling = pad(
                [torch.tensor(s["sampling_logps"], dtype=torch.float32) for s in samples],
                padding_value=0.0, padding_side="right",
            ).to(device)
            if self.args.vllm_importance_sampling_correction:
                assert old_logps is not None
                is_ratio = importance_sampling_ratio(
                    old_logps, sampling, loss_mask, mode=self.args.vllm_importance_sampling_mode,
                    clip_min=self.args.vllm_importance_sampling_clip_min,
                    clip_max=self.args.vllm_importance_sampling_clip_max,
                )
            assert old_logps is not None
            self._log_sampling_gap(old_logps, sampling, is_ratio, loss_mask, mode)
        output: dict[str, Any] = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "tool_mask": tool_mask,
            "turn_ids": turn_ids,
            "advantages": token_adv,
            "num_items_in_batch": num_items_in_batch,
        }
        if old_logps is not None:
            output["old_per_token_logps"] = old_logps
        if old_entropy is not None and self._needs_old_entropy:
            output["old_entropy"] = old_entropy
        if ref_logps is not None:
            output["ref_per_token_logps"] = ref_logps
        if sampling is not None:
            output["sampling_per_token_logps"] = sampling
        if is_ratio is not None:
            output["importance_sampling_ratio"] = is_ratio
        return output

    def _log_sampling_gap(self, old_logps, sampling, is_ratio, loss_mask, mode: str) -> None:
        """TRL's ``sampling/*`` metrics: the sampler's log-prob gap to the trainer's and the IS ratio's range."""
        metrics = self._metrics[mode]
        mask = loss_mask.bool()
        delta = torch.abs(old_logps - sampling)[mask]
        delta = delta[~torch.isnan(delta)]
        zero = torch.zeros((), device=old_logps.device)
        metrics["sampling/sampling_logp_difference/mean"].append(
            self.accelerator.gather(delta.mean() if delta.numel() else zero).mean().item()
        )
        metrics["sampling/sampling_logp_difference/max"].append(
            self.accelerator.gather(delta.max() if delta.numel() else zero).max().item()
        )
        if is_ratio is None:
            return
        flat = is_ratio.flatten() if is_ratio.size(-1) == 1 else is_ratio[mask]
        for name, fn in (("min", torch.min), ("mean", torch.mean), ("max", torch.max)):
            value = fn(flat) if flat.numel() else zero
            gathered = self.accelerator.gather(value)
            reduce = {"min": torch.min, "mean": torch.mean, "max": torch.max}[name]
            metrics[f"sampling/importance_sampling_ratio/{name}"].append(reduce(gathered.float()).item())

    def _log_rollout(self, episodes: Sequence[Episode], stats: RolloutStats, loss_mask, prompt_mask, mode: str) -> None:
        metrics = self._metrics[mode]
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
        lengths = loss_mask.sum(-1).float()
        metrics["completions/mean_length"].append(lengths.mean().item())
        if mode == "train":
            seen = (prompt_mask.sum() + (loss_mask.sum())).item()
            self.state.num_input_tokens_seen += seen
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]

    # ---- batching -----------------------------------------------------------------------
    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        if mode != "train":
            return self._generate_and_score_completions(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            self._buffered_inputs = split_batch(batch, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    # ---- log-probabilities and entropy --------------------------------------------------
    def token_logps_and_entropy(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        mask: torch.Tensor,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of the completion tokens and their full-vocabulary entropy.

        Positions come from the attention mask (as in ``generate``), so left padding does not shift
        them.  Only positions where ``mask`` is 1 are scored (others are 0), which skips the LM-head
        work on environment tokens.
        """
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropy = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            attn = attention_mask[start : start + batch_size]
            keep = mask[start : start + batch_size]
            logps, entropy = self._chunk_logps(model, ids, attn, logits_to_keep, keep)
            all_logps.append(logps)
            all_entropy.append(entropy)
        return torch.cat(all_logps, 0), torch.cat(all_entropy, 0)

    def _chunk_logps(self, model, input_ids, attention_mask, logits_to_keep, mask):
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        targets = input_ids[:, -logits_to_keep:]
        head_model = self._plain_head_model(model)
        if head_model is None:
            # TRL's fused LM head (distributed wrappers, logit scaling): same quantities, no masking of positions.
            labels = input_ids.clone()
            labels[:, :-logits_to_keep] = -100
            labels[:, -logits_to_keep:] = targets.masked_fill(mask == 0, -100)
            with self.accelerator.autocast():
                out = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    labels=labels,
                    fused_lm_head=True,
                )
            return out.log_probs[:, -logits_to_keep:], out.entropy[:, -logits_to_keep:]
        from trl_plugins.entropy import logps_and_entropy

        backbone = getattr(head_model, head_model.base_model_prefix)
        head = head_model.get_output_embeddings()
        with self.accelerator.autocast():
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        hidden = hidden[:, -logits_to_keep - 1 : -1]
        return logps_and_entropy(
            hidden, targets, head.weight, head.bias, temperature=self.temperature, mask=mask, chunk_size=1024
        )

    def _plain_head_model(self, model: Any) -> Any:
        """The ``*ForCausalLM`` whose backbone and LM head can be called directly, or ``None``."""
        if model is not self.accelerator.unwrap_model(model):
            return None  # DDP/FSDP/DeepSpeed: go through the wrapper's forward
        inner = model.get_base_model() if is_peft_model(model) else model
        text = inner.config.get_text_config()
        if any(getattr(text, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
            return None
        if not hasattr(inner, getattr(inner, "base_model_prefix", "")) or inner.get_output_embeddings() is None:
            return None
        return inner

    # ---- loss ---------------------------------------------------------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        """``(input_ids, attention_mask, logits_to_keep, mask)`` of a scored batch; ``mask`` is 1.0 on model tokens."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        mask = (batch["completion_mask"] * batch["tool_mask"]).float()
        return input_ids, attention_mask, batch["completion_ids"].size(1), mask

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None):
        """The loss of one micro-batch, in pieces of at most ``per_device_train_batch_size`` samples.

        Step-wise samples are turns, so a micro-batch can hold more of them than the configured batch size; it is
        then scored in pieces (each piece's gradient is taken before the next forward), so memory follows
        ``per_device_train_batch_size``.  Pieces are weighted so that the policy term equals the whole
        micro-batch's for every loss type (by sample share for ``grpo``/``dr_grpo``, by token share for
        ``bnpo``, unweighted for ``dapo``, whose normalizer is global); token-mean extras (entropy bonus,
        hooks, KL) are weighted the same way.
        """
        if return_outputs:
            raise ValueError("AgentGRPOTrainer does not return outputs from compute_loss")
        size = self.args.per_device_train_batch_size
        rows = inputs["completion_ids"].size(0)
        if not (model.training and rows > size and self._can_split_backward()):
            return self._compute_loss(model, inputs)
        pieces = [slice_rows(inputs, start, start + size) for start in range(0, rows, size)]
        weights = self._piece_weights(inputs, pieces)
        scale = self._returned_loss_scale(num_items_in_batch)
        earlier = torch.zeros((), device=inputs["completion_ids"].device)
        for piece, weight in zip(pieces[:-1], weights[:-1], strict=True):
            loss = self._compute_loss(model, piece) * weight
            self.accelerator.backward(loss * scale)  # the Trainer scales the returned loss the same way
            earlier = earlier + loss.detach()
        return self._compute_loss(model, pieces[-1]) * weights[-1] + earlier

    def _can_split_backward(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type != DistributedType.DEEPSPEED and self.args.n_gpu <= 1

    def _returned_loss_scale(self, num_items_in_batch: Any) -> float:
        """What ``Trainer.training_step`` multiplies the returned loss by before its backward."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None
        return 1.0 if scaled else 1.0 / self._accumulation_steps()

    def _piece_weights(self, inputs: dict[str, Any], pieces: list[dict[str, Any]]) -> list[float]:
        if self.loss_type == "dapo":
            return [1.0] * len(pieces)
        if self.loss_type == "bnpo":
            tokens = [float((p["completion_mask"] * p["tool_mask"]).sum()) for p in pieces]
            total = max(1.0, sum(tokens))
            return [t / total for t in tokens]
        rows = inputs["completion_ids"].size(0)
        return [p["completion_ids"].size(0) / rows for p in pieces]

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        input_ids, attention_mask, logits_to_keep, mask = self.model_inputs(inputs)
        logps, entropy = self.token_logps_and_entropy(model, input_ids, attention_mask, logits_to_keep, mask)
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps
        mode = "train" if self.model.training else "eval"
        rl_step, rl_steps = self.rl_step()
        ctx = LossContext(
            logps=logps,
            old_logps=old_logps,
            advantages=inputs["advantages"],
            mask=mask,
            entropy=entropy if self._needs_entropy_grad else None,
            old_entropy=inputs.get("old_entropy"),
            turn_ids=inputs["turn_ids"],
            step=rl_step,
            total_steps=rl_steps,
            ref_logps=inputs.get("ref_per_token_logps"),
            training=mode == "train",
        )
        args = self.args
        terms = compose_loss(
            ctx,
            self.loss_hooks,
            eps_low=self.epsilon_low,
            eps_high=self.epsilon_high,
            delta=args.delta,
            kl_coef=self.beta,
            loss_type=self.loss_type,
            normalizer=self._dapo_normalizer(inputs, mode) if self.loss_type in UNSCALED_LOSS_TYPES else None,
            max_length=self._dr_grpo_length(),
            importance_sampling_level=self.importance_sampling_level,
            kl_bias_correction=bool(args.use_bias_correction_kl),
            sapo_temperatures=(args.sapo_temperature_pos, args.sapo_temperature_neg),
            vespo=(args.vespo_k_pos, args.vespo_lambda_pos, args.vespo_k_neg, args.vespo_lambda_neg),
            sampling_ratio=inputs.get("importance_sampling_ratio"),
        )
        # As TRL's GRPOTrainer._compute_loss: the policy loss is divided by the accumulation steps except for the
        # loss types whose normaliser already spans the accumulation window (dapo, cispo, vespo); every other term
        # (hook extras such as EPO, the entropy bonus, PPO's value loss) is a per-micro-batch mean divided by them,
        # so its weight relative to the policy loss does not depend on gradient_accumulation_steps.
        accumulation = self._accumulation_steps() if mode == "train" else 1
        policy_scale = 1 if self.loss_type in UNSCALED_LOSS_TYPES else accumulation
        loss = terms.policy_loss / policy_scale + terms.extra_loss / accumulation
        if self.entropy_coef:
            loss = loss - self.entropy_coef * masked_mean(entropy, mask) / accumulation
        self._log_loss_metrics(mode, terms.policy_loss.detach(), entropy, terms.ratio, ctx.advantages, mask, ctx)
        return loss

    def rl_step(self) -> tuple[int, int]:
        """``(k, K)``: the 0-based RL step (generation batch) being trained and the planned number of RL steps.

        One RL step spans ``steps_per_generation * num_iterations`` micro-batches, however many optimizer steps
        that is; hooks with a schedule or a history (EPO's ``beta_k`` and entropy history) count in RL steps.
        """
        accumulation = max(1, int(self.args.gradient_accumulation_steps))
        per_rl_step = self.args.steps_per_generation * self.num_iterations
        total = max(1, -(-int(self.state.max_steps or 1) * accumulation // per_rl_step))
        return self._micro_batch_index() // per_rl_step, total

    def _micro_batch_index(self, finished: bool = False) -> int:
        """Index of the training micro-batch being computed (``finished``: the one ``training_step`` just did).

        From the restored ``global_step`` (so it survives ``resume_from_checkpoint``) and TRL's micro-batch counter.
        """
        accumulation = max(1, int(self.args.gradient_accumulation_steps))
        return int(self.state.global_step) * accumulation + (self._step - int(finished)) % accumulation

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        output = super().training_step(model, inputs, num_items_in_batch)
        per_rl_step = self.args.steps_per_generation * self.num_iterations
        micro = self._micro_batch_index(finished=True)
        if (micro + 1) % per_rl_step == 0:  # the generation batch's last micro-batch: one RL step is done
            for hook in self.loss_hooks:
                hook.end_step(micro // per_rl_step)
        return output

    def _accumulation_steps(self) -> int:
        # Set by Trainer's loop; absent when the loss is computed outside ``train()``.
        return int(getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps))

    def _dr_grpo_length(self) -> int:
        """Dr.GRPO's constant length: the longest a sample can be."""
        cfg = self.rollout_config
        return cfg.max_context_tokens if cfg.context_mode == "full" else cfg.max_new_tokens

    def _dapo_normalizer(self, inputs: dict[str, Any], mode: str) -> torch.Tensor:
        """DAPO's normalizer: tokens of the whole generation batch, rescaled to one accumulation window (as TRL)."""
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self._accumulation_steps() / self.args.steps_per_generation
        return normalizer

    def _log_loss_metrics(self, mode, policy_loss, entropy, ratio, advantages, mask, ctx: LossContext) -> None:
        metrics = self._metrics[mode]

        def global_mean(x: torch.Tensor) -> float:  # over the model tokens of every process
            return masked_mean(x.detach().float(), mask, lambda t: self.accelerator.reduce(t, reduction="sum")).item()

        metrics["policy_loss"].append(self.accelerator.gather(policy_loss).mean().item())
        metrics["entropy"].append(global_mean(entropy))
        low, high = clip_regions(ratio, advantages, self.epsilon_low, self.epsilon_high)
        metrics["clip_ratio/low_mean"].append(global_mean(low))
        metrics["clip_ratio/high_mean"].append(global_mean(high))
        metrics["clip_ratio/region_mean"].append(global_mean(low | high))
        if ctx.ref_logps is not None:
            metrics["kl"].append(global_mean(per_token_kl(ctx.ref_logps, ctx.logps)))
        turns = entropy_metrics(entropy, mask, ctx.turn_ids, max_turns=None)
        for key, value in turns.items():
            if key != "entropy/mean":  # logged as "entropy" above, over every process
                metrics[key].append(value)

    # ---- logging and checkpoints --------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        for hook in self.loss_hooks:
            for key, value in hook.metrics().items():
                self._metrics[mode][f"hooks/{hook.name}/{key}"].append(float(value))
        super().log(logs, start_time)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.loss_hooks and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            torch.save({h.name: h.state_dict() for h in self.loss_hooks}, os.path.join(folder, HOOKS_STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.loss_hooks:
            path = os.path.join(checkpoint, HOOKS_STATE_FILE)
            if os.path.exists(path):
                state = torch.load(path, weights_only=False)
                for hook in self.loss_hooks:
                    if hook.name in state:
                        hook.load_state_dict(state[hook.name])


def _turn_logprobs(turn: Any) -> list[float] | None:
    """A turn's sampling log-probs, checked to lie along its action ids (they do when replies stay token ids)."""
    if turn.logprobs is not None and len(turn.logprobs) != len(turn.action_ids):
        raise ValueError(
            f"a turn has {len(turn.logprobs)} sampling log-probs for {len(turn.action_ids)} action tokens; "
            "use_vllm needs replies kept as the sampled ids (RolloutConfig.reply='tokens')"
        )
    return turn.logprobs


def slice_rows(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of every batched tensor of ``batch`` (scalars and other values are kept).

    Example:
        >>> slice_rows({"x": torch.arange(5), "n": torch.tensor(5)}, 1, 3)["x"].tolist()
        [1, 2]
    """
    return {k: v[start:stop] if isinstance(v, torch.Tensor) and v.ndim > 0 else v for k, v in batch.items()}


def split_batch(batch: dict[str, Any], chunks: int, seed: int | None = None) -> list[dict[str, Any]]:
    """Shuffle the rows of a batch and cut them into ``chunks`` near-equal micro-batches.

    Unlike TRL's ``split_tensor_dict`` the row count need not divide evenly (step-wise samples vary).

    Example:
        >>> parts = split_batch({"x": torch.arange(5), "n": torch.tensor(5)}, 2, seed=0)
        >>> [len(p["x"]) for p in parts], int(parts[0]["n"])
        ([3, 2], 5)
    """
    rows = next(v.size(0) for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim > 0)
    if rows < chunks:
        raise ValueError(f"{rows} samples cannot be split into {chunks} micro-batches")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    order = torch.randperm(rows, generator=generator)
    parts = []
    for piece in np.array_split(order.numpy(), chunks):
        index = torch.as_tensor(piece)
        part = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                part[key] = value[index.to(value.device)]
            else:
                part[key] = value
        parts.append(part)
    return parts


__all__ = ["AgentGRPOTrainer", "build_loss_hooks", "environment_reward", "slice_rows", "split_batch"]
