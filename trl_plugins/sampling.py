"""A lean batched sampler with a KV cache that drops finished sequences as it goes.

``transformers``' ``generate`` keeps computing every row of a batch until the last one stops;
in agent rollouts a few long replies then hold up many short ones.  :func:`sample_batch`
removes a row from the batch (and from the KV cache) as soon as it samples an end-of-turn
token, computes logits only for the last position, and returns the sampled ids verbatim.

It implements temperature, top-k and top-p sampling (and greedy decoding); the trainer falls
back to ``generate`` for anything else (repetition penalty, min-p, custom generation kwargs).

Example:
    >>> import torch
    >>> from trl_plugins.models import tiny_model, tiny_tokenizer
    >>> tok = tiny_tokenizer(); model = tiny_model(tok)
    >>> out = sample_batch(model, [[5, 6, 7], [8, 9]], max_new_tokens=4, eos_ids=[tok.eos_token_id], pad_id=0)
    >>> len(out), all(1 <= len(o) <= 4 for o in out)
    (2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
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
) -> list[list[int]]:
    """Sample up to ``max_new_tokens`` per context (each ends at its first end-of-turn token).

    Positions follow the attention mask, as in ``generate``, so left padding does not shift them.
    """
    from transformers import DynamicCache

    if max_new_tokens < 1:
        return [[] for _ in contexts]
    device = next(model.parameters()).device
    n = len(contexts)
    width = max(len(c) for c in contexts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, ctx in enumerate(contexts):
        input_ids[i, width - len(ctx) :] = torch.as_tensor(ctx, dtype=torch.long)
        attention[i, width - len(ctx) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    eos = torch.as_tensor(list(eos_ids), device=device)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
        use_cache=True, logits_to_keep=1,
    )
    if out.past_key_values is None:
        raise RuntimeError("the model returned no KV cache (is gradient checkpointing on during sampling?)")
    cache = out.past_key_values
    logits = out.logits[:, -1]
    next_pos = positions[:, -1] + 1
    active = torch.arange(n, device=device)
    results: list[list[int]] = [[] for _ in range(n)]
    for step in range(max_new_tokens):
        logits = logits.float()
        if do_sample:
            scaled = _filter_logits(logits / max(temperature, 1e-6), top_k, top_p)
            tokens = torch.multinomial(torch.softmax(scaled, dim=-1), 1).squeeze(-1)
        else:
            tokens = logits.argmax(-1)
        for row, token in zip(active.tolist(), tokens.tolist(), strict=True):
            results[row].append(token)
        if step == max_new_tokens - 1:
            break
        finished = torch.isin(tokens, eos)
        if finished.any():
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
