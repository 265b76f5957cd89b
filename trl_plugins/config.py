"""Configurations of the trainers: :class:`AgentGRPOConfig` (TRL's ``GRPOConfig`` plus the environment) for
:class:`~trl_plugins.trainer.AgentGRPOTrainer`, and :class:`AgentPPOConfig` (plus the critic) for
:class:`~trl_plugins.ppo_trainer.AgentPPOTrainer`.

Everything TRL's ``GRPOConfig`` offers keeps its meaning (learning rate, ``num_generations``,
``num_iterations``, ``beta``, ``loss_type``, ``gradient_accumulation_steps``, ``bf16``,
``gradient_checkpointing``, ``report_to``, ``save_steps``, ...).  ``max_completion_length`` is
not used by the rollouts (their limits are ``max_new_tokens_per_turn``, ``max_turns`` and
``max_context_tokens``); ``per_device_train_batch_size`` counts episodes.

Example:
    >>> cfg = AgentGRPOConfig(output_dir="/tmp/run", env_id="agentgym/TextWorld-w2-o3-q4-v0",
    ...                       num_generations=4, per_device_train_batch_size=4, max_turns=12)
    >>> cfg.rollout_config().max_turns
    12
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from trl import GRPOConfig

from agentgym_envs.engine import CONTEXT_MODES, RolloutConfig
from agentgym_envs.prompts import DEFAULT_SYSTEM_PROMPT, PromptConfig
from agentgym_envs.workers import step_deadline_s
from trl_plugins.advantages import ESTIMATORS
from trl_plugins.aepo.config import AEPOConfig
from trl_plugins.errors import TrainerConfigError
from trl_plugins.hooks.compose import HOOKS
from trl_plugins.hooks.epo import EPOConfig
from trl_plugins.hooks.erc import ERCConfig
from trl_plugins.ppo import CriticConfig

#: TRL loss types the trainer implements: all of TRL 1.16's (others raise at construction).
SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "sapo", "cispo", "vespo")
#: Where the environments of a batch step (``"auto"``: :func:`agentgym_envs.workers.default_worker_kind`).
ENV_WORKERS = ("auto", "inprocess", "process", "ray")
#: Where rollouts are generated (:mod:`agentgym_envs.generation`).
GENERATION_BACKENDS = ("transformers", "vllm")
#: TRL's default ``max_completion_length``: any other value was set by the user, who is told it is not used.
TRL_MAX_COMPLETION_LENGTH = GRPOConfig.__dataclass_fields__["max_completion_length"].default


def sub_config(name: str, config_class: type, value: Any) -> Any:
    """``value`` as a ``config_class``: an instance is kept, ``None`` is the defaults, a mapping or JSON text (from
    the command line) gives its fields; unknown keys and any other value raise a one-line
    :class:`~trl_plugins.errors.TrainerConfigError`.

    Example:
        >>> sub_config("erc", ERCConfig, '{"beta_low": 0.1}')
        ERCConfig(beta_low=0.1, beta_high=0.05)
        >>> sub_config("erc", ERCConfig, {"beta": 0.1})
        Traceback (most recent call last):
        ...
        trl_plugins.errors.TrainerConfigError: unknown erc settings ['beta']; known: ['beta_high', 'beta_low']
    """
    if isinstance(value, config_class):
        return value
    if value is None:
        return config_class()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            example = '{"alpha": 0.05}'
            raise TrainerConfigError(f"{name} must be a JSON object, e.g. '{example}': {exc} in {value!r}") from exc
    if not isinstance(value, dict):
        raise TrainerConfigError(f"{name} must be a mapping of {config_class.__name__} fields, not {value!r}")
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise TrainerConfigError(f"unknown {name} settings {unknown}; known: {sorted(known)}")
    return config_class(**value)


@dataclass
class AgentGRPOConfig(GRPOConfig):
    """``GRPOConfig`` with the environment, rollout limits, advantage estimator and loss hooks.

    Attributes:
        env_id: a registered agentgym id, e.g. ``"agentgym/TextWorld-w2-o3-q4-v0"``.
        env_kwargs: constructor arguments of the family (``seed_range``, ``max_steps``, ``action_format``...).
            Training always uses the ``train`` split.
        reward: ``"sparse"``, ``"dense"`` or ``"native"`` (the shared reward wrappers).
        step_penalty / format_penalty: the shared penalty wrappers.
        max_turns / max_new_tokens_per_turn / max_context_tokens: rollout limits.
        context_mode / history_turns: ``"full"`` trajectories or ``"stepwise"`` samples with the last k turns.
        advantage_estimator: ``"grpo"``, ``"dr_grpo"``, ``"rloo"``, ``"reinforce_pp"`` or ``"gigpo"``
            (:mod:`trl_plugins.advantages`).  PPO with a critic is :class:`AgentPPOConfig`.
        gamma: discount of turn rewards for ``reinforce_pp`` and ``gigpo`` (default 1.0, GiGPO 0.95).
        gigpo_omega: weight of GiGPO's step-level advantage.
        loss_hooks: hooks of :mod:`trl_plugins.hooks` by name (``["epo", "erc"]``), in the order they apply,
            built by :func:`trl_plugins.hooks.build_hooks` (which also takes a ``{"name": "epo", **params}`` entry
            as shorthand).  Hook objects go to the trainer's ``loss_hooks=`` argument.
        epo / erc: each hook's settings, a typed sub-config living with its hook
            (:class:`~trl_plugins.hooks.epo.EPOConfig`, :class:`~trl_plugins.hooks.erc.ERCConfig`); a mapping (YAML,
            ``TrlParser``) or JSON text (``--epo '{"alpha": 0.05}'``) is parsed into it.  Settings of a hook that
            ``loss_hooks`` does not list are an error when the trainer builds its hooks.
        loss_hook_kwargs: deprecated; ``{"epo": {...}}`` is mapped into the ``epo`` field (with a warning).
        system_prompt / include_format_instructions: the shared prompt rendering.
        max_tasks: use only the first N tasks of the train split (``None``: all).
        sampler: ``"kv"`` (:func:`agentgym_envs.generation.sampling.sample_batch`: finished rows leave the batch) or
            ``"generate"`` (transformers' ``generate``; used anyway for repetition penalty, min-p or
            ``generation_kwargs``).
        generation_backend: ``"transformers"``: the ``"kv"`` sampler runs as
            :class:`~agentgym_envs.generation.transformers.TransformersBackend`, which carries each episode's KV
            cache from turn to turn (only the environment's new tokens are prefilled).  ``"vllm"``: a vLLM engine
            (``vllm_mode="colocate"``: in the trainer's process; ``"server"``: ``trl vllm-serve``, CUDA), the
            policy's weights pushed into it after every optimizer step and TRL's importance-sampling correction
            (``vllm_importance_sampling_correction``) applied; ``use_vllm=True`` means the same (see ``docs/vllm.md``).
        vllm_enforce_eager: the colocated vLLM engine without ``torch.compile`` (default: it starts in seconds).
            ``False`` compiles the model when the engine starts (about a minute on CPU the first time; vLLM caches
            the result under ``~/.cache/vllm``) and samples faster after that: SmolLM2 in float32 on a 2-core CPU
            decoded in about a fifth less time.  Weight pushes reach the compiled model as they reach the eager
            one.
        carry_kv_cache: ``False`` prefills each turn's whole context again (the same samples, slower).
        reuse_sampling_logprobs: skip the no-grad forward over a fresh batch where its result is already known
            (``False``: always run it, as TRL does).  On-policy (``gradient_accumulation_steps`` a multiple of
            ``steps_per_generation * num_iterations``) the old log-probs and entropies, and with vLLM the
            importance-sampling ratio, come from the loss's own forward; off-policy the transformers sampler's
            log-probs (and entropies, for ERC and AEPO's ``use_old_entropy``) are the old ones when they equal the
            trainer's (same weights, temperature and contexts; no dropout, no mixed-precision autocast).  Same loss
            and gradients, one forward fewer (see ``docs/trainer.md``).
        share_group_prompts: in the loss forward, rows of a micro-batch with token-identical prompts (the episodes
            of a GRPO group) run the prompt once (batch 1, with grad) and their completions on its KV cache, repeated
            to the rows: the same log-probs, entropies and gradients up to float rounding, with the prompt's
            forward and backward done once per set instead of once per row (and the sets' common first tokens,
            such as a system prompt, once per micro-batch).  Applies to plain decoder-only
            full-attention ``*ForCausalLM`` models without gradient checkpointing (set
            ``gradient_checkpointing=False``: GRPOConfig turns it on by default; a warning says so) or active
            dropout; elsewhere, and in micro-batches where no two rows share a prompt, the usual forward runs (see
            ``docs/trainer.md``).
        env_workers: where the environments of a batch step: ``"inprocess"``, ``"process"`` (worker processes,
            :func:`agentgym_envs.workers.make_workers`: they step in parallel, a crashed one truncates its episode
            and is replaced), ``"ray"`` (Ray actors) or ``"auto"`` (default: processes for the slow families
            ScienceWorld, ALFWorld and web, in-process for the others; see ``docs/workers.md``).  A custom
            ``env_factory``, ``env_urls`` or AEPO branching (which copies environments) step in-process.
        env_processes: worker processes for ``env_workers="process"`` (default: the CPU's cores).
        env_step_timeout_s: the deadline of one reset or step in a worker process or Ray actor; past it the episode
            ends with ``truncation_reason="time_limit"`` (default: the family's ``Family.step_timeout_s``;
            ``math.inf``: none; see ``docs/workers.md``).
        mask_truncated_completions: TRL's meaning: completions cut by the length budget carry no loss -- a turn cut
            at ``max_new_tokens_per_turn`` and every turn of an episode that the context budget
            (``max_context_tokens``) ended (:func:`trl_plugins.batch.masked_turns`).  An episode the environment's
            step limit or ``max_turns`` ended is trained on.
        mask_truncated_episodes: also mask every episode that did not end in the environment (its step limit,
            ``max_turns``, the context budget, a time limit, a crash): what ``mask_truncated_completions`` meant
            before.  With environments that end a failed episode at their step limit, only won episodes then carry
            a loss.
        env_urls: OpenEnv servers started with ``agentgym serve`` to play on instead of local environments
            (``agentgym/Remote-v0``, one per environment, round-robin over the URLs; comma-separated on the
            command line).
        aepo: all of AEPO's settings (:class:`~trl_plugins.aepo.AEPOConfig`; a mapping in YAML, JSON text on the
            command line): the ``"aepo"`` loss hook's parameters (``coef``, ``eps_low``, ``eps_high``, ``dual_clip``,
            ``use_old_entropy``; used when ``loss_hooks`` lists ``"aepo"``, ``loss_hook_kwargs["aepo"]`` overriding
            them) and ``branching`` (:class:`~trl_plugins.aepo.AEPOBranchConfig`, ``None``: off): AEPO's dynamic
            entropy-balanced rollout, where of each task's ``num_generations`` samples (the paper's ``k``) ``m`` are
            independent rollouts and the rest branch at high-entropy tool-call steps (``beta``, ``w``,
            ``p_branch``, ``penalty``, ``entropy_tokens``, ``variant``: ``"paper"``, default, or the released
            code's ``"released"``).  Branching needs environments with ``snapshot()``/``restore()`` or deepcopy
            support (DeepSearch, TextCraft).
        eval_env_split / eval_tasks / eval_samples / eval_temperature: what the held-out evaluation plays (when
            TRL's ``eval_strategy``, ``eval_steps`` and ``eval_on_start`` say): ``eval_samples`` episodes of each of
            ``eval_tasks`` tasks (a count: the split's first N, ``None``/``"all"``: every task; or a list of
            indices) of the ``eval_env_split`` split (default ``"test"``), greedy at ``eval_temperature=0``
            (:mod:`trl_plugins.evaluation`).  Every run also writes ``output_dir/metrics.jsonl``
            (:mod:`trl_plugins.run_log`).
        async_rollouts: play the next generation batches in a background thread while the optimizer steps
            (:mod:`trl_plugins.async_rollouts`): the generator (a copy of the policy with the transformers backend,
            the vLLM engine with ``use_vllm``) gets the policy's weights after every optimizer step, each episode
            records the policy version that played it (``info["policy_version"]``), and the loss corrects for the
            older sampler with TRL's importance-sampling ratio (the ``vllm_importance_sampling_*`` settings).
        max_staleness: with ``async_rollouts``, how many optimizer steps a batch's policy may lag the policy that
            trains on it; the generator waits rather than play further ahead, and a batch older than this is
            dropped (``async/dropped_episodes``).  ``0``: the synchronous trainer, exactly (a batch is played when
            the learner asks for it, with its current weights).
    """

    env_id: str = field(default="agentgym/TextWorld-w2-o3-q4-v0", metadata={"help": "registered environment id"})
    # Dict and list fields are typed ``X | str | None`` (TRL's own trick): HfArgumentParser/TrlParser then
    # accept them from the command line as JSON text, which __post_init__ decodes.
    env_kwargs: dict[str, Any] | str | None = field(
        default_factory=dict, metadata={"help": "environment constructor arguments (JSON on the command line)"}
    )
    reward: str = field(default="sparse", metadata={"help": "sparse, dense or native"})
    step_penalty: float = 0.0
    format_penalty: float = 0.0
    max_turns: int = 10
    max_new_tokens_per_turn: int = 64
    max_context_tokens: int = 4096
    context_mode: str = field(default="full", metadata={"help": "full or stepwise"})
    history_turns: int = 2
    advantage_estimator: str = field(default="grpo", metadata={"help": ", ".join(ESTIMATORS)})
    gamma: float | None = None
    gigpo_omega: float = 1.0
    loss_hooks: list[Any] | str | None = field(
        default_factory=list,
        metadata={"help": "loss hook names or dicts (trl_plugins.hooks): JSON, or names separated by commas"},
    )
    # Typed like the dict fields (``X | str | ...``) so that the command line gives JSON text.
    epo: EPOConfig | str | dict[str, Any] | None = field(
        default_factory=EPOConfig, metadata={"help": "EPO hook settings (trl_plugins.hooks.EPOConfig), JSON"}
    )
    erc: ERCConfig | str | dict[str, Any] | None = field(
        default_factory=ERCConfig, metadata={"help": "ERC hook settings (trl_plugins.hooks.ERCConfig), JSON"}
    )
    loss_hook_kwargs: dict[str, dict[str, Any]] | str | None = field(
        default=None, metadata={"help": "deprecated: use the hook's own field (--epo '{\"alpha\": 0.05}')"}
    )
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    include_format_instructions: bool = True
    max_tasks: int | None = None
    sampler: str = field(default="kv", metadata={"help": "kv (lean KV-cache sampler) or generate (transformers)"})
    generation_backend: str = field(
        default="transformers",
        metadata={"help": "transformers (the KV cache is carried across an episode's turns) or vllm (= use_vllm)"},
    )
    vllm_enforce_eager: bool = field(
        default=True,
        metadata={
            "help": "start the colocated vLLM engine without torch.compile (starts in seconds; False: compiled, "
            "slower to start, faster to sample)"
        },
    )
    carry_kv_cache: bool = field(default=True, metadata={"help": "keep each episode's KV cache between its turns"})
    reuse_sampling_logprobs: bool = field(
        default=True,
        metadata={
            "help": "take old log-probs/entropies from the loss's forward (on-policy) or the sampler (off-policy, "
            "where they equal the trainer's) instead of a separate no-grad forward"
        },
    )
    share_group_prompts: bool = field(
        default=False,
        metadata={
            "help": "in the loss forward, run a prompt that several rows of a micro-batch share (a GRPO group's) "
            "once and its rows' completions on its KV cache (same log-probs and gradients, fewer tokens)"
        },
    )
    env_workers: str = field(default="auto", metadata={"help": "auto, inprocess, process or ray"})
    env_processes: int | None = field(default=None, metadata={"help": "worker processes (default: CPU cores)"})
    env_step_timeout_s: float | None = field(
        default=None,
        metadata={"help": "deadline of one env reset/step in a worker process, seconds (default: the family's; inf: none)"},
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={
            "help": "as TRL: completions cut by the length budget carry no loss (a turn cut at max_new_tokens_per_turn, "
            "an episode ended by the max_context_tokens budget); episodes ended by the step limit still do"
        },
    )
    mask_truncated_episodes: bool = field(
        default=False,
        metadata={
            "help": "also mask every episode the environment did not end (step limit, max_turns, time limit, crash); "
            "with failure-by-step-limit environments only won episodes then carry a loss"
        },
    )
    env_urls: list[str] | str | None = field(
        default=None, metadata={"help": "agentgym serve URLs to play on (comma-separated on the command line)"}
    )
    # Typed ``AEPOConfig | str | None`` so that HfArgumentParser/TrlParser read it as text (JSON); YAML and Python
    # give a mapping or the dataclass. __post_init__ makes it an AEPOConfig.
    aepo: AEPOConfig | str | None = field(
        default=None,
        metadata={"help": 'AEPO settings (JSON): hook parameters and branching, e.g. {"branching": {"w": 0.3}}'},
    )
    async_rollouts: bool = field(
        default=False,
        metadata={"help": "play the next batches in a background thread while the optimizer steps"},
    )
    max_staleness: int = field(
        default=1,
        metadata={"help": "async_rollouts: optimizer steps a batch's policy may lag the trained one (0: synchronous)"},
    )

    #: The typed sub-config fields and their classes (a subclass adds its own, e.g. PPO's ``ppo``).
    SUB_CONFIGS: ClassVar[dict[str, type]] = {"epo": EPOConfig, "erc": ERCConfig}

    def __post_init__(self) -> None:
        self._decode_command_line_values()
        self._map_deprecated_fields()
        for name, config_class in self.SUB_CONFIGS.items():
            setattr(self, name, sub_config(name, config_class, getattr(self, name)))
        # AEPO's settings hold a nested branching config, which AEPOConfig.from_value reads.
        self.aepo = AEPOConfig.from_value(self.aepo)  # type: ignore[arg-type]
        self._prepare_evaluation_and_logging()
        # Our rollouts own the episode data, so the columns TRL would drop must stay.
        self.remove_unused_columns = False
        if self.bf16 is None and not self.fp16:
            import torch

            # TRL defaults to bf16, which transformers refuses without a GPU; keep bf16 on CUDA only.
            self.bf16 = bool(torch.cuda.is_available())
        if self.dataloader_pin_memory:
            import torch

            # Nothing to pin to without an accelerator (torch would warn at every epoch); the tasks are tiny anyway.
            self.dataloader_pin_memory = bool(torch.accelerator.is_available())
        self._warn_unused_trl_limits()
        super().__post_init__()
        if self.share_group_prompts and self.gradient_checkpointing:
            # transformers drops the KV cache under gradient checkpointing while training: nothing to share on
            warnings.warn(
                "share_group_prompts has no effect with gradient_checkpointing=True (GRPOConfig's default); "
                "set gradient_checkpointing=False to use it",
                UserWarning,
                stacklevel=3,
            )
        if self.context_mode not in CONTEXT_MODES:
            raise TrainerConfigError(f"context_mode must be one of {CONTEXT_MODES}, not {self.context_mode!r}")
        self._check_advantage_estimator()
        if self.reward not in ("sparse", "dense", "native"):
            raise TrainerConfigError(f"reward must be sparse, dense or native, not {self.reward!r}")
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            raise TrainerConfigError(
                f"AgentGRPOTrainer implements loss_type in {SUPPORTED_LOSS_TYPES}; {self.loss_type!r} is not supported"
            )
        if self.sampler not in ("kv", "generate"):
            raise TrainerConfigError(f"sampler must be 'kv' or 'generate', not {self.sampler!r}")
        if self.env_workers not in ENV_WORKERS:
            raise TrainerConfigError(f"env_workers must be one of {ENV_WORKERS}, not {self.env_workers!r}")
        if self.env_processes is not None and self.env_processes < 1:
            raise TrainerConfigError(f"env_processes must be >= 1, got {self.env_processes}")
        if self.env_step_timeout_s is not None:
            try:
                step_deadline_s(self.env_id, self.env_step_timeout_s)
            except ValueError as exc:
                raise TrainerConfigError(f"env_step_timeout_s: {exc}") from exc
        if isinstance(self.env_urls, str):
            self.env_urls = [url.strip() for url in self.env_urls.split(",") if url.strip()]
        if self.env_urls is not None and not self.env_urls:
            raise TrainerConfigError("env_urls is empty: give at least one URL of an `agentgym serve` server")
        if self.generation_backend not in GENERATION_BACKENDS:
            raise TrainerConfigError(
                f"generation_backend must be one of {GENERATION_BACKENDS}, not {self.generation_backend!r}"
            )
        # One switch with two names: TRL's use_vllm (whose vllm_* settings then apply) and our generation_backend.
        if self.use_vllm:
            self.generation_backend = "vllm"
        elif self.generation_backend == "vllm":
            self.use_vllm = True
        self.rollout_config()  # validates the limits
        self._check_async_rollouts()

    def _check_async_rollouts(self) -> None:
        if isinstance(self.max_staleness, bool) or not isinstance(self.max_staleness, int) or self.max_staleness < 0:
            raise TrainerConfigError(f"max_staleness must be an integer >= 0, got {self.max_staleness!r}")
        if not self.async_rollouts:
            return
        if self.aepo.branching is not None:  # type: ignore[union-attr]
            raise TrainerConfigError(
                "async_rollouts does not support AEPO branching (its entropy probe reads the policy being trained); "
                "set aepo.branching=None or async_rollouts=False"
            )
        if self.generation_backend == "transformers" and self.sampler != "kv":
            raise TrainerConfigError(
                "async_rollouts needs the sampler's log-probabilities for its importance-sampling correction: use "
                "sampler='kv' (or generation_backend='vllm')"
            )

    def _warn_unused_trl_limits(self) -> None:
        """Warn (once per call site) that TRL's ``max_completion_length`` does not limit the multi-turn rollouts."""
        if self.max_completion_length is not None and self.max_completion_length != TRL_MAX_COMPLETION_LENGTH:
            warnings.warn(
                f"max_completion_length={self.max_completion_length} is not used by the agent trainer: an episode "
                "is limited by max_new_tokens_per_turn (tokens per reply), max_turns and max_context_tokens "
                "(the whole conversation); set those instead",
                UserWarning,
                stacklevel=4,
            )

    def _decode_command_line_values(self) -> None:
        """Turn the JSON text of dict and list fields (as the command line gives them) into values."""
        for name, empty in (("env_kwargs", dict), ("loss_hooks", list), ("loss_hook_kwargs", dict)):
            value = getattr(self, name)
            if value is None and name == "loss_hook_kwargs":
                continue
            if value is None:
                value = empty()
            elif isinstance(value, str):
                text = value.strip()
                try:
                    value = json.loads(text) if text else empty()
                except json.JSONDecodeError as exc:
                    if name != "loss_hooks":
                        raise TrainerConfigError(f"{name} must be a JSON object, e.g. '{{\"max_steps\": 20}}': "
                                                 f"{exc} in {value!r}") from exc
                    value = [part.strip() for part in text.split(",") if part.strip()]  # epo,erc
                if name == "loss_hooks" and isinstance(value, (str, dict)):
                    value = [value]
            if not isinstance(value, empty):
                raise TrainerConfigError(f"{name} must be a {empty.__name__}, not {type(value).__name__}: {value!r}")
            setattr(self, name, value)

    def _map_deprecated_fields(self) -> None:
        """Map ``loss_hook_kwargs`` into the hooks' own fields, with a warning (entries without a field stay)."""
        if not self.loss_hook_kwargs:
            self.loss_hook_kwargs = None
            return
        moved = sorted(set(self.loss_hook_kwargs) & set(self.SUB_CONFIGS))
        warnings.warn(
            f"loss_hook_kwargs is deprecated: give each hook's settings in its own field ({', '.join(moved) or 'epo'}"
            "=...; --epo '{\"alpha\": 0.05}' on the command line)", FutureWarning, stacklevel=4,
        )
        rest = {}
        for name, params in self.loss_hook_kwargs.items():
            if name in self.SUB_CONFIGS:
                current = sub_config(name, self.SUB_CONFIGS[name], getattr(self, name))
                setattr(self, name, sub_config(name, self.SUB_CONFIGS[name], {**asdict(current), **dict(params)}))
            else:
                rest[name] = params
        self.loss_hook_kwargs = rest or None

    def hook_settings(self) -> dict[str, Any]:
        """Settings per hook name for :func:`~trl_plugins.hooks.build_hooks`: the hook fields changed from their
        defaults (so that settings for a hook not in ``loss_hooks`` are reported) and ``loss_hook_kwargs`` entries
        that have no field.

        Example:
            >>> args = AgentGRPOConfig(output_dir="/tmp/x", loss_hooks=["epo"], epo={"alpha": 0.05})
            >>> args.hook_settings()["epo"].alpha
            0.05
        """
        settings: dict[str, Any] = dict(self.loss_hook_kwargs or {})
        for name, config_class in self.SUB_CONFIGS.items():
            value = getattr(self, name)
            if name in HOOKS and value != config_class():
                settings[name] = value
        # The hook's part of ``aepo`` changed from its defaults (the branching half configures the rollout).
        defaults = AEPOConfig().hook_params()
        changed = {k: v for k, v in self.aepo.hook_params().items() if v != defaults.get(k)}  # type: ignore[union-attr]
        if changed:
            settings["aepo"] = {**changed, **settings.get("aepo", {})}
        return settings

    def unsupported_trl_options(self) -> list[str]:
        """``GRPOConfig`` settings that ask for something the agent trainer does not do, each with what to use.

        The trainer raises on any of them at construction rather than ignore them (``use_vllm`` and the entropy
        options have their own messages).  Example:

        >>> AgentGRPOConfig(output_dir="/tmp/x", reward_weights=[2.0]).unsupported_trl_options()[0][:14]
        'reward_weights'
        """
        found = []
        if self.reward_weights is not None:
            found.append("reward_weights (the environment's return is the only reward; scale it with the reward "
                         "wrappers: reward, step_penalty, format_penalty)")
        if self.log_completions:
            found.append("log_completions (episodes are in trainer.last_episodes and their metrics under env/)")
        if self.max_tool_calling_iterations is not None:
            found.append("max_tool_calling_iterations (TRL's tool loop; the rollout's turn limit is max_turns)")
        if self.use_transformers_paged:
            found.append("use_transformers_paged (rollouts generate with sampler='kv' or 'generate')")
        return found

    def _check_advantage_estimator(self) -> None:
        if self.advantage_estimator == "ppo":
            raise TrainerConfigError(
                "advantage_estimator='ppo' moved to its own trainer: use AgentPPOConfig (the same fields plus the "
                "critic's, ppo={'level': 'turn'}) with AgentPPOTrainer "
                "(from trl_plugins import AgentPPOConfig, AgentPPOTrainer); "
                "in a run file, set 'algorithm: ppo'"
            )
        if self.advantage_estimator not in ESTIMATORS:
            raise TrainerConfigError(
                f"advantage_estimator must be one of {tuple(ESTIMATORS)}, not {self.advantage_estimator!r}"
            )

    @property
    def discount(self) -> float:
        """``gamma``, or its estimator-specific default."""
        if self.gamma is not None:
            return float(self.gamma)
        return 0.95 if self.advantage_estimator == "gigpo" else 1.0

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(system_prompt=self.system_prompt, include_format_instructions=self.include_format_instructions)

    def rollout_config(self) -> RolloutConfig:
        return RolloutConfig(
            max_turns=self.max_turns,
            max_new_tokens=self.max_new_tokens_per_turn,
            max_context_tokens=self.max_context_tokens,
            context_mode=self.context_mode,
            history_turns=self.history_turns,
            prompt=self.prompt_config(),
        )

    def to_dict(self) -> dict[str, Any]:
        """TRL's ``to_dict`` with the typed sub-configs (``epo``, ``erc``, ``aepo``, ``ppo``) as plain mappings, so
        that logging and ``to_json_string`` work."""
        out = super().to_dict()
        for key, value in out.items():
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                out[key] = dataclasses.asdict(value)
        return out

    # ---- held-out evaluation (trl_plugins.evaluation) and run logs (trl_plugins.run_log) -----------------------
    # TRL's eval_strategy / eval_steps / eval_on_start / per_device_eval_batch_size say when and how many at once;
    # these fields say what is played.
    eval_env_split: str = field(default="test", metadata={"help": "split of the held-out evaluation tasks"})
    eval_tasks: list[int] | str | int | None = field(
        default=20,
        metadata={"help": "held-out tasks: a count (the split's first N; 'all' for every task) or JSON indices"},
    )
    eval_samples: int = field(default=1, metadata={"help": "held-out episodes per task"})
    eval_temperature: float = field(default=0.0, metadata={"help": "sampling temperature of evaluation (0: greedy)"})

    def _prepare_evaluation_and_logging(self) -> None:
        """Decode and check the ``eval_*`` fields and ``report_to``'s loggers (before ``GRPOConfig``'s checks)."""
        from trl_plugins.run_log import check_loggers

        if isinstance(self.eval_tasks, str):
            text = self.eval_tasks.strip()
            try:
                self.eval_tasks = None if text.lower() in ("", "all", "none") else json.loads(text)
            except json.JSONDecodeError as exc:
                raise TrainerConfigError(f"eval_tasks must be a count or a JSON list of task indices, not {text!r}") from exc
        tasks = self.eval_tasks
        if isinstance(tasks, bool) or not (
            tasks is None or (isinstance(tasks, int) and tasks >= 1)
            or (isinstance(tasks, list) and tasks and all(isinstance(i, int) and i >= 0 for i in tasks))
        ):
            raise TrainerConfigError(f"eval_tasks must be a count >= 1 or a list of task indices >= 0, not {tasks!r}")
        if self.eval_samples < 1:
            raise TrainerConfigError(f"eval_samples must be >= 1, got {self.eval_samples}")
        if self.eval_temperature < 0:
            raise TrainerConfigError(f"eval_temperature must be >= 0 (0: greedy), got {self.eval_temperature}")
        if self.eval_env_split == "train":
            import warnings

            warnings.warn("eval_env_split='train': the evaluation tasks are training tasks, not held out", stacklevel=3)
        # GRPOConfig wants per_device_eval_batch_size to hold whole groups of num_generations_eval completions when
        # eval_strategy is set; the held-out evaluation that then runs plays ungrouped episodes.
        if self.num_generations_eval is None and str(getattr(self.eval_strategy, "value", self.eval_strategy)) != "no":
            self.num_generations_eval = 1
        check_loggers(self.report_to)


#: The deprecated flat ``ppo_<name>`` fields of :class:`AgentPPOConfig`, by their :class:`CriticConfig` name.
PPO_FLAT_FIELDS = ("critic", "level", "lam", "value_clip", "vf_coef", "whiten")


@dataclass
class AgentPPOConfig(AgentGRPOConfig):
    """:class:`AgentGRPOConfig` plus PPO's critic, for :class:`~trl_plugins.ppo_trainer.AgentPPOTrainer`.

    It subclasses ``AgentGRPOConfig`` (not TRL's ``PPOConfig``) because the trainer is the multi-turn GRPO trainer
    with a critic: every rollout, hook, reduction (``loss_type``) and TRL setting of ``AgentGRPOConfig`` keeps its
    meaning.  What differs: advantages come from the critic by GAE (``advantage_estimator`` is ``"gae"``; the old
    spelling ``"ppo"`` is accepted), so groups are not needed for the advantages (``num_generations`` still sets how
    many episodes share a task); ``context_mode`` must be ``"full"`` (GAE runs along the episode).

    Attributes:
        ppo: the critic's settings, a :class:`~trl_plugins.ppo.CriticConfig` (a mapping or JSON text is parsed
            into it): ``critic`` (``"head"``: a :class:`~trl_plugins.ppo.ValueHead` on the policy's last hidden
            state, sharing its backbone; ``"separate"``: a :class:`~trl_plugins.ppo.CriticModel` with its own
            backbone, a copy of the policy's unless the trainer gets ``critic_model=``; both are submodules of the
            policy, so the trainer's optimizer trains them and checkpoints hold them), ``level`` (GAE over model
            tokens, ``"token"``: each turn's reward on its last model token, environment tokens skipped; or over
            turns, ``"turn"``), ``lam`` (GAE lambda, 1.0), ``value_clip`` (clip range of the value loss around the
            old values, ``None``: unclipped), ``vf_coef`` (weight of the value loss) and ``whiten`` (whiten the
            advantages over the batch's model tokens).  Its discount is the trainer's ``gamma`` (default 1.0).
        ppo_critic / ppo_level / ppo_lam / ppo_value_clip / ppo_vf_coef / ppo_whiten: deprecated spellings of the
            ``ppo`` fields, mapped into it with a warning.

    Example:
        >>> cfg = AgentPPOConfig(output_dir="/tmp/run", ppo={"level": "turn"}, num_generations=2,
        ...                      per_device_train_batch_size=2)
        >>> cfg.ppo.level, cfg.advantage_estimator
        ('turn', 'gae')
    """

    advantage_estimator: str = field(default="gae", metadata={"help": "gae (the critic's advantages)"})
    ppo: CriticConfig | str | dict[str, Any] | None = field(
        default_factory=CriticConfig, metadata={"help": "critic settings (trl_plugins.ppo.CriticConfig), JSON"}
    )
    ppo_critic: str | None = field(default=None, metadata={"help": "deprecated: ppo.critic"})
    ppo_level: str | None = field(default=None, metadata={"help": "deprecated: ppo.level"})
    ppo_lam: float | None = field(default=None, metadata={"help": "deprecated: ppo.lam"})
    ppo_value_clip: float | None = field(default=None, metadata={"help": "deprecated: ppo.value_clip"})
    ppo_vf_coef: float | None = field(default=None, metadata={"help": "deprecated: ppo.vf_coef"})
    ppo_whiten: bool | None = field(default=None, metadata={"help": "deprecated: ppo.whiten"})

    SUB_CONFIGS: ClassVar[dict[str, type]] = {**AgentGRPOConfig.SUB_CONFIGS, "ppo": CriticConfig}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context_mode != "full":
            raise TrainerConfigError("AgentPPOConfig needs context_mode='full' (GAE runs along the episode)")
        if self.ppo.gamma not in (CriticConfig.gamma, self.discount):
            raise TrainerConfigError(
                f"ppo.gamma={self.ppo.gamma} differs from the trainer's discount {self.discount}: set 'gamma' (it is "
                "the discount of every estimator) instead"
            )
        self.ppo = replace(self.ppo, gamma=self.discount)

    def _map_deprecated_fields(self) -> None:
        super()._map_deprecated_fields()
        flat = {key: getattr(self, f"ppo_{key}") for key in PPO_FLAT_FIELDS if getattr(self, f"ppo_{key}") is not None}
        if not flat:
            return
        warnings.warn(
            f"{', '.join('ppo_' + k for k in flat)}: deprecated, use the ppo field instead (ppo={{"
            f"{', '.join(f'{k!r}: ...' for k in flat)}}}; --ppo '{{\"level\": \"turn\"}}' on the command line)",
            FutureWarning, stacklevel=4,
        )
        current = sub_config("ppo", CriticConfig, self.ppo)
        self.ppo = sub_config("ppo", CriticConfig, {**asdict(current), **flat})
        for key in flat:
            setattr(self, f"ppo_{key}", None)

    def _check_advantage_estimator(self) -> None:
        if self.advantage_estimator == "ppo":
            self.advantage_estimator = "gae"
        if self.advantage_estimator != "gae":
            raise TrainerConfigError(
                f"AgentPPOConfig's advantages come from the critic (advantage_estimator='gae'); "
                f"for {self.advantage_estimator!r} use AgentGRPOConfig"
            )


#: The config class of each ``algorithm`` a run file may name.
RUN_CONFIGS: dict[str, type[AgentGRPOConfig]] = {"grpo": AgentGRPOConfig, "ppo": AgentPPOConfig}


@dataclass
class RunSpec:
    """A training run read from a config file: the algorithm, the model, optional LoRA, and the trainer config.

    File format (YAML or JSON)::

        algorithm: grpo           # optional: "grpo" (AgentGRPOTrainer, default) or "ppo" (AgentPPOTrainer)
        model: smollm2            # "smollm2", "tiny" (random, for smoke runs) or a local path
        lora: {r: 16, lora_alpha: 32, target_modules: [q_proj, v_proj]}   # optional
        trainer:                  # any field of the algorithm's config (AgentGRPOConfig / AgentPPOConfig)
          output_dir: runs/tw
          env_id: agentgym/TextWorld-w2-o3-q4-v0
          num_generations: 4

    Example:
        >>> spec = RunSpec.from_dict({"model": "tiny", "trainer": {"output_dir": "/tmp/x", "max_steps": 1}})
        >>> spec.trainer.max_steps
        1
    """

    model: str
    trainer: AgentGRPOConfig
    lora: dict[str, Any] | None = None

    @property
    def algorithm(self) -> str:
        """``"ppo"`` for an :class:`AgentPPOConfig`, else ``"grpo"``."""
        return "ppo" if isinstance(self.trainer, AgentPPOConfig) else "grpo"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        unknown = set(data) - {"algorithm", "model", "trainer", "lora"}
        if unknown:
            raise TrainerConfigError(f"unknown top-level keys in the run config: {sorted(unknown)}")
        algorithm = str(data.get("algorithm", "grpo")).lower()
        if algorithm not in RUN_CONFIGS:
            raise TrainerConfigError(f"algorithm must be one of {sorted(RUN_CONFIGS)}, not {algorithm!r}")
        config_class = RUN_CONFIGS[algorithm]
        trainer = dict(data.get("trainer") or {})
        known = {f.name for f in fields(config_class)}
        bad = sorted(set(trainer) - known)
        if bad:
            hint = " (PPO settings need 'algorithm: ppo')" if any(k.startswith("ppo") for k in bad) else ""
            raise TrainerConfigError(f"unknown trainer settings for algorithm {algorithm!r}: {bad}{hint}")
        trainer.setdefault("output_dir", "runs/agentgym")
        return cls(model=str(data.get("model", "smollm2")), trainer=config_class(**trainer), lora=data.get("lora"))

    @classmethod
    def from_file(cls, path: str | Path) -> RunSpec:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise TrainerConfigError(f"{path}: the run config must be a mapping")
        return cls.from_dict(data)
