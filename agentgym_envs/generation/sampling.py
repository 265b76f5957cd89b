"""A lean batched sampler with a KV cache that drops finished sequences as it goes.

``transformers``' ``generate`` keeps computing every row of a batch until the last one stops;
in agent rollouts a few long replies then hold up many short ones.  :func:`sample_batch`
removes a row from the batch (and from the KV cache) as soon as it samples a stop id,
computes logits only for the last position, and returns the sampled ids verbatim.
:func:`decode` also records, per sampled id, its log-probability and the entropy of the distribution it was
drawn from (both at the temperature, before top-k/top-p filtering: the quantities the trainer computes).

It implements temperature, top-k and top-p sampling (and greedy decoding); the trainer falls
back to ``generate`` for anything else (repetition penalty, min-p, custom generation kwargs).
:func:`decode` is the loop itself, shared with
:class:`~agentgym_envs.generation.transformers.TransformersBackend`, which also keeps each
row's cache when it finishes (to carry it into the episode's next turn).

Example:
    >>> out = sample_batch(model, [[5, 6, 7], [8, 9]], max_new_tokens=4, eos_ids=[2], pad_id=0)  # doctest: +SKIP
    >>> len(out), all(1 <= len(o) <= 4 for o in out)                                             # doctest: +SKIP
    (2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@dataclass
class Decoded:
    """What :func:`decode` sampled for each row, and (if asked) each row's cache when it finished.

    ``logprobs[r][i]`` and ``entropies[r][i]`` are the log-probability of ``ids[r][i]`` and the full-vocabulary
    entropy of ``softmax(logits / temperature)`` at that position, both before top-k/top-p filtering.

    ``row_cache[r]`` holds, per layer, ``(keys, values)`` of shape ``(1, heads, length, dim)`` for the
    row's context plus its sampled ids except the last one (which was sampled but never fed).
    """

    ids: list[list[int]]
    logprobs: list[list[float]]
    row_cache: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = field(default_factory=list)
    entropies: list[list[float]] = field(default_factory=list)


def _row_kv(cache: Any, index: int, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row ``index`` of every cache layer, keeping only the positions where ``mask`` (1-D) is 1."""
    keep = mask.bool()
    return [
        (layer.keys[index][:, keep].unsqueeze(0).clone(), layer.values[index][:, keep].unsqueeze(0).clone())
        for layer in cache.layers
    ]


@torch.no_grad()
def decode(
    model: Any,
    cache: Any,
    logits: torch.Tensor,
    attention: torch.Tensor,
    next_pos: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    do_sample: bool = True,
    generator: torch.Generator | None = None,
    keep_cache: bool = False,
) -> Decoded:
    """The sampling loop after a prefill: ``logits`` of each row's last position, its cache and attention mask.

    A row leaves the batch (and the cache) when it samples a stop id.  Log-probabilities are those of
    the sampled ids under ``log_softmax(logits / temperature)`` (no top-k/top-p renormalisation), the
    quantity the trainer computes again in its loss; entropies are those of the same full-vocabulary
    distribution (``-sum_v p_v log p_v``), the trainer's entropy (ERC's and AEPO's old entropy).
    """
    n = logits.size(0)
    device = logits.device
    stop = torch.as_tensor(list(stop_ids), device=device, dtype=torch.long)
    active = torch.arange(n, device=device)
    results = Decoded([[] for _ in range(n)], [[] for _ in range(n)], [None] * n, [[] for _ in range(n)])
    scale = max(temperature, 1e-6)
    for step in range(max_new_tokens):
        logits = logits.float() / scale
        logp = torch.log_softmax(logits, dim=-1)
        if do_sample:
            probs = torch.softmax(_filter_logits(logits, top_k, top_p), dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            tokens = logits.argmax(-1)
        chosen = logp.gather(-1, tokens[:, None]).squeeze(-1)
        # One more reduction over the vocabulary, on log-probs already in memory; one transfer for both.
        entropy = -(logp.exp() * logp).sum(-1)
        chosen_lp, chosen_h = torch.stack([chosen, entropy]).tolist()
        for row, token, lp, h in zip(active.tolist(), tokens.tolist(), chosen_lp, chosen_h, strict=True):
            results.ids[row].append(token)
            results.logprobs[row].append(lp)
            results.entropies[row].append(h)
        finished = torch.isin(tokens, stop) if stop.numel() else torch.zeros_like(tokens, dtype=torch.bool)
        if step == max_new_tokens - 1:
            finished = torch.ones_like(finished)
        if finished.any():
            if keep_cache:
                for j in finished.nonzero().squeeze(-1).tolist():
                    results.row_cache[int(active[j])] = _row_kv(cache, j, attention[j])
            keep = (~finished).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            # Finished rows leave the batch and the cache: they cost nothing from here on.
            cache.batch_select_indices(keep)
            attention, tokens, next_pos, active = attention[keep], tokens[keep], next_pos[keep], active[keep]
        attention = torch.cat([attention, attention.new_ones((attention.size(0), 1))], dim=1)
        out = model(
            input_ids=tokens[:, None], attention_mask=attention, position_ids=next_pos[:, None],
            past_key_values=cache, use_cache=True,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return results


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention mask)`` of ``rows`` left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            attention[i, width - len(row) :] = 1
    return ids.to(device), attention.to(device)


@torch.no_grad()
def sample_batch(
    model: Any,
    contexts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    do_sample: bool = True,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Sample up to ``max_new_tokens`` per context (each ends at its first stop id in ``eos_ids``).

    Positions follow the attention mask, as in ``generate``, so left padding does not shift them.
    """
    from transformers import DynamicCache

    if max_new_tokens < 1:
        return [[] for _ in contexts]
    device = next(model.parameters()).device
    input_ids, attention = left_padded(contexts, pad_id, device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
        use_cache=True, logits_to_keep=1,
    )
    if out.past_key_values is None:
        raise RuntimeError("the model returned no KV cache (is gradient checkpointing on during sampling?)")
    decoded = decode(
        model, out.past_key_values, out.logits[:, -1], attention, positions[:, -1] + 1, max_new_tokens, eos_ids,
        temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample, generator=generator,
    )
    return decoded.ids
