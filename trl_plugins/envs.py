"""The trainer's environments and tasks: the pool its rollouts play in and the task dataset TRL samples from.

:class:`EnvPool` holds one environment (or environment worker) per episode of a batch, built on first use, reused
across batches and closed at the end of training (:class:`CloseEnvsCallback`); :class:`TrainTasks` is the train
split's task list as the dataset TRL's sampler repeats ``num_generations`` times, and turns a dataset row back into
``(task, seed, group key)``.

Example:
    >>> tasks = TrainTasks(["a", "b"])
    >>> list(tasks.dataset(None, seed=0)["task_index"]), tasks.resolve({"task_index": 1, "seed": 7})
    ([0, 1], ('b', 7, (1, 7)))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from datasets import Dataset
from transformers import TrainerCallback

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.registry import make_env
from trl_plugins.config import AgentGRPOConfig

__all__ = ["CloseEnvsCallback", "EnvPool", "TrainTasks", "default_env_factory", "env_make_kwargs", "env_worker_kind"]


def env_make_kwargs(args: AgentGRPOConfig) -> dict[str, Any]:
    """The ``make_env`` keyword arguments of a training environment: the train split and the reward wrappers.

    Example:
        >>> env_make_kwargs(AgentGRPOConfig(output_dir="/tmp/x", env_kwargs={"split": "test"}))["split"]
        'train'
    """
    kwargs = {k: v for k, v in args.env_kwargs.items() if k != "split"}
    if "seed_range" in kwargs and kwargs["seed_range"] is not None:
        kwargs["seed_range"] = tuple(kwargs["seed_range"])
    return dict(
        reward=args.reward,
        step_penalty=args.step_penalty,
        format_penalty=args.format_penalty,
        split="train",
        **kwargs,
    )


def default_env_factory(args: AgentGRPOConfig, make_kwargs: dict[str, Any] | None = None) -> Callable[[], gym.Env]:
    """The default environment factory: the train split with the configured reward wrappers (or ``make_kwargs``,
    e.g. the held-out split's).

    With ``args.env_urls`` each call connects to the next server (round-robin) as ``agentgym/Remote-v0``.

    Example:
        >>> make = default_env_factory(AgentGRPOConfig(output_dir="/tmp/x"))
        >>> make().close()
    """
    kwargs = env_make_kwargs(args) if make_kwargs is None else make_kwargs
    if args.env_urls:
        urls = itertools.cycle(args.env_urls)
        return lambda: gym.make("agentgym/Remote-v0", url=next(urls), env_id=args.env_id, **kwargs)
    return lambda: make_env(args.env_id, **kwargs)


def env_worker_kind(args: AgentGRPOConfig, custom_factory: bool) -> str:
    """Where the environments step: ``args.env_workers``, resolved for ``"auto"`` and forced in-process where they
    are built by a callable here, played on a server, or copied by AEPO's branching.

    Example:
        >>> env_worker_kind(AgentGRPOConfig(output_dir="/tmp/x", env_workers="process"), custom_factory=True)
        'inprocess'
    """
    from agentgym_envs.workers import default_worker_kind

    if custom_factory or args.env_urls or args.aepo.branching is not None:
        return "inprocess"
    return default_worker_kind(args.env_id) if args.env_workers == "auto" else args.env_workers


class EnvPool:
    """``n`` environments (or environment workers) on demand, built once and reused from batch to batch.

    Args:
        factory: builds one in-process environment.
        worker_kind: ``"inprocess"`` (``factory`` builds them) or a worker kind of
            :func:`agentgym_envs.engine.make_workers` (``"process"``, ``"ray"``), which builds ``env_id`` with
            ``make_kwargs`` in workers, ``max_processes`` at most.
        probe: an environment already built (the trainer's probe), reused in-process and closed otherwise.
        timeout_s: the workers' deadline of one reset or step (``None``: the family's; see ``make_workers``).

    Example:
        >>> args = AgentGRPOConfig(output_dir="/tmp/x")
        >>> pool = EnvPool(default_env_factory(args), "inprocess", args.env_id)
        >>> len(pool.take(2)), len(pool.take(1))
        (2, 1)
        >>> pool.close(); pool.envs
        []
    """

    def __init__(
        self,
        factory: Callable[[], gym.Env],
        worker_kind: str,
        env_id: str,
        make_kwargs: dict[str, Any] | None = None,
        max_processes: int | None = None,
        probe: gym.Env | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.factory = factory
        self.worker_kind = worker_kind
        self.env_id = env_id
        self.make_kwargs = dict(make_kwargs or {})
        self.max_processes = max_processes
        self.timeout_s = timeout_s
        #: The environments (or workers) built so far, reused in order.
        self.envs: list[Any] = []
        #: Worker groups built so far (each closes its workers' environments and stops their processes).
        self.worker_groups: list[Any] = []
        if probe is not None and worker_kind == "inprocess":
            self.envs.append(probe)
        elif probe is not None:  # the probe only told the tasks and the prompt; workers play
            probe.close()

    def take(self, n: int) -> list[Any]:
        """The first ``n`` environments, building the missing ones."""
        missing = n - len(self.envs)
        if missing > 0 and self.worker_kind == "inprocess":
            self.envs += [self.factory() for _ in range(missing)]
        elif missing > 0:
            from agentgym_envs.workers import make_workers

            group = make_workers(
                self.env_id, missing, kind=self.worker_kind, max_processes=self.max_processes,
                timeout_s=self.timeout_s, **self.make_kwargs,
            )
            self.worker_groups.append(group)
            self.envs += list(group)
        return self.envs[:n]

    def close(self) -> None:
        """Close every environment (simulators, JVMs, browsers) and worker; a later :meth:`take` builds anew."""
        if self.worker_groups:
            for group in self.worker_groups:
                group.close()
        else:
            for env in self.envs:
                env.close()
        self.envs.clear()
        self.worker_groups.clear()


class TrainTasks:
    """The train split's tasks: the dataset TRL samples rows from, and each row's task, seed and group key.

    Args:
        task_ids: the tasks, in the order ``task_index`` counts them.

    Example:
        >>> TrainTasks(["a", "b"]).resolve({"task": "b"})
        ('b', None, ('b', None))
    """

    def __init__(self, task_ids: list[Any]) -> None:
        self.task_ids = list(task_ids)

    def dataset(self, dataset: Dataset | None, seed: int) -> Dataset:
        """``dataset`` checked (a ``task_index`` or ``task`` column), or one row per task with a seed each."""
        if dataset is None:
            n = len(self.task_ids)
            return Dataset.from_dict(
                {
                    "prompt": [str(t) for t in self.task_ids],
                    "task_index": list(range(n)),
                    "seed": [int(seed) * 100_003 + i for i in range(n)],
                }
            )
        columns = set(dataset.column_names)
        if not columns & {"task_index", "task"}:
            raise ValueError("a train_dataset for AgentGRPOTrainer needs a 'task_index' or a 'task' column")
        if "prompt" not in columns:
            dataset = dataset.add_column("prompt", [""] * len(dataset))
        return dataset

    def resolve(self, row: dict[str, Any]) -> tuple[Any, int | None, Any]:
        """``(task, seed, key)`` of a dataset row; episodes with the same key form a group."""
        if "task_index" in row and row["task_index"] is not None:
            index = int(row["task_index"])
            task = self.task_ids[index]
        else:
            task = row["task"]
            index = task
        seed = row.get("seed")
        seed = None if seed is None else int(seed)
        return task, seed, (index, seed)


class CloseEnvsCallback(TrainerCallback):
    """Closes a trainer's environments (and its vLLM engine) when ``train()`` ends: ``close`` is called then.

    Example:
        >>> closed = []
        >>> CloseEnvsCallback(lambda: closed.append(True)).on_train_end(None, None, None); closed
        [True]
    """

    def __init__(self, close: Callable[[], None]) -> None:
        self.close = close

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()
