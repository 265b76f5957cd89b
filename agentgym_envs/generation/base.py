"""The seam between the rollout engine and a model: sampling settings, requests, outputs, backends.

A backend turns token-id contexts into sampled token ids. The engine never re-tokenises text: a
request carries the whole context as ids, and the output keeps the sampled ids verbatim (with their
log-probabilities where the backend can give them), so the trainer's sequences are exactly what
was sampled. ``key`` names the episode a request belongs to, so a backend may keep that episode's
cached prefix (KV cache) between turns; :meth:`GenerationBackend.release` says an episode is over.

Example:
    >>> settings = SamplingSettings(temperature=0.7, stop_ids=(2,))
    >>> request = GenerationRequest(key=("episode", 0), context_ids=[1, 9, 4])
    >>> out = GenerationOutput(ids=[17, 2], logprobs=[-0.3, -0.1], finish_reason="stop")
    >>> out.ids[-1] in settings.stop_ids
    True
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class SamplingSettings:
    """How a backend samples: temperature, nucleus/top-k filtering, greedy, end-of-turn ids, seed.

    ``stop_ids`` is the one set of end-of-turn ids used everywhere (sampler, chat format,
    bookkeeping): a reply ends at the first of them, which is kept as its last id.

    Example:
        >>> SamplingSettings(do_sample=False, stop_ids=(2,)).do_sample
        False
        >>> SamplingSettings(temperature=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: temperature must be > 0 (use do_sample=False for greedy decoding), got -1.0
    """

    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    do_sample: bool = True  # False = greedy
    stop_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0 (use do_sample=False for greedy decoding), got {self.temperature}"
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0:  # TRL's and transformers' spelling of "no top-k filtering"
            object.__setattr__(self, "top_k", None)
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (0 or None: off), got {self.top_k}")
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))


@dataclass
class GenerationRequest:
    """One reply to generate: the episode's identity and its whole context as token ids.

    Example:
        >>> GenerationRequest(key=3, context_ids=[1, 2, 3]).context_ids
        [1, 2, 3]
    """

    key: Hashable  # the episode's identity; a backend may reuse that episode's cached prefix
    context_ids: list[int]  # the whole context as token ids (never re-tokenised text)


@dataclass
class GenerationOutput:
    """A sampled reply: ids verbatim, their log-probabilities (and entropies), and why it ended.

    ``entropies`` (optional): the full-vocabulary entropy of the distribution each id was drawn from, at the
    sampling temperature and before top-k/top-p filtering; ``None`` when the backend does not give them (only
    :class:`~agentgym_envs.generation.transformers.TransformersBackend` does).

    Example:
        >>> GenerationOutput(ids=[5, 6], logprobs=None, finish_reason="length").finish_reason
        'length'
        >>> GenerationOutput(ids=[5], logprobs=[-0.2], finish_reason="length", entropies=[1.3]).entropies
        [1.3]
    """

    ids: list[int]  # sampled ids, verbatim (ends with a stop id unless it hit max_new_tokens)
    logprobs: list[float] | None  # log-prob of each sampled id (None if the backend cannot give them)
    finish_reason: str  # "stop" | "length"
    entropies: list[float] | None = None  # entropy at each sampled id's position (None if not given)


@runtime_checkable
class GenerationBackend(Protocol):
    """What the rollout engine needs from a model.

    Example:
        >>> def play(backend: GenerationBackend, contexts: list[list[int]]) -> list[list[int]]:
        ...     requests = [GenerationRequest(key=i, context_ids=c) for i, c in enumerate(contexts)]
        ...     outputs = backend.generate(requests, max_new_tokens=32)
        ...     backend.release(range(len(contexts)))  # these episodes are over
        ...     return [o.ids for o in outputs]
    """

    settings: SamplingSettings

    def generate(self, requests: Sequence[GenerationRequest], max_new_tokens: int) -> list[GenerationOutput]:
        """One reply per request, in order, each at most ``max_new_tokens`` long."""
        ...

    def release(self, keys: Iterable[Hashable]) -> None:
        """Finished episodes leave: free whatever is cached for them."""
        ...

    def close(self) -> None:
        """Free the model and any processes or connections (idempotent)."""
        ...


@runtime_checkable
class SupportsWeightSync(Protocol):
    """A backend that serves a policy being trained: the trainer pushes new weights after each optimizer step.

    Example:
        >>> def sync(backend: SupportsWeightSync, model) -> None:
        ...     backend.load_weights(model.named_parameters())
    """

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the served model's weights with ``named_tensors`` (names as in the model's state dict)."""
        ...
