"""Held-out evaluation during training: a fixed set of test-split tasks, played through the trainer's own engine.

TRL's switches drive it (``eval_strategy``, ``eval_steps``, ``eval_on_start``, ``per_device_eval_batch_size``);
the config's ``eval_*`` fields say what is played (:class:`~trl_plugins.config.AgentGRPOConfig`):

* ``eval_env_split`` (default ``"test"``): the split the held-out tasks come from.  The environment is the
  training one (same ``env_id``, keywords and reward wrappers) on that split, without the training task
  selection (``seed_range``, ``tasks``), so a family's disjoint splits keep evaluation tasks out of training.
* ``eval_tasks``: how many tasks (the split's first N) or which (a list of indices into the split).
* ``eval_samples``: episodes per task; episode ``s`` of task ``i`` resets with seed ``args.seed + 1000 s + i``
  (the leaderboard's rule), so every evaluation plays the same episodes.
* ``eval_temperature``: 0 decodes greedily; the sampling RNG is seeded and forked, so an evaluation
  neither depends on nor disturbs the training's random state.

Each evaluation logs (and returns) ``eval/success_rate``, ``eval/return``, ``eval/steps`` and
``eval/invalid_action_rate``, each with its 95 % interval (``eval/<name>_ci_low`` / ``_ci_high``: the Wilson
interval of the leaderboard for rates, a normal interval for means), plus ``eval/episodes`` and
``eval/seconds``.  The returned dict also has ``eval_success_rate`` etc., so ``metric_for_best_model="success_rate"``
works with ``load_best_model_at_end``.

Example:
    >>> from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
    >>> args = AgentGRPOConfig(output_dir="runs/tc", env_id="agentgym/TextCraft-v0", eval_strategy="steps",
    ...                        eval_steps=10, eval_on_start=True, eval_tasks=20, eval_samples=2)  # doctest: +SKIP
    >>> AgentGRPOTrainer(model, args=args, processing_class=tok).evaluate()["eval/success_rate"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import torch
from datasets import Dataset
from transformers import Trainer

from agentgym_envs.core import as_text_env
from agentgym_envs.engine import Episode, run_episodes
from agentgym_envs.generation.base import SamplingSettings
from agentgym_envs.stats import wilson_interval
from trl_plugins.envs import default_env_factory, env_make_kwargs
from trl_plugins.errors import TrainerConfigError

#: Constructor keywords that pick training tasks; the held-out environment leaves them out.
TRAINING_TASK_SELECTION = ("split", "seed_range", "tasks")


def held_out_env_kwargs(train_kwargs: dict[str, Any], split: str) -> dict[str, Any]:
    """The ``make_env`` keywords of a held-out environment: the training environment's, on ``split``, without
    the training task selection (``seed_range``, ``tasks``).

    Example:
        >>> held_out_env_kwargs({"split": "train", "seed_range": (1, 9), "max_steps": 20, "reward": "dense"}, "test")
        {'max_steps': 20, 'reward': 'dense', 'split': 'test'}
    """
    kwargs = {k: v for k, v in train_kwargs.items() if k not in TRAINING_TASK_SELECTION}
    kwargs["split"] = split
    return kwargs


def select_tasks(task_ids: Sequence[Hashable], eval_tasks: int | Sequence[int] | None) -> list[Hashable]:
    """The held-out tasks: the first ``eval_tasks`` of the split (all when ``None``, or when the split is smaller),
    or the tasks at the given indices.

    Example:
        >>> select_tasks(["a", "b", "c"], 2), select_tasks(["a", "b", "c"], [2, 0]), select_tasks(["a"], 5)
        (['a', 'b'], ['c', 'a'], ['a'])
        >>> select_tasks(["a"], [3])
        Traceback (most recent call last):
        ...
        trl_plugins.errors.TrainerConfigError: eval_tasks index 3 is outside the held-out split's 1 tasks
    """
    if eval_tasks is None:
        return list(task_ids)
    if isinstance(eval_tasks, int):
        return list(task_ids[:eval_tasks])
    for index in eval_tasks:
        if not 0 <= int(index) < len(task_ids):
            raise TrainerConfigError(f"eval_tasks index {index} is outside the held-out split's {len(task_ids)} tasks")
    return [task_ids[int(i)] for i in eval_tasks]


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """The normal-approximation 95 % interval of a mean (a single value gives a zero-width interval).

    Example:
        >>> [round(x, 3) for x in mean_interval([0.0, 1.0, 1.0, 0.0])]
        [-0.066, 1.066]
    """
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = sum(values) / n
    if n == 1:
        return mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * std / math.sqrt(n)
    return mean - half, mean + half


def held_out_metrics(episodes: Sequence[Episode], prefix: str = "eval") -> dict[str, float]:
    """``<prefix>/success_rate``, ``/return``, ``/steps``, ``/invalid_action_rate`` with 95 % intervals, and
    ``/episodes``.

    Rates use the Wilson interval (:func:`agentgym_envs.stats.wilson_interval`, the leaderboard's; the
    invalid-action rate counts turns), means a normal interval (:func:`mean_interval`).

    Example:
        >>> from agentgym_envs.engine import Episode
        >>> m = held_out_metrics([Episode(0, 1, 0, [1], [], won=True), Episode(1, 2, 0, [1], [])])
        >>> m["eval/success_rate"], round(m["eval/success_rate_ci_low"], 3), m["eval/episodes"]
        (0.5, 0.095, 2.0)
    """
    if not episodes:
        raise ValueError("no held-out episodes to summarize")
    n = len(episodes)
    wins = sum(bool(ep.won) for ep in episodes)
    turns = [t for ep in episodes for t in ep.turns]
    invalid = sum(t.parse_error is not None for t in turns)
    returns = [float(ep.total_return) for ep in episodes]
    steps = [float(len(ep.turns)) for ep in episodes]
    out: dict[str, float] = {}

    def put(name: str, value: float, interval: tuple[float, float]) -> None:
        out[f"{prefix}/{name}"] = float(value)
        out[f"{prefix}/{name}_ci_low"], out[f"{prefix}/{name}_ci_high"] = (float(x) for x in interval)

    put("success_rate", wins / n, wilson_interval(wins, n))
    put("return", sum(returns) / n, mean_interval(returns))
    put("steps", sum(steps) / n, mean_interval(steps))
    put("invalid_action_rate", invalid / max(1, len(turns)), wilson_interval(invalid, len(turns)))
    out[f"{prefix}/episodes"] = float(n)
    return out


def _read_tasks(factory: Callable[[], gym.Env], eval_tasks: Any) -> list[Hashable]:
    """The held-out tasks (:func:`select_tasks`) of the environments ``factory`` builds, read from one of them."""
    probe = factory()
    try:
        return select_tasks(list(as_text_env(probe).task_ids), eval_tasks)
    finally:
        probe.close()


class HeldOutEvaluation:
    """Mixin of :class:`~trl_plugins.trainer.AgentGRPOTrainer`: ``evaluate()`` plays the held-out tasks.

    The trainer calls :meth:`held_out_dataset` before ``Trainer.__init__`` (the returned dataset of held-out
    tasks stands in for the ``eval_dataset`` that ``Trainer`` asks for when ``eval_strategy`` is set) and
    :meth:`close_eval_envs` from ``close_envs``.  Override :meth:`make_eval_env_factory` when the training
    environments come from a custom ``env_factory`` (the default builds ``args.env_id`` on ``eval_env_split``).

    Example:
        >>> metrics = trainer.evaluate()                 # doctest: +SKIP
        >>> metrics["eval/success_rate"], metrics["eval/success_rate_ci_high"]   # doctest: +SKIP
    """

    # Set by AgentGRPOTrainer / Trainer.
    args: Any
    env_worker_kind: str
    model: Any

    # ---- the held-out tasks -----------------------------------------------------------------
    @classmethod
    def make_eval_env_factory(cls, args: Any) -> Callable[[], gym.Env]:
        """Builds one held-out environment: the training environment's keywords on ``args.eval_env_split``
        (:func:`held_out_env_kwargs`); with ``args.env_urls``, on the servers, round-robin."""
        return default_env_factory(args, cls.eval_env_kwargs(args))

    @classmethod
    def eval_env_kwargs(cls, args: Any) -> dict[str, Any]:
        """The ``make_env`` keywords of a held-out environment (:func:`held_out_env_kwargs`)."""
        return held_out_env_kwargs(env_make_kwargs(args), args.eval_env_split)

    @classmethod
    def held_out_task_ids(cls, args: Any) -> list[Hashable]:
        """The held-out task ids of ``args`` (``eval_tasks`` of ``eval_env_split``), read from one environment.

        Example:
            >>> from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
            >>> AgentGRPOTrainer.held_out_task_ids(AgentGRPOConfig(output_dir="/tmp/x", env_id="agentgym/TextCraft-v0",
            ...                                                    eval_tasks=2))
            ['acacia door', 'acacia planks']
        """
        return _read_tasks(cls.make_eval_env_factory(args), args.eval_tasks)

    def held_out_dataset(
        self, args: Any, eval_env_factory: Callable[[], gym.Env] | None = None, custom_env_factory: bool = False
    ) -> Dataset | None:
        """Prepare the held-out evaluation; the dataset of its tasks when ``eval_strategy`` is set, else ``None``.

        ``eval_env_factory`` (the trainer's argument) builds one held-out environment; without it,
        :meth:`make_eval_env_factory`, unless the training environments come from a custom ``env_factory``
        (``custom_env_factory``): what it builds is unknown here, so evaluation then asks for an
        ``eval_env_factory``.  The task list is read (and ``eval_tasks`` checked) here, at construction, only
        when evaluation is switched on; a direct ``evaluate()`` call reads it on first use.
        """
        self._eval_args = args
        self._eval_env_factory: Callable[[], gym.Env] | None = eval_env_factory
        self._eval_in_workers = False  # whether held-out environments step in workers, as the training ones
        if eval_env_factory is None and not custom_env_factory:
            self._eval_env_factory = self.make_eval_env_factory(args)
            self._eval_in_workers = self.env_worker_kind != "inprocess"
        self._eval_pool: list[Any] = []
        self._eval_worker_groups: list[Any] = []
        self._eval_task_ids: list[Hashable] | None = None
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no" and not args.eval_on_start:
            return None
        tasks = self.eval_task_ids
        # For reference only (evaluate() plays the config's tasks): no task_index/task column, which would name
        # training tasks in TRL's evaluate(eval_dataset) path.
        return Dataset.from_dict({"prompt": [str(t) for t in tasks], "held_out_task": [str(t) for t in tasks]})

    @property
    def eval_task_ids(self) -> list[Hashable]:
        """This trainer's held-out task ids (:meth:`held_out_task_ids`), read once."""
        if self._eval_task_ids is None:
            self._eval_task_ids = _read_tasks(self._held_out_env_factory(), self._eval_args.eval_tasks)
        return self._eval_task_ids

    def _held_out_env_factory(self) -> Callable[[], gym.Env]:
        if self._eval_env_factory is None:
            raise TrainerConfigError(
                "held-out evaluation: this trainer's environments come from a custom env_factory, so it cannot tell "
                "how to build held-out ones; pass eval_env_factory= (one environment of the held-out split)"
            )
        return self._eval_env_factory

    def held_out_episodes(self) -> list[tuple[Hashable, int, Hashable]]:
        """``(task_id, seed, group)`` of every held-out episode, in a fixed order (sample-major, as the leaderboard)."""
        args = self._eval_args
        return [
            (task, int(args.seed) + 1000 * sample + index, ("eval", index, sample))
            for sample in range(int(args.eval_samples))
            for index, task in enumerate(self.eval_task_ids)
        ]

    def _eval_envs(self, n: int) -> list[Any]:
        """``n`` held-out environments (or workers, where the training ones are workers), built once and reused."""
        missing = n - len(self._eval_pool)
        if missing > 0 and not self._eval_in_workers:
            factory = self._held_out_env_factory()
            self._eval_pool += [factory() for _ in range(missing)]
        elif missing > 0:
            from agentgym_envs.workers import make_workers

            args = self._eval_args
            group = make_workers(
                args.env_id,
                missing,
                kind=self.env_worker_kind,
                max_processes=args.env_processes,
                **self.eval_env_kwargs(args),
            )
            self._eval_worker_groups.append(group)
            self._eval_pool += list(group)
        return self._eval_pool[:n]

    def close_eval_envs(self) -> None:
        """Close the held-out environments (a later evaluation builds them again)."""
        pool = getattr(self, "_eval_pool", [])
        groups = getattr(self, "_eval_worker_groups", [])
        with contextlib.ExitStack() as stack:  # close all of them even if one fails
            if groups:
                for group in groups:
                    stack.callback(group.close)
            else:
                for env in pool:
                    stack.callback(env.close)
            pool.clear()
            groups.clear()

    # ---- playing ----------------------------------------------------------------------------
    def eval_sampling(self, settings: SamplingSettings) -> SamplingSettings:
        """The training backend's settings with ``eval_temperature`` (0: greedy) and the run's seed."""
        temperature = float(self._eval_args.eval_temperature)
        if temperature > 0:
            return dataclasses.replace(settings, temperature=temperature, do_sample=True)
        return dataclasses.replace(settings, do_sample=False)

    @contextlib.contextmanager
    def _eval_backend(self) -> Iterator[Any]:
        """The trainer's generation backend with the evaluation's sampling settings for the duration."""
        trainer: Any = self
        if trainer.generation_backend is None:  # closed at the end of an earlier train()
            trainer.generation_backend = trainer.make_generation_backend()
        trainer.sync_vllm_weights()
        backend = trainer.generation_backend
        settings = getattr(backend, "settings", None)
        if isinstance(settings, SamplingSettings):
            backend.settings = self.eval_sampling(settings)
            try:
                yield backend
            finally:
                backend.settings = settings
            return
        # The trainer samples through generate_tokens (a subclass's sampler, or transformers' generate), which
        # knows no greedy switch: evaluate with the engine's transformers backend on the same model.
        from agentgym_envs.generation.transformers import TransformersBackend

        stop = trainer.chat_format.stop_ids
        yield TransformersBackend(
            trainer.model,
            trainer._tokenizer.pad_token_id,
            self.eval_sampling(SamplingSettings(stop_ids=stop)),
            model_context=trainer._generation_model,
        )

    def play_held_out(self) -> list[Episode]:
        """Play every held-out episode (``per_device_eval_batch_size`` at a time, split among processes)."""
        trainer: Any = self
        accelerator = trainer.accelerator
        episodes_todo = self.held_out_episodes()[accelerator.process_index :: accelerator.num_processes]
        config = trainer.rollout_config  # the engine's plain rollout: AEPO branches training groups only
        batch = max(1, int(self.args.per_device_eval_batch_size))
        was_training = self.model.training
        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        episodes: list[Episode] = []
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=devices), self._eval_backend() as backend:
                torch.manual_seed(int(self.args.seed))
                for start in range(0, len(episodes_todo), batch):
                    tasks = episodes_todo[start : start + batch]
                    episodes += run_episodes(self._eval_envs(len(tasks)), tasks, backend, trainer.chat_format, config)
        finally:
            self.model.train(was_training)
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            episodes = gather_object(episodes)
        return episodes

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Play the held-out tasks and log ``<prefix>/success_rate``, ``/return``, ``/steps``,
        ``/invalid_action_rate`` with their 95 % intervals (see the module docstring).

        The returned dict also holds ``<prefix>_<name>`` aliases for ``metric_for_best_model``.  Given an
        ``eval_dataset`` (rows with a ``task_index`` or ``task`` of the training split, as a ``train_dataset``),
        this is TRL's ``GRPOTrainer.evaluate`` of those rows instead (``eval_reward``, ``eval_loss``, ...).
        """
        trainer: Any = self
        if eval_dataset is not None:  # rows of training tasks: TRL's evaluation (eval_reward, eval_loss, ...)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
        start = time.perf_counter()
        metrics = held_out_metrics(self.play_held_out(), prefix=metric_key_prefix)
        metrics[f"{metric_key_prefix}/seconds"] = time.perf_counter() - start
        # Trainer.log, not GRPOTrainer.log: the latter would fold the pending training metrics into this record.
        Trainer.log(trainer, dict(metrics))
        trainer.control = trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics)
        aliases = {f"{metric_key_prefix}_{k.split('/', 1)[1]}": v for k, v in metrics.items()}
        return {**metrics, **aliases}


__all__ = [
    "HeldOutEvaluation",
    "held_out_env_kwargs",
    "held_out_metrics",
    "mean_interval",
    "select_tasks",
]
