"""Asynchronous rollouts: the next generation batches are played in a background thread while the optimizer steps.

A synchronous step plays its episodes, then trains on them: the learner idles while environments step (and while
the slowest episode of the batch, the straggler, finishes), and the environments idle while the learner trains.
With ``AgentGRPOConfig(async_rollouts=True, max_staleness=k)`` a producer thread (:class:`AsyncRollouts`) plays
generation batch ``b + 1`` (and up to ``k`` optimizer steps further ahead) while the learner trains on batch ``b``:

* **the generator's policy** (:class:`ModelCopyGenerator` for the transformers backend: a copy of the policy with
  its own :class:`~agentgym_envs.generation.transformers.TransformersBackend`; :class:`EngineGenerator` for vLLM:
  the trainer's engine) receives the policy's weights after every optimizer step (:meth:`AsyncRollouts.publish`,
  called by :class:`AsyncRolloutsCallback`); it loads the newest weights when it starts a batch;
* **versions**: the policy version is the trainer's ``global_step`` (optimizer steps taken); each episode records
  the version that played it in ``info["policy_version"]``.  The producer starts batch ``b`` only when the newest
  weights are at most ``max_staleness`` steps older than the policy that will train on it (or when the learner is
  waiting for it), and a batch that is older than that when the learner takes it is dropped and counted
  (``async/dropped_episodes``);
* **the correction**: the batch carries the sampler's log-probs, and the loss multiplies each token's loss by TRL's
  truncated importance-sampling ratio of the trainer's log-probs to the sampler's (the
  ``vllm_importance_sampling_*`` settings, as for vLLM), so the update corrects for the older behaviour policy;
* ``max_staleness=0`` is the synchronous trainer: a batch is played only when the learner asks for it, with the
  learner's current weights, so the batches, the losses and the random numbers are the synchronous ones;
* a crash in a background episode truncates that episode (``truncation_reason="crash"``, as in a synchronous
  rollout); an exception of the producer itself is raised in the learner (:class:`BackgroundRolloutError`) at its
  next batch, never a hung trainer; :meth:`AsyncRollouts.close` stops the thread (the trainer's ``close_envs``
  calls it at the end of ``train()``, before the environments close).
* one process only: with several (``accelerate launch``) each producer would drop stale batches on its own timing,
  so the trainer refuses it (:func:`check_one_process`).  The environments, worker processes included, are built in
  the learner's thread before the producer starts.

The tasks come from a second iterator over the trainer's train sampler (:func:`generation_batches`: the same
``RepeatSampler`` and seed, so the same tasks in the same order as TRL's dataloader, which the learner then
ignores); a dropped batch's tasks are not played again.

Example:
    >>> from trl_plugins import AgentGRPOConfig
    >>> args = AgentGRPOConfig(output_dir="/tmp/x", async_rollouts=True, max_staleness=1)
    >>> AgentGRPOTrainer(model, args=args).train()   # doctest: +SKIP
    >>> trainer.last_episodes[0].info["policy_version"]   # doctest: +SKIP
    3
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

from agentgym_envs.engine import Episode, RolloutStats
from trl_plugins.errors import TrainerConfigError, TrainerError

__all__ = [
    "AsyncRollouts",
    "AsyncRolloutsCallback",
    "BackgroundRolloutError",
    "EngineGenerator",
    "ModelCopyGenerator",
    "RolloutBatch",
    "WeightSnapshot",
    "async_rollout_batch",
    "check_one_process",
    "detached_copy",
    "generation_batches",
    "start_async_rollouts",
]

#: Seconds the learner waits on the queue between checks that the producer is alive.
_POLL_S = 0.5


class BackgroundRolloutError(TrainerError, RuntimeError):
    """The background rollout thread failed (its exception is the ``__cause__``) or stopped."""


class RolloutsStopped(Exception):
    """Raised inside the producer's rollout when :meth:`AsyncRollouts.close` asks it to stop."""


@dataclass
class WeightSnapshot:
    """The policy's weights after ``version`` optimizer steps: ``(name, tensor)`` pairs, copies the learner
    no longer touches."""

    version: int
    tensors: list[tuple[str, torch.Tensor]]


@dataclass
class RolloutBatch:
    """One generation batch played in the background: its dataset rows, episodes and stats, and the policy version
    (optimizer steps) whose weights played it (``error``: the producer's exception instead)."""

    index: int
    rows: list[dict[str, Any]]
    episodes: list[Episode] = field(default_factory=list)
    stats: RolloutStats = field(default_factory=RolloutStats)
    version: int = -1
    error: BaseException | None = None


class ModelCopyGenerator:
    """The transformers backend's generator: a frozen copy of the policy and a backend on it.

    Args:
        model: the copy (already made: the learner's model never runs in the producer thread).
        backend_factory: builds the :class:`~agentgym_envs.generation.transformers.TransformersBackend` on it.
        version: the optimizer steps behind the copy's weights.

    Example:
        >>> import torch
        >>> gen = ModelCopyGenerator(torch.nn.Linear(2, 2), lambda m: None, version=0)
        >>> gen.load(WeightSnapshot(3, [("bias", torch.ones(2))])); gen.version, gen.model.bias.tolist()
        (3, [1.0, 1.0])
    """

    def __init__(self, model: torch.nn.Module, backend_factory: Callable[[torch.nn.Module], Any], version: int):
        self.model = model.eval().requires_grad_(False)
        self.backend = backend_factory(self.model)
        self.version = version

    def load(self, snapshot: WeightSnapshot) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in snapshot.tensors:
                params[name].copy_(tensor)
        if hasattr(self.backend, "clear"):
            self.backend.clear()  # cached keys and values were computed with the old weights
        self.version = snapshot.version

    def invalidate(self) -> None:
        """Nothing else touches the copy."""

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.backend = self.model = None  # type: ignore[assignment]


class EngineGenerator:
    """The vLLM backend's generator: the trainer's engine, loaded with a snapshot's weights when one is newer
    (``load_weights_from`` for ``trl vllm-serve``, ``load_weights`` in process).

    Example:
        >>> gen = EngineGenerator(backend, version=-1)   # doctest: +SKIP
    """

    def __init__(self, backend: Any, version: int = -1):
        self.backend = backend
        self.version = version

    def load(self, snapshot: WeightSnapshot) -> None:
        loader = getattr(self.backend, "load_weights_from", None)
        if loader is not None:
            loader(lambda: iter(snapshot.tensors))
        else:
            self.backend.load_weights(iter(snapshot.tensors))
        self.version = snapshot.version

    def invalidate(self) -> None:
        """Someone else (the held-out evaluation) pushed weights into the engine: reload before the next batch."""
        self.version = -1

    def close(self) -> None:
        """The engine is the trainer's (it closes it)."""


class _StoppableBackend:
    """A generation backend that raises :class:`RolloutsStopped` once ``stop`` is set (the rollout then ends)."""

    def __init__(self, backend: Any, stop: threading.Event):
        self._backend, self._stop = backend, stop

    def generate(self, requests: Sequence[Any], max_new_tokens: int) -> list[Any]:
        if self._stop.is_set():
            raise RolloutsStopped
        return self._backend.generate(requests, max_new_tokens)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class AsyncRollouts:
    """A producer thread that plays generation batches ahead of the learner, with bounded staleness.

    Args:
        play: plays one batch's dataset rows with a generation backend, returning ``(episodes, stats)``.
        rows: the generation batches' dataset rows, in order (:func:`generation_batches`).
        generator: the policy the producer samples with (:class:`ModelCopyGenerator`, :class:`EngineGenerator`).
        snapshot: the learner's current weights as a :class:`WeightSnapshot`'s tensors (called by the learner).
        max_staleness: optimizer steps a batch's policy may lag the policy that trains on it.
        steps_per_batch: optimizer steps the learner takes per generation batch (may be a fraction).
        first_version: the learner's optimizer steps when the first batch is taken.

    Example:
        >>> engine = AsyncRollouts(play, rows, generator, snapshot, max_staleness=1)  # doctest: +SKIP
        >>> engine.start(); batch = engine.next_batch(version=0)                      # doctest: +SKIP
        >>> engine.close()                                                            # doctest: +SKIP
    """

    def __init__(
        self,
        play: Callable[[list[dict[str, Any]], Any], tuple[list[Episode], RolloutStats]],
        rows: Iterator[list[dict[str, Any]]],
        generator: Any,
        snapshot: Callable[[], list[tuple[str, torch.Tensor]]],
        max_staleness: int,
        steps_per_batch: float = 1.0,
        first_version: int = 0,
    ):
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.play, self.rows, self.generator, self.snapshot = play, rows, generator, snapshot
        self.max_staleness = int(max_staleness)
        self.steps_per_batch = float(steps_per_batch)
        self.first_version = int(first_version)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._play_lock = threading.Lock()  # held while a batch plays; paused() takes it
        self._queue: queue.Queue[RolloutBatch] = queue.Queue()
        self._newest: WeightSnapshot | None = None
        self._taken = 0  # batches the learner took from the queue (dropped ones included)
        self._waiting = False  # the learner waits for batch ``_taken``
        self._thread: threading.Thread | None = None
        #: Episodes dropped for staleness so far, and the seconds the learner waited for batches.
        self.dropped_episodes = 0
        self.wait_seconds = 0.0

    # ---- the learner's side ----------------------------------------------------------------
    def start(self) -> None:
        """Start the producer thread."""
        self._thread = threading.Thread(target=self._produce, name="agentgym-async-rollouts", daemon=True)
        self._thread.start()

    def publish(self, version: int) -> None:
        """Give the producer the learner's weights after ``version`` optimizer steps (no-op if not newer)."""
        with self._cond:
            if self._newest is not None and self._newest.version >= version:
                return
        snapshot = WeightSnapshot(int(version), self.snapshot())
        with self._cond:
            self._newest = snapshot
            self._cond.notify_all()

    def next_batch(self, version: int) -> tuple[RolloutBatch, int]:
        """The next batch fresh enough for a learner at ``version``, and its staleness (stale ones are dropped).

        Raises :class:`BackgroundRolloutError` if the producer failed or stopped.
        """
        start = time.perf_counter()
        self.publish(version)
        try:
            while True:
                with self._cond:
                    self._waiting = True
                    self._cond.notify_all()
                batch = self._get()
                staleness = int(version) - batch.version
                if staleness <= self.max_staleness:
                    return batch, staleness
                self.dropped_episodes += len(batch.episodes)
        finally:
            with self._cond:
                self._waiting = False
            self.wait_seconds += time.perf_counter() - start

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No batch plays inside (the current one finishes first): for the held-out evaluation, which may use
        the same engine; the generator reloads its weights afterwards if someone else changed them."""
        with self._play_lock:
            try:
                yield
            finally:
                self.generator.invalidate()

    @property
    def queued(self) -> int:
        """Batches played and not yet taken."""
        return self._queue.qsize()

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the producer (a batch in progress ends at its next generation call) and release the generator."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise BackgroundRolloutError(f"the background rollout thread did not stop within {timeout_s} s")
            self._thread = None
        self.generator.close()

    def _get(self) -> RolloutBatch:
        while True:
            try:
                batch = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    raise BackgroundRolloutError("the background rollout thread has stopped") from None
                continue
            with self._cond:  # in one step, so that the producer never reads the learner as waiting for the next
                self._taken += 1
                self._waiting = False
            if batch.error is not None:
                raise BackgroundRolloutError(
                    f"background rollout of batch {batch.index} failed: {type(batch.error).__name__}: {batch.error}"
                ) from batch.error
            return batch

    # ---- the producer's side ---------------------------------------------------------------
    def _expected_version(self, index: int) -> int:
        """The learner's optimizer steps when it takes batch ``index`` (if no batch is dropped before it)."""
        return self.first_version + int(index * self.steps_per_batch + 1e-9)

    def _may_start(self, index: int) -> bool:
        if self._waiting and index <= self._taken:  # the learner waits for it: nothing to gain by holding back
            return True
        if self.max_staleness == 0:  # played only when asked for: the synchronous trainer's order, exactly
            return False
        newest = -1 if self._newest is None else self._newest.version
        return newest >= self._expected_version(index) - self.max_staleness

    def _produce(self) -> None:
        for index in itertools.count():
            with self._cond:
                while not self._stop.is_set() and not self._may_start(index):
                    self._cond.wait()
                if self._stop.is_set():
                    return
                newest = self._newest
            batch = RolloutBatch(index=index, rows=[])
            try:
                with self._play_lock:
                    if newest is not None and newest.version != self.generator.version:
                        self.generator.load(newest)
                    batch.version = self.generator.version
                    batch.rows = next(self.rows)
                    backend = _StoppableBackend(self.generator.backend, self._stop)
                    batch.episodes, batch.stats = self.play(batch.rows, backend)
                for episode in batch.episodes:
                    episode.info["policy_version"] = batch.version
            except RolloutsStopped:
                return
            except BaseException as exc:  # handed to the learner, which raises it: never a silent hang
                batch.error = exc
                self._queue.put(batch)
                return
            self._queue.put(batch)


class AsyncRolloutsCallback(TrainerCallback):
    """Publishes the policy's weights to the trainer's :class:`AsyncRollouts` after every optimizer step.

    Example:
        >>> trainer.add_callback(AsyncRolloutsCallback(lambda: trainer.async_rollouts))  # doctest: +SKIP
    """

    def __init__(self, engine: Callable[[], AsyncRollouts | None]):
        self.engine = engine

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        engine = self.engine()
        if engine is not None and engine.max_staleness > 0:  # at 0 the learner publishes when it asks for a batch
            engine.publish(state.global_step)


def detached_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` that runs its own weights only.

    A ``forward`` patched onto a module instance (TRL's fused LM head, accelerate's hooks) is a closure over the
    original module's forward, which ``deepcopy`` does not rebind: the copy would run the model being trained.
    The copy drops such patches and runs its class's ``forward``.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2); layer.forward = lambda x: layer.weight.sum()
        >>> twin = detached_copy(layer); "forward" in vars(twin), twin(torch.ones(2)).shape
        (False, torch.Size([2]))
    """
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if "forward" in vars(module):
            del module.forward
    return twin


def check_one_process(async_rollouts: bool, num_processes: int) -> None:
    """Refuse ``async_rollouts`` in a run of several processes (``accelerate launch --num_processes N``).

    Each process's producer decides alone, from its own timing, which batches are too stale to keep, so after a
    drop the processes would train on slices of different generation batches, and the global group statistics
    (:mod:`trl_plugins.distributed`) would mix groups of different tasks.

    Raises:
        TrainerConfigError: ``async_rollouts`` with ``num_processes > 1``.

    Example:
        >>> check_one_process(True, 1); check_one_process(False, 2)
        >>> try:
        ...     check_one_process(True, 2)
        ... except TrainerConfigError as exc:
        ...     print(str(exc)[:45])
        async_rollouts=True runs in one process, not 2
    """
    if async_rollouts and num_processes > 1:
        raise TrainerConfigError(
            f"async_rollouts=True runs in one process, not {num_processes}: each process would drop stale batches "
            "on its own timing and the processes would train on different generation batches; set "
            "async_rollouts=False for multi-process training"
        )


def rows_per_generation_batch(trainer: Any) -> int:
    """The dataset rows (episodes) of one generation batch of this process."""
    return int(trainer._train_batch_size * trainer.args.steps_per_generation)


def generation_batches(trainer: Any) -> Iterator[list[dict[str, Any]]]:
    """The dataset rows of each generation batch this process plays, in the order TRL's train dataloader gives them.

    The trainer's own sampler (``RepeatSampler``, same seed) in a plain ``DataLoader`` (accelerate's prepared one
    keeps shared state about the dataloader in use): each generation batch comes ``steps_per_generation *
    num_iterations`` times in a row, and with several processes process ``r`` takes every ``num_processes``-th
    batch from the ``r``-th, as accelerate's batch sharding does.
    """
    from torch.utils.data import DataLoader

    args = trainer.args
    loader = DataLoader(
        trainer.train_dataset,
        batch_size=rows_per_generation_batch(trainer),
        sampler=trainer._get_train_sampler(),
        collate_fn=trainer.data_collator,
        generator=torch.Generator(),  # its base seed is drawn from here, not from the global generator the
        # rollouts sample from (at max_staleness=0 the random numbers are the synchronous trainer's)
    )

    def epochs() -> Iterator[list[dict[str, Any]]]:
        while True:
            yield from loader

    accelerator = trainer.accelerator
    mine = itertools.islice(epochs(), accelerator.process_index, None, accelerator.num_processes)
    return itertools.islice(mine, 0, None, args.steps_per_generation * trainer.num_iterations)


def start_async_rollouts(trainer: Any) -> AsyncRollouts:
    """Build and start the :class:`AsyncRollouts` of an :class:`~trl_plugins.trainer.AgentGRPOTrainer`."""
    args = trainer.args
    if trainer.generation_backend is None:  # closed at the end of an earlier train()
        trainer.generation_backend = trainer.make_generation_backend()
    version = int(trainer.state.global_step)
    if trainer.use_vllm:
        from agentgym_envs.generation.vllm import policy_weights

        generator: Any = EngineGenerator(trainer.generation_backend)

        def snapshot() -> list[tuple[str, torch.Tensor]]:
            with trainer._generation_model() as model:
                return [(n, t.detach().clone()) for n, t in policy_weights(model, exclude=trainer.vllm_weight_exclude)]

    else:
        from agentgym_envs.generation.transformers import TransformersBackend

        own = trainer.generation_backend
        if not isinstance(own, TransformersBackend):
            raise TrainerConfigError(
                "async_rollouts needs a sampler that reports log-probabilities (the 'kv' sampler without "
                "repetition_penalty, min_p, generation_kwargs or cache_implementation, and no generate_tokens "
                "override) or generation_backend='vllm'"
            )
        # At max_staleness=0 the copy samples from the global generator, as the synchronous trainer does; ahead of
        # the learner it has its own, so that what the learner draws meanwhile does not change the rollouts.
        settings = own.settings if args.max_staleness == 0 else dataclasses.replace(own.settings, seed=int(args.seed))
        with trainer._generation_model() as model:
            model_copy = detached_copy(model)
        generator = ModelCopyGenerator(
            model_copy,
            lambda m: TransformersBackend(m, own.pad_id, settings, carry_cache=own.carry_cache),
            version=version,
        )

        def snapshot() -> list[tuple[str, torch.Tensor]]:
            with trainer._generation_model() as model:
                return [(n, p.detach().clone()) for n, p in model.named_parameters() if p.requires_grad]

    accumulation = max(1, int(args.gradient_accumulation_steps))
    engine = AsyncRollouts(
        play=lambda rows, backend: trainer._play_episodes([trainer.tasks.resolve(r) for r in rows], backend),
        rows=generation_batches(trainer),
        generator=generator,
        snapshot=snapshot,
        max_staleness=args.max_staleness,
        steps_per_batch=args.steps_per_generation * trainer.num_iterations / accumulation,
        first_version=version,
    )
    # The environments (worker processes included) are built here, in the learner's thread, before the producer
    # starts: worker processes are never started from the background thread, and a failure to build them is
    # raised by train() itself.
    trainer.env_pool.take(rows_per_generation_batch(trainer))
    engine.start()
    return engine


def async_rollout_batch(trainer: Any) -> tuple[list[Episode], RolloutStats]:
    """The trainer's next background batch (starting the producer on first use), with the ``async/*`` metrics:
    ``staleness`` (optimizer steps between the batch's policy and the learner's), ``dropped_episodes`` (so far),
    ``wait_seconds`` (the learner's wait for this batch) and ``queued_batches``."""
    if trainer.async_rollouts is None:
        trainer.async_rollouts = start_async_rollouts(trainer)
    engine: AsyncRollouts = trainer.async_rollouts
    waited = engine.wait_seconds
    batch, staleness = engine.next_batch(int(trainer.state.global_step))
    metrics = trainer._metrics["train"]
    metrics["async/staleness"].append(float(staleness))
    metrics["async/dropped_episodes"].append(float(engine.dropped_episodes))
    metrics["async/wait_seconds"].append(engine.wait_seconds - waited)
    metrics["async/queued_batches"].append(float(engine.queued))
    return batch.episodes, batch.stats
