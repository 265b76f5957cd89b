"""``TransformersBackend``: a local transformers model whose KV cache is carried across an episode's turns.

Each turn of a multi-turn episode extends the previous context: ``context + reply + environment
tokens``.  Instead of prefilling that whole history again, the backend keeps, per episode key, the KV
cache of the ids it has already seen (the context and the reply except its last id, which was sampled
but never fed).  The next request of that key is matched against them: the longest common prefix
comes from the cache, only the rest (the reply's last id and the environment's tokens) is prefilled.
A context that does not extend the cached ids (for example an action re-tokenised from text) reuses
the common prefix and prefills the remainder, so the result never depends on the cache.

Batching: every row's cached prefix is left-padded to the longest one, every row's new tokens to the
longest suffix; the padding in between is masked out and positions come from each row's own count,
so rows see exactly what a fresh forward over their own context sees.  Rows leave the batch when they
sample a stop id (:func:`~agentgym_envs.generation.sampling.decode`), and an episode's cache is
dropped by :meth:`TransformersBackend.release` when it ends.

Shared prefixes: the requests of one batch that have nothing cached yet (the opening turn) usually
share a long prefix (the system prompt, the tool schema) and, in a GRPO group, the whole prompt.  Rows
with identical contexts are prefilled once and their cache is copied; the longest prefix common to
the remaining fresh rows is prefilled once, alone, and every fresh row continues from it, so a batch
of ``G`` rollouts of one prompt prefills that prompt once instead of ``G`` times
(``share_prefixes=False`` turns this off; the sampled ids are those of separate prefills, up to
float rounding of the different batch shapes).

Models whose cache is not a plain per-layer key/value cache (sliding-window layers, state-space
layers) are served without carrying (a fresh prefill per turn), with the same results.

Example:
    >>> backend = TransformersBackend(model, pad_id=tok.pad_token_id,
    ...                               settings=SamplingSettings(stop_ids=(tok.eos_token_id,), seed=0))  # doctest: +SKIP
    >>> out = backend.generate([GenerationRequest("ep0", [5, 6, 7])], max_new_tokens=8)[0]         # doctest: +SKIP
    >>> out.ids, out.logprobs, out.entropies, out.finish_reason                                   # doctest: +SKIP
    >>> backend.release(["ep0"])                                                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from agentgym_envs.generation.base import GenerationOutput, GenerationRequest, SamplingSettings
from agentgym_envs.generation.sampling import decode, left_padded


@dataclass
class _Cached:
    """The token ids an episode's cache covers, and the cache itself (per layer ``(1, heads, len, dim)``)."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]


class TransformersBackend:
    """Samples with a transformers causal LM, carrying each episode's KV cache from turn to turn.

    Args:
        model: a ``*ForCausalLM`` (or PEFT model); used in eval mode under ``torch.no_grad``.
        pad_id: the padding id (any id works; padded positions are masked).
        settings: temperature, top-k/top-p, greedy, the stop ids and the seed of the generator.
        carry_cache: keep each episode's cache between turns (``False``: prefill every turn afresh).
        share_prefixes: prefill a batch's identical contexts once, and the prefix common to its fresh
            rows once (see the module docstring).
        model_context: a callable returning a context manager that yields the model to run (the trainer
            uses it to unwrap distributed wrappers for the duration of one ``generate``).

    Example:
        >>> from agentgym_envs.generation.base import SamplingSettings
        >>> TransformersBackend(None, pad_id=0, settings=SamplingSettings(temperature=0.0))
        Traceback (most recent call last):
        ...
        ValueError: temperature must be > 0 when sampling (use do_sample=False for greedy decoding)
    """

    def __init__(
        self,
        model: Any,
        pad_id: int,
        settings: SamplingSettings | None = None,
        carry_cache: bool = True,
        model_context: Callable[[], AbstractContextManager[Any]] | None = None,
        share_prefixes: bool = True,
    ):
        settings = settings if settings is not None else SamplingSettings()
        if settings.do_sample and settings.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling (use do_sample=False for greedy decoding)")
        self.model = model
        self.pad_id = int(pad_id)
        self.settings = settings
        self.carry_cache = carry_cache
        self.share_prefixes = share_prefixes
        self._model_context = model_context
        self._cache: dict[Hashable, _Cached] = {}
        self._generator: torch.Generator | None = None
        self._generator_device: str | None = None
        #: Tokens prefilled, tokens reused from carried caches, and tokens a row did not prefill because
        #: another row of its batch did (identical contexts, common prefixes), since construction.
        self.prefilled_tokens = 0
        self.reused_tokens = 0
        self.shared_tokens = 0

    # ---- the GenerationBackend protocol ---------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], max_new_tokens: int) -> list[GenerationOutput]:
        """Sample one reply per request (all requests in one batch)."""
        if not requests:
            return []
        if max_new_tokens < 1:
            return [GenerationOutput([], [], "length", entropies=[]) for _ in requests]
        if any(not r.context_ids for r in requests):
            raise ValueError("every request needs a non-empty context")
        context = self._model_context() if self._model_context is not None else contextlib.nullcontext(self.model)
        with context as model, torch.no_grad():
            return self._generate(model, requests, max_new_tokens)

    def release(self, keys: Iterable[Hashable]) -> None:
        """Drop the cached state of these episodes (unknown keys are ignored)."""
        for key in keys:
            self._cache.pop(key, None)

    def clear(self) -> None:
        """Drop every cached episode (for example after the model's weights changed)."""
        self._cache.clear()

    def close(self) -> None:
        self.clear()

    @property
    def cached_keys(self) -> list[Hashable]:
        """Keys whose cache is held."""
        return list(self._cache)

    # ---- internals ------------------------------------------------------------------------------
    def _rng(self, device: torch.device) -> torch.Generator | None:
        if self.settings.seed is None:
            return None
        if self._generator is None or self._generator_device != str(device):
            self._generator = torch.Generator(device=device).manual_seed(int(self.settings.seed))
            self._generator_device = str(device)
        return self._generator

    def _prefix(self, request: GenerationRequest) -> tuple[int, _Cached | None]:
        """How many leading ids of the request come from its key's cache (at least one id is left to feed)."""
        cached = self._cache.get(request.key) if self.carry_cache else None
        if cached is None:
            return 0, None
        ctx = request.context_ids
        limit = min(len(cached.ids), len(ctx) - 1)
        n = 0
        while n < limit and cached.ids[n] == ctx[n]:
            n += 1
        return n, cached

    def _shared_prefix(self, model: Any, contexts: Sequence[Sequence[int]]) -> _Cached | None:
        """The cache of the prefix common to ``contexts`` (at least one id of each left to feed), prefilled alone."""
        from transformers import DynamicCache

        limit = min(len(c) for c in contexts) - 1
        n = 0
        first = contexts[0]
        while n < limit and all(c[n] == first[n] for c in contexts[1:]):
            n += 1
        if n < 2:
            return None
        device = next(model.parameters()).device
        ids = torch.as_tensor([list(first[:n])], dtype=torch.long, device=device)
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        if not _plain_cache(out.past_key_values):
            return None
        self.prefilled_tokens += n
        return _Cached(list(first[:n]), [(layer.keys, layer.values) for layer in out.past_key_values.layers])

    def _generate(self, model: Any, requests: Sequence[GenerationRequest], max_new_tokens: int) -> list[GenerationOutput]:
        everyone = requests
        prefixes = [self._prefix(r) for r in requests]
        self.reused_tokens += sum(n for n, _ in prefixes)
        # Rows with nothing cached and the same context are prefilled once (row ``source[i]`` of the batch).
        source = list(range(len(requests)))
        if self.share_prefixes:
            first_of: dict[tuple[int, ...], int] = {}
            unique: list[int] = []
            for i, (request, (n, _)) in enumerate(zip(requests, prefixes, strict=True)):
                key = tuple(request.context_ids) if n == 0 else None
                if key is not None and key in first_of:
                    source[i] = first_of[key]
                    self.shared_tokens += len(request.context_ids)
                    continue
                if key is not None:
                    first_of[key] = len(unique)
                source[i] = len(unique)
                unique.append(i)
            fresh = [j for j, i in enumerate(unique) if prefixes[i][0] == 0]
            requests = [requests[i] for i in unique]
            prefixes = [prefixes[i] for i in unique]
            if len(fresh) > 1:
                shared = self._shared_prefix(model, [requests[j].context_ids for j in fresh])
                if shared is not None:
                    for j in fresh:
                        prefixes[j] = (len(shared.ids), shared)
                    self.shared_tokens += len(shared.ids) * (len(fresh) - 1)
        return self._prefill_and_decode(model, requests, prefixes, everyone, source, max_new_tokens)

    def _prefill_and_decode(
        self,
        model: Any,
        requests: Sequence[GenerationRequest],
        prefixes: list[tuple[int, _Cached | None]],
        everyone: Sequence[GenerationRequest],
        source: list[int],
        max_new_tokens: int,
    ) -> list[GenerationOutput]:
        """Prefill ``requests`` after their cached ``prefixes``, then sample for ``everyone`` (row i from ``source[i]``)."""
        from transformers import DynamicCache

        device = next(model.parameters()).device
        lengths = [p for p, _ in prefixes]
        width_past = max(lengths)
        suffixes = [r.context_ids[p:] for r, p in zip(requests, lengths, strict=True)]
        input_ids, suffix_mask = left_padded(suffixes, self.pad_id, device)
        # Positions continue each row's own count: cached ids first, then the new ones.
        offsets = torch.as_tensor(lengths, device=device)[:, None]
        positions = ((suffix_mask.cumsum(-1) - 1).clamp(min=0) + offsets) * suffix_mask
        if width_past:
            past_mask = torch.zeros((len(requests), width_past), dtype=torch.long, device=device)
            layers = []
            template = next(c for _, c in prefixes if c is not None).layers
            for layer_index, (k0, v0) in enumerate(template):
                keys = k0.new_zeros((len(requests), k0.size(1), width_past, k0.size(3)))
                values = v0.new_zeros((len(requests), v0.size(1), width_past, v0.size(3)))
                for row, (n, cached) in enumerate(prefixes):
                    if n:
                        k, v = cached.layers[layer_index]  # type: ignore[union-attr]
                        keys[row, :, width_past - n :] = k[0, :, :n]
                        values[row, :, width_past - n :] = v[0, :, :n]
                layers.append((keys, values))
            for row, n in enumerate(lengths):
                if n:
                    past_mask[row, width_past - n :] = 1
            cache = DynamicCache(ddp_cache_data=layers, config=model.config)
            attention = torch.cat([past_mask, suffix_mask], dim=1)
        else:
            cache = DynamicCache(config=model.config)
            attention = suffix_mask
        self.prefilled_tokens += sum(len(s) for s in suffixes)
        out = model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
            use_cache=True, logits_to_keep=1,
        )
        if out.past_key_values is None:
            raise RuntimeError("the model returned no KV cache (is gradient checkpointing on during sampling?)")
        cache = out.past_key_values
        logits = out.logits[:, -1]
        if len(everyone) != len(requests):  # copy the rows that identical contexts share
            rows = torch.as_tensor(source, device=device)
            cache.batch_select_indices(rows)
            logits, attention = logits[rows], attention[rows]
        requests = everyone
        carry = self.carry_cache and _plain_cache(cache)
        if not carry:
            self.release([r.key for r in requests])
        s = self.settings
        next_pos = torch.as_tensor([len(r.context_ids) for r in requests], device=device)
        decoded = decode(
            model, cache, logits, attention, next_pos, max_new_tokens, s.stop_ids,
            temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, do_sample=s.do_sample,
            generator=self._rng(device), keep_cache=carry,
        )
        stops = set(s.stop_ids)
        outputs = []
        for row, request in enumerate(requests):
            ids = decoded.ids[row]
            if carry and decoded.row_cache[row] is not None:
                self._cache[request.key] = _Cached(list(request.context_ids) + ids[:-1], decoded.row_cache[row])
            reason = "stop" if ids and ids[-1] in stops else "length"
            outputs.append(
                GenerationOutput(
                    ids=ids, logprobs=decoded.logprobs[row], finish_reason=reason, entropies=decoded.entropies[row]
                )
            )
        return outputs


def _plain_cache(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a full (non-sliding) key/value layer that can be carried."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.keys is not None for layer in layers)


__all__ = ["TransformersBackend"]
