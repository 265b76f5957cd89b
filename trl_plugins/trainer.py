"""``AgentGRPOTrainer``: TRL's ``GRPOTrainer`` trained on multi-turn episodes in agentgym environments.

The trainer stays a TRL trainer: ``train()``, ``report_to`` logging, checkpoints and
``resume_from_checkpoint``, PEFT via ``peft_config``, gradient checkpointing and accumulation,
bf16 on CUDA and ``num_iterations > 1`` all work as in ``GRPOTrainer``.  What changes:

* **Data**: tasks come from the environment's train split (a dataset is optional); TRL's sampler
  repeats each task ``num_generations`` times with one seed, so the G episodes of a group play
  the same task.
* **Generation** (:meth:`AgentGRPOTrainer._generate_and_score_completions`): token-exact
  multi-turn rollouts (:mod:`agentgym_envs.engine`; AEPO's branching rollout: :mod:`trl_plugins.aepo`), all live episodes in one call of the generation backend
  (:mod:`trl_plugins.generation`) per turn, turned into tensors by :mod:`trl_plugins.batch`.  Environment
  tokens have ``tool_mask = 0``: no loss, and left out of every statistic.
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

The trainer is TRL glue; each job lives in its own module: :mod:`trl_plugins.options` (TRL options it refuses),
:mod:`trl_plugins.envs` (the environment pool and the task dataset), :mod:`trl_plugins.generation` (the generation
backend and vLLM weight sync), :mod:`trl_plugins.batch` (episodes -> tensors, micro-batches),
:mod:`trl_plugins.scoring` (log-probs and entropy), :mod:`trl_plugins.metrics` (what it logs) and
:mod:`trl_plugins.hooks` (the loss pipeline and the hooks' checkpoint state).

Subclassing: override :meth:`AgentGRPOTrainer.make_env_factory` (how environments are built),
:meth:`AgentGRPOTrainer.episode_advantages` (per-turn advantages of a batch of episodes) or
:meth:`AgentGRPOTrainer.generate_tokens` (the sampler); see ``docs/trainer.md``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from agentgym_envs.core import as_text_env
from agentgym_envs.engine import ChatFormat, Episode, RolloutStats, run_episodes
from agentgym_envs.generation.transformers import TransformersBackend
from trl_plugins import batch as batching
from trl_plugins import metrics as logged
from trl_plugins.advantages import turn_advantages
from trl_plugins.aepo import BranchingStats, run_branching_episodes
from trl_plugins.async_rollouts import AsyncRollouts, AsyncRolloutsCallback, async_rollout_batch, check_one_process
from trl_plugins.config import AgentGRPOConfig, AgentPPOConfig
from trl_plugins.distributed import Ranks, rank_seed
from trl_plugins.envs import (
    CloseEnvsCallback,
    EnvPool,
    TrainTasks,
    default_env_factory,
    env_make_kwargs,
    env_worker_kind,
)
from trl_plugins.errors import TrainerConfigError
from trl_plugins.evaluation import HeldOutEvaluation
from trl_plugins.generation import GenerationMixin
from trl_plugins.hooks import (
    UNSCALED_LOSS_TYPES,
    EPOHook,
    LossContext,
    LossHook,
    build_hooks,
    compose_loss,
    load_hooks_state,
    save_hooks_state,
)
from trl_plugins.options import check_prompt_budget, check_trl_options
from trl_plugins.run_log import MetricsLogCallback
from trl_plugins.scoring import dropout_active, token_logps_and_entropy
from trl_plugins.shared_prompts import shared_prompt_logps_and_entropy, shared_prompt_model
from trl_plugins.trl_warnings import warn_if_vllm_untested
from trl_plugins.vllm_colocate import importance_sampling_ratio

__all__ = ["AgentGRPOTrainer", "environment_reward"]


def environment_reward(prompts: Any = None, completions: Any = None, env_return: Any = None, **_: Any) -> list[float]:
    """The environment's return of each episode (the trainer's only reward source; named for TRL's logs).

    Example:
        >>> environment_reward(env_return=[1, 0.5])
        [1.0, 0.5]
    """
    return [float(r) for r in (env_return or [])]


class AgentGRPOTrainer(HeldOutEvaluation, GenerationMixin, GRPOTrainer):
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
        env_factory: builds one environment (default: :meth:`make_env_factory`).
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
        args = self._checked_args(args)
        custom_env_factory = env_factory is not None
        worker_kind = env_worker_kind(args, custom_factory=custom_env_factory)
        env_factory = env_factory or self.make_env_factory(args)
        probe = env_factory()
        task_ids = list(as_text_env(probe).task_ids)
        #: The environments of the rollouts (:class:`~trl_plugins.envs.EnvPool`); worker groups are built on demand.
        self.env_pool = EnvPool(
            env_factory, worker_kind, args.env_id, make_kwargs=env_make_kwargs(args),
            max_processes=args.env_processes, probe=probe, timeout_s=args.env_step_timeout_s,
        )
        self.tasks = TrainTasks(task_ids[: args.max_tasks] if args.max_tasks is not None else task_ids)
        use_vllm = bool(args.use_vllm)
        # TRL would start its own single-turn vLLM engine; ours (a generation backend of the rollout engine) is
        # built by make_generation_backend, so GRPOTrainer.__init__ sees use_vllm=False and it is set back after.
        args.use_vllm = False
        try:
            super().__init__(
                model=model,
                reward_funcs=[environment_reward],
                args=args,
                train_dataset=self.tasks.dataset(train_dataset, args.seed),
                # the held-out tasks (trl_plugins.evaluation)
                eval_dataset=self.held_out_dataset(args, eval_env_factory, custom_env_factory=custom_env_factory),
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        finally:
            args.use_vllm = use_vllm
        self.use_vllm = use_vllm
        if use_vllm:
            warn_if_vllm_untested()  # TRL's own version warnings are silenced at import (trl_plugins.trl_warnings)
        self._last_loaded_step = -1  # the global step whose weights the vLLM engine holds (-1: none pushed yet)
        # One set of stop ids everywhere: the sampler, the chat format and the token-limit flag (TRL's eos_token_ids
        # are the tokenizer's eos and every end id of the generation config).
        self.chat_format = ChatFormat(self._tokenizer, self.chat_template_kwargs, stop_ids=self.eos_token_ids)
        self.rollout_config = args.rollout_config()
        if self.aux_loss_enabled:
            raise NotImplementedError(
                "router_aux_loss_coef: the MoE router's auxiliary loss is not supported by AgentGRPOTrainer "
                "(set router_aux_loss_coef=0.0)"
            )
        check_prompt_budget(probe, self.chat_format, self.rollout_config)
        self.generation_backend = self.make_generation_backend()
        self.loss_hooks: list[LossHook] = self._build_hooks(args, loss_hooks)
        self._needs_entropy_grad = any(h.needs_entropy for h in self.loss_hooks)
        self._needs_old_entropy = any(h.needs_old_entropy for h in self.loss_hooks)
        self.add_callback(CloseEnvsCallback(self.close_envs))
        self.add_callback(MetricsLogCallback())  # output_dir/metrics.jsonl, whatever report_to says
        self.last_episodes: list[Episode] = []
        self.last_rollout_stats = RolloutStats()
        self._check_groups_per_process()
        check_one_process(args.async_rollouts, self.accelerator.num_processes)
        # U(0, 1) draws of AEPO branching: a stream of this process's own (it plays whole groups, see above)
        self._aepo_rng = random.Random(rank_seed(args.seed, self.accelerator.process_index))
        #: The background producer of ``async_rollouts`` (:mod:`trl_plugins.async_rollouts`), started on first use.
        self.async_rollouts: AsyncRollouts | None = None
        if args.async_rollouts:
            self.add_callback(AsyncRolloutsCallback(lambda: self.async_rollouts))

    def _checked_args(self, args: AgentGRPOConfig | None) -> AgentGRPOConfig:
        """``args`` (default: the config class's defaults), checked to fit this trainer and TRL's options."""
        if args is None:
            args = self.config_class(output_dir="runs/agentgym")
        if not isinstance(args, self.config_class) or (
            isinstance(args, AgentPPOConfig) and not issubclass(self.config_class, AgentPPOConfig)
        ):
            raise TypeError(
                f"args must be an {self.config_class.__name__}, got {type(args).__name__}"
                + (" (use AgentPPOTrainer for PPO)" if isinstance(args, AgentPPOConfig) else "")
            )
        check_trl_options(args)
        return args

    @staticmethod
    def _build_hooks(args: AgentGRPOConfig, extra: Sequence[LossHook] | None) -> list[LossHook]:
        hooks = build_hooks([*args.loss_hooks, *(extra or [])], args.hook_settings())
        for hook in hooks:  # EPO's released-code gating counts turns against the rollout's turn limit
            if isinstance(hook, EPOHook) and hook.config.released_max_step is None:
                hook.config.released_max_step = args.max_turns
        return hooks

    # ---- processes ---------------------------------------------------------------------
    @property
    def ranks(self) -> Ranks:
        """The run's processes (:class:`~trl_plugins.distributed.Ranks`): what the batch statistics gather over."""
        return Ranks.from_accelerator(self.accelerator)

    def _check_groups_per_process(self) -> None:
        """AEPO's branching rollout forks a group's episodes from one another, so a group must not be split across
        processes: each process's share of a generation batch must hold whole groups."""
        args = self.args
        local = args.per_device_train_batch_size * args.steps_per_generation
        if args.aepo.branching is not None and self.accelerator.num_processes > 1 and local % self.num_generations:
            raise TrainerConfigError(
                f"aepo.branching with {self.accelerator.num_processes} processes needs whole groups per process: "
                f"per_device_train_batch_size * steps_per_generation ({local}) must be a multiple of "
                f"num_generations ({self.num_generations})"
            )

    def _global_rollout(self, episodes: Sequence[Episode], stats: RolloutStats) -> tuple[list[Episode], slice, RolloutStats]:
        """Every process's episodes in rank order (TRL's order of the generation batch), this process's slice of
        them, and the rollout stats of every process merged; with one process, the episodes and stats themselves.

        Group advantages, ``scale_rewards="batch"``, GiGPO's step groups and the logged metrics are computed on the
        global episodes: TRL's sampler may put a group's episodes on several processes."""
        ranks = self.ranks
        all_episodes, mine = ranks.gather_objects(episodes)
        if ranks.distributed:
            stats = logged.merge_rollout_stats(ranks.gather_objects([stats])[0])
        return all_episodes, mine, stats

    # ---- environments ------------------------------------------------------------------
    @staticmethod
    def make_env_factory(args: AgentGRPOConfig) -> Callable[[], gym.Env]:
        """How environments are built (override it, or pass ``env_factory=``): by default
        :func:`~trl_plugins.envs.default_env_factory`, the train split with the configured reward wrappers."""
        return default_env_factory(args)

    @property
    def env_worker_kind(self) -> str:
        """Where the environments step (:attr:`AgentGRPOConfig.env_workers`, resolved)."""
        return self.env_pool.worker_kind

    def close_envs(self) -> None:
        """Close every environment of the pool (simulators, JVMs, browsers) and a vLLM engine.

        A later rollout (another ``train()`` or ``evaluate()``) builds the environments and the engine again.
        """
        if getattr(self, "async_rollouts", None) is not None:  # first: its thread plays in these environments
            self.async_rollouts.close()
            self.async_rollouts = None
        self.env_pool.close()
        self.close_eval_envs()
        if self.use_vllm and getattr(self, "generation_backend", None) is not None:
            self.generation_backend.close()
            self.generation_backend = None

    # ---- episodes -> batch ----------------------------------------------------------------
    def episode_advantages(self, episodes: Sequence[Episode]) -> list[torch.Tensor]:
        """One advantage per turn of each episode, with the configured estimator.

        The trainer passes the episodes of every process (the global generation batch, gathered), so groups split
        across processes and batch statistics are whole; each process keeps its slice of the result."""
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

    def _play_episodes(
        self, tasks: list[tuple[Any, int | None, Any]], backend: Any = None
    ) -> tuple[list[Episode], RolloutStats]:
        """The batch's episodes and their stats: the engine's rollout, or AEPO's branching one (``aepo.branching``),
        with ``backend`` (default: the trainer's generation backend)."""
        branching = self.args.aepo.branching
        envs, backend = self.env_pool.take(len(tasks)), backend or self.generation_backend
        if branching is None:
            stats = RolloutStats()
            return run_episodes(envs, tasks, backend, self.chat_format, self.rollout_config, stats), stats
        stats = BranchingStats()
        # entropy_temperature: the transformers sampler's recorded entropies (same weights, this temperature) stand
        # in for action_entropies' forward, which then runs only for backends that record none (vLLM, "generate").
        episodes = run_branching_episodes(
            envs, tasks, backend, self.chat_format, self.rollout_config, entropy_fn=self.action_entropies,
            branching=branching, stats=stats, rng=self._aepo_rng, entropy_temperature=self.temperature,
        )
        return episodes, stats

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        if mode == "train" and self.args.async_rollouts:  # played in the background; TRL's rows are not used
            episodes, stats = async_rollout_batch(self)
        else:
            tasks = [self.tasks.resolve(row) for row in inputs]
            if self.generation_backend is None:  # closed at the end of an earlier train()
                self.generation_backend = self.make_generation_backend()
            self.sync_vllm_weights()
            episodes, stats = self._play_episodes(tasks)
        self.last_episodes, self.last_rollout_stats = list(episodes), stats
        all_episodes, mine, all_stats = self._global_rollout(episodes, stats)
        old_source = self._old_scores_source(episodes)
        samples = batching.episode_samples(
            episodes, self.episode_advantages(all_episodes)[mine], context_mode=self.rollout_config.context_mode,
            mask_truncated=self.args.mask_truncated_completions,
            mask_truncated_episodes=self.args.mask_truncated_episodes,
            with_sampling_logps=self.corrects_sampling or old_source == "sampler",
            with_sampling_entropies=old_source == "sampler" and self._needs_old_entropy,
        )
        output = batching.pad_samples(samples, self._tokenizer.pad_token_id, self.accelerator.device)
        loss_mask = output["completion_mask"] * output["tool_mask"]
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        if old_source == "sampler":
            output["old_per_token_logps"] = output.pop("sampling_per_token_logps") * loss_mask
            if self._needs_old_entropy:
                output["old_entropy"] = output.pop("sampling_per_token_entropy") * loss_mask
        self._score_old_and_ref(output, mode, score_old=old_source == "forward")
        logged.rollout_metrics(self._metrics[mode], all_episodes, all_stats)
        self._count_batch(output, mode)
        if self.corrects_sampling and "old_per_token_logps" in output:  # else at loss time, from the loss's forward
            output["importance_sampling_ratio"] = self._correct_sampling(output, output["old_per_token_logps"], mode)
        return output

    @property
    def corrects_sampling(self) -> bool:
        """Whether batches carry the sampler's log-probs and the loss TRL's importance-sampling correction: with
        vLLM (another implementation) and with ``async_rollouts`` ahead of the learner (an older policy)."""
        return self.use_vllm or (self.args.async_rollouts and self.args.max_staleness > 0)

    def _old_scores_source(self, episodes: Sequence[Episode]) -> str:
        """Where a fresh batch's old log-probs (and entropies) come from: ``"loss"``, ``"sampler"`` or ``"forward"``.

        ``"loss"``: the loss's own forward, detached (the weights do not change before it, so they are the same
        numbers); ``"sampler"``: the transformers sampler's log-probs (and entropies, for hooks that need the old
        entropy: ERC, AEPO's ``use_old_entropy``), recorded while sampling; ``"forward"``: a no-grad forward over
        the batch (:meth:`_score_old_and_ref`).
        """
        args = self.args
        on_policy = args.gradient_accumulation_steps % (args.steps_per_generation * self.num_iterations) == 0
        if on_policy and not (self._needs_old_entropy or self.corrects_sampling):
            return "loss"  # TRL's own shortcut
        # Dropout draws another mask in every forward: no two passes give the same numbers, so each is its own.
        if not args.reuse_sampling_logprobs or (self.model.training and dropout_active(self.model)):
            return "forward"
        if on_policy:
            return "loss"
        backend, cfg = self.generation_backend, self.rollout_config
        # The sampler (TransformersBackend's decode) records log_softmax(logits / temperature) of the sampled id
        # and the full-vocabulary entropy of that distribution, before top-k/top-p filtering: the trainer's
        # quantities, from the same weights, unless the trainer scores under a mixed-precision autocast the
        # sampler does not use, or at another temperature.  vLLM's are another implementation's (and record no
        # entropies) and an asynchronous producer's an older policy's (TRL's correction needs the trainer's own).
        exact = (
            isinstance(backend, TransformersBackend)
            and backend.settings.temperature == self.temperature
            and self.accelerator.mixed_precision == "no"
            and not self.corrects_sampling
        )
        if exact and batching.sampled_in_sample_context(
            episodes, cfg.context_mode, cfg.reply, entropies=self._needs_old_entropy
        ):
            return "sampler"
        return "forward"

    def _score_old_and_ref(self, batch: dict[str, Any], mode: str, score_old: bool = True) -> None:
        """Add the old policy's log-probs (and entropy; ``score_old``) and the reference model's to a fresh batch.

        A PEFT policy's reference is its base model, the adapter disabled (TRL's ``use_adapter``): no copy.
        """
        input_ids, attention_mask, logits_to_keep, mask = batching.model_inputs(batch)
        args = self.args
        size = args.per_device_train_batch_size if mode == "train" else args.per_device_eval_batch_size
        # With vLLM the sampler is another implementation (and maybe an older policy): old log-probs are always
        # the trainer's own, and TRL's importance-sampling ratio corrects for the sampler's (as GRPOTrainer).
        with torch.no_grad(), disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
            if score_old:
                old_logps, old_entropy = self.token_logps_and_entropy(
                    self.model, input_ids, attention_mask, logits_to_keep, mask, size
                )
                batch["old_per_token_logps"] = old_logps
                if self._needs_old_entropy:
                    batch["old_entropy"] = old_entropy
            if self.beta == 0.0:
                return
            if self.ref_model is not None:
                batch["ref_per_token_logps"], _ = self.token_logps_and_entropy(
                    self.ref_model, input_ids, attention_mask, logits_to_keep, mask, size
                )
                return
            unwrapped = self.accelerator.unwrap_model(self.model)
            with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                batch["ref_per_token_logps"], _ = self.token_logps_and_entropy(
                    self.model, input_ids, attention_mask, logits_to_keep, mask, size
                )

    def _correct_sampling(self, batch: dict[str, Any], old_logps: torch.Tensor, mode: str) -> torch.Tensor | None:
        """vLLM: TRL's importance-sampling ratio of the trainer's old log-probs to the sampler's, and its metrics."""
        args = self.args
        sampling = batch["sampling_per_token_logps"]
        loss_mask = batch["completion_mask"] * batch["tool_mask"]
        is_ratio = None
        if args.vllm_importance_sampling_correction:
            is_ratio = importance_sampling_ratio(
                old_logps, sampling, loss_mask, mode=args.vllm_importance_sampling_mode,
                clip_min=args.vllm_importance_sampling_clip_min, clip_max=args.vllm_importance_sampling_clip_max,
            )
        logged.sampling_gap_metrics(self._metrics[mode], self.accelerator, old_logps, sampling, is_ratio, loss_mask)
        return is_ratio

    def _count_batch(self, batch: dict[str, Any], mode: str) -> None:
        """``completions/mean_length`` (model tokens per sample) and TRL's ``num_tokens`` (tokens seen)."""
        loss_mask = batch["completion_mask"] * batch["tool_mask"]
        metrics = self._metrics[mode]
        metrics["completions/mean_length"].append(loss_mask.sum(-1).float().mean().item())
        if mode == "train":
            self.state.num_input_tokens_seen += (batch["prompt_mask"].sum() + loss_mask.sum()).item()
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        if mode != "train":
            return self._generate_and_score_completions(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            generated = self._generate_and_score_completions(generation_batch)
            self._buffered_inputs = batching.split_batch(generated, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def token_logps_and_entropy(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        mask: torch.Tensor,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of the completion tokens and their full-vocabulary entropy
        (:func:`trl_plugins.scoring.token_logps_and_entropy` at the trainer's temperature)."""
        return token_logps_and_entropy(
            model, input_ids, attention_mask, logits_to_keep, mask,
            accelerator=self.accelerator, temperature=self.temperature, batch_size=batch_size,
        )

    # ---- loss ---------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None):
        """The loss of one micro-batch, in pieces of at most ``per_device_train_batch_size`` samples.

        Step-wise samples are turns, so a micro-batch can hold more of them than the configured batch size; it is
        then scored in pieces, so memory follows ``per_device_train_batch_size``, and gives exactly the whole
        micro-batch's loss and gradient, whatever the loss type, hooks, KL or entropy bonus:

        1. a no-grad pass scores every piece (:meth:`token_scores`: log-probabilities, entropy, PPO's values);
        2. the loss is computed once, on the whole micro-batch's scores (:meth:`loss_from_scores`), so batch
           statistics (AEPO's entropy standardisation, EPO's gate), normalisers, hook state and metrics see the
           whole micro-batch; its gradient with respect to the scores is taken;
        3. each piece is scored again with its gradient and backpropagated with the loss's gradient with respect
           to its scores (the chain rule: the weights do not change between pieces), before the next forward.

        The price is one no-grad forward over the micro-batch.  Under dropout the two passes see different masks.
        """
        if return_outputs:
            raise ValueError("AgentGRPOTrainer does not return outputs from compute_loss")
        size = self.args.per_device_train_batch_size
        rows = inputs["completion_ids"].size(0)
        n_pieces = self._piece_count(rows, size)
        if not (model.training and n_pieces > 1 and self._can_split_backward()):
            return self._compute_loss(model, inputs)
        pieces = [batching.slice_rows(inputs, start, start + size) for start in range(0, rows, size)]
        # Pieces that other processes need: one row each, scored and backpropagated with a zero gradient, so every
        # process runs as many forwards and backwards (DDP's buffer broadcasts and gradient all-reduces pair up).
        padding = [batching.slice_rows(inputs, 0, 1)] * (n_pieces - len(pieces))
        with torch.no_grad():
            scored = [self.token_scores(model, piece) for piece in pieces]
            for piece in padding:
                self.token_scores(model, piece)
        whole = {name: torch.cat([s[name] for s in scored]).requires_grad_() for name in scored[0]}
        loss = self.loss_from_scores(inputs, whole)
        names = [name for name in whole]
        found = torch.autograd.grad(loss, [whole[name] for name in names], allow_unused=True)
        grads = {name: g for name, g in zip(names, found, strict=True) if g is not None}
        scale = self._returned_loss_scale(num_items_in_batch)
        start = 0
        everything = pieces + padding
        for k, piece in enumerate(everything):
            scores = self.token_scores(model, piece)
            zero = 0.0 * sum(v.sum() for v in scores.values())
            if k < len(pieces):
                stop = start + piece["completion_ids"].size(0)
                # Its backward gives the piece's share of the whole loss's gradient; its value is 0.
                surrogate = sum(((g[start:stop] * scores[n]).sum() for n, g in grads.items()), zero)
                start = stop
            else:
                surrogate = zero
            surrogate = surrogate - surrogate.detach()
            if k < len(everything) - 1:
                self.accelerator.backward(surrogate * scale)  # the Trainer scales the returned loss the same way
        return loss.detach() + surrogate

    def _piece_count(self, rows: int, size: int) -> int:
        """How many pieces of ``size`` rows :meth:`compute_loss` scores a micro-batch in: the most any process needs."""
        n_pieces = -(-rows // size)
        ranks = self.ranks
        if ranks.distributed:
            n_pieces = int(ranks.max(torch.tensor(n_pieces)))
        return n_pieces

    def _can_split_backward(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type != DistributedType.DEEPSPEED and self.args.n_gpu <= 1

    def _returned_loss_scale(self, num_items_in_batch: Any) -> float:
        """What ``Trainer.training_step`` multiplies the returned loss by before its backward."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None
        return 1.0 if scaled else 1.0 / self._accumulation_steps()

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return self.loss_from_scores(inputs, self.token_scores(model, inputs))

    def token_scores(self, model: Any, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """What the model gives per completion token of a micro-batch, ``(rows, tokens)`` each: ``"logps"`` and
        ``"entropy"`` (a subclass adds its own, e.g. PPO's ``"values"``); the loss depends on the model only
        through them (:meth:`compute_loss` relies on it to split a micro-batch exactly)."""
        shared = self._shared_prompt_scores(model, inputs) if self.args.share_group_prompts else None
        if shared is not None:
            logps, entropy = shared
        else:
            input_ids, attention_mask, logits_to_keep, mask = batching.model_inputs(inputs)
            logps, entropy = self.token_logps_and_entropy(model, input_ids, attention_mask, logits_to_keep, mask)
        return {"logps": logps, "entropy": entropy}

    def _shared_prompt_scores(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``share_group_prompts``: the micro-batch's log-probs and entropies with each prompt that several rows
        share run once (:mod:`trl_plugins.shared_prompts`), or ``None`` where that does not apply (no two rows share
        a prompt; a model or setting where it would not be exact:
        :func:`~trl_plugins.shared_prompts.shared_prompt_model`).  Rows of their own go through
        :meth:`token_logps_and_entropy`."""
        head_model = shared_prompt_model(model, self.accelerator)
        if head_model is None:
            return None

        def score_rows(rows: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
            input_ids, attention_mask, logits_to_keep, mask = batching.model_inputs(rows)
            return self.token_logps_and_entropy(model, input_ids, attention_mask, logits_to_keep, mask)

        return shared_prompt_logps_and_entropy(
            head_model, inputs, accelerator=self.accelerator, score_rows=score_rows, temperature=self.temperature
        )

    def loss_from_scores(self, inputs: dict[str, Any], scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a micro-batch from its :meth:`token_scores` (and the loss metrics logged once)."""
        logps, entropy = scores["logps"], scores["entropy"]
        mask = batching.model_inputs(inputs)[3]
        old_logps = inputs.get("old_per_token_logps")
        mode = "train" if self.model.training else "eval"
        rl_step, rl_steps = self.rl_step()
        sampling_ratio = inputs.get("importance_sampling_ratio")
        if old_logps is None and "sampling_per_token_logps" in inputs:  # vLLM, old log-probs from this forward
            sampling_ratio = self._correct_sampling(inputs, logps.detach(), mode)
        old_entropy = inputs.get("old_entropy")
        if old_entropy is None and self._needs_old_entropy and old_logps is None:  # on-policy: this forward's
            old_entropy = entropy.detach()
        ctx = LossContext(
            logps=logps,
            old_logps=logps.detach() if old_logps is None else old_logps,
            advantages=inputs["advantages"],
            mask=mask,
            entropy=entropy if self._needs_entropy_grad else None,
            old_entropy=old_entropy,
            turn_ids=inputs["turn_ids"],
            step=rl_step,
            total_steps=rl_steps,
            ref_logps=inputs.get("ref_per_token_logps"),
            training=mode == "train",
            ranks=self.ranks,
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
            sampling_ratio=sampling_ratio,
        )
        # As TRL's GRPOTrainer._compute_loss: the policy loss is divided by the accumulation steps except for the
        # loss types whose normaliser already spans the accumulation window (dapo, cispo, vespo); every other term
        # (hook extras such as EPO, the entropy bonus, PPO's value loss) is a per-micro-batch mean divided by them,
        # so its weight relative to the policy loss does not depend on gradient_accumulation_steps.
        accumulation = self._accumulation_steps() if mode == "train" else 1
        policy_scale = 1 if self.loss_type in UNSCALED_LOSS_TYPES else accumulation
        loss = terms.policy_loss / policy_scale + terms.extra_loss / accumulation
        if self.entropy_coef:  # the bonus is the mean entropy of every process's tokens (this process's share)
            m = mask.to(entropy.dtype)
            mean_entropy = ctx.ranks.mean_share((torch.where(mask.bool(), entropy, 0.0) * m).sum(), m.sum())
            loss = loss - self.entropy_coef * mean_entropy / accumulation
        logged.loss_metrics(
            self._metrics[mode], self.accelerator, ctx, terms.policy_loss.detach(), entropy, terms.ratio,
            (self.epsilon_low, self.epsilon_high),
        )
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

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        # Background rollouts wait: the held-out evaluation may use the same vLLM engine.
        with self.async_rollouts.paused() if self.async_rollouts is not None else contextlib.nullcontext():
            return super().evaluate(*args, **kwargs)

    # ---- logging and checkpoints --------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        logged.hook_metrics(self._metrics[mode], self.loss_hooks)
        super().log(logs, start_time)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.loss_hooks and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            save_hooks_state(self.loss_hooks, folder)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            load_hooks_state(self.loss_hooks, checkpoint)
