"""Score the completions of rows that share a prompt with one forward over that prompt (``share_group_prompts``).

The G episodes of a GRPO group play one task, so their prompts (system, task, first observation) are the same
tokens.  :func:`shared_prompt_logps_and_entropy` runs the backbone once over such a prompt (batch 1, with grad,
keeping its KV cache), repeats the cache to the rows that share it and runs only their completions on top.  The
completion tokens' log-probs and entropies come out in the layout of
:func:`trl_plugins.scoring.token_logps_and_entropy` (``(rows, completion tokens)``, 0 where ``mask`` is 0) and are
the same numbers up to float rounding; the prompt's gradient is the sum of its rows' (the cache repeat is
differentiable).  Rows whose prompt no other row has are scored as before.

Prompts of different tasks usually begin alike too (the system prompt, the tool schemas, the task's preamble):
where two or more shared prompts start with the same tokens, that common beginning is run once for all of them
(``min_common_prefix`` tokens or more), and each prompt's own remainder continues from its KV cache.

Example:
    >>> import torch
    >>> from accelerate import Accelerator
    >>> from trl_plugins.models import tiny_model, tiny_tokenizer
    >>> model = tiny_model(tiny_tokenizer())
    >>> batch = {"prompt_ids": torch.tensor([[5, 6], [5, 6]]), "prompt_mask": torch.ones(2, 2, dtype=torch.long),
    ...          "completion_ids": torch.tensor([[7, 8], [9, 0]]),
    ...          "completion_mask": torch.tensor([[1, 1], [1, 0]]), "tool_mask": torch.ones(2, 2, dtype=torch.long)}
    >>> shared_prompt_sets(batch["prompt_ids"], batch["prompt_mask"])
    [[0, 1]]
    >>> head = shared_prompt_model(model, Accelerator())
    >>> logps, entropy = shared_prompt_logps_and_entropy(head, batch, accelerator=Accelerator(), score_rows=None)
    >>> logps.shape, float(logps[1, 1])
    (torch.Size([2, 2]), 0.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from trl_plugins.batch import trim_padding
from trl_plugins.entropy import logps_and_entropy
from trl_plugins.scoring import dropout_active, plain_head_model

__all__ = ["common_prefix_length", "shared_prompt_logps_and_entropy", "shared_prompt_model", "shared_prompt_sets"]

#: Batch keys of image/audio inputs: the prompt's tokens alone do not say what the model sees.
MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes", "input_features")

ScoreRows = Callable[[dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]

#: Shared prompts' common first tokens are run once for all of them from this many on: below it, the saved work
#: is smaller than the cost of one more backbone call.
MIN_COMMON_PREFIX = 16


def shared_prompt_sets(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """The sets of two or more rows whose unpadded prompt tokens are identical (and not empty), in row order.

    Example:
        >>> ids = torch.tensor([[0, 1, 2], [1, 2, 3], [0, 1, 2], [9, 1, 2]])
        >>> shared_prompt_sets(ids, torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]]))
        [[0, 2, 3]]
    """
    rows_by_prompt: dict[tuple[int, ...], list[int]] = {}
    for row, (ids, keep) in enumerate(zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True)):
        prompt = tuple(t for t, k in zip(ids, keep, strict=True) if k)
        if prompt:
            rows_by_prompt.setdefault(prompt, []).append(row)
    return [rows for rows in rows_by_prompt.values() if len(rows) > 1]


def shared_prompt_model(model: Any, accelerator: Any) -> Any:
    """The ``*ForCausalLM`` whose backbone can score a shared prompt once, or ``None`` where that is not exact or safe.

    ``None`` for: a wrapped model or a scaled/soft-capped LM head (no plain backbone + head:
    :func:`~trl_plugins.scoring.plain_head_model`); encoder-decoder and multimodal models (the prompt's token ids
    are not all the model sees); a backbone whose forward takes no ``past_key_values``, or with layers other than
    full attention (sliding-window, linear or recurrent layers keep a cache that is not all of the prompt's keys and
    values); gradient checkpointing (transformers turns the cache off while training with it); dropout in training
    mode (one dropout mask on the prompt would stand in for G independent ones).
    """
    head_model = plain_head_model(model, accelerator)
    if head_model is None:
        return None
    config = head_model.config
    if getattr(config, "is_encoder_decoder", False) or config.get_text_config() is not config:
        return None
    backbone = getattr(head_model, head_model.base_model_prefix)
    if "past_key_values" not in inspect.signature(backbone.forward).parameters:
        return None
    if not _full_attention_only(config):
        return None
    if getattr(head_model, "is_gradient_checkpointing", False):
        return None
    if model.training and dropout_active(model):
        return None
    return head_model


def _full_attention_only(config: Any) -> bool:
    """Whether every layer is full attention, whose KV cache is all of the prompt's keys and values."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None  # e.g. Mistral: a window but no layer_types


def shared_prompt_logps_and_entropy(
    head_model: Any,
    batch: dict[str, Any],
    *,
    accelerator: Any,
    score_rows: ScoreRows | None,
    temperature: float = 1.0,
    min_common_prefix: int = MIN_COMMON_PREFIX,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-token log-probs and entropies of a micro-batch's completion tokens, each shared prompt run once.

    Args:
        head_model: from :func:`shared_prompt_model`.
        batch: ``prompt_ids``/``prompt_mask`` (left-padded), ``completion_ids``/``completion_mask`` (right-padded)
            and ``tool_mask``, as :func:`trl_plugins.batch.pad_samples` lays them out.
        accelerator: its ``autocast()`` wraps the forwards (as in :mod:`trl_plugins.scoring`).
        score_rows: scores a sub-batch of rows whose prompt no other row shares (the usual path); may be ``None``
            when every row shares its prompt.
        temperature: logits are divided by it.
        min_common_prefix: the shared prompts' common first tokens are run once for all of them when there are at
            least this many (``0``: never).

    Returns:
        ``(logps, entropy)``, ``(rows, completion width)`` each, or ``None`` when no two rows share a prompt (the
        caller then scores the batch as usual).
    """
    if any(key in batch for key in MULTIMODAL_KEYS):
        return None
    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    sets = shared_prompt_sets(prompt_ids, prompt_mask)
    if not sets:
        return None
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    mask = (completion_mask * batch["tool_mask"]).float()
    width = completion_ids.size(1)
    pieces: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
    prompts = [prompt_ids[rows[0]][prompt_mask[rows[0]].bool()] for rows in sets]
    prefix = None
    common = common_prefix_length(prompts) if len(prompts) > 1 else 0
    if min_common_prefix > 0 and common >= min_common_prefix:
        prefix = _PrefixCache.run(head_model, prompts[0][:common], completion_mask.dtype, accelerator)
    for rows, prompt in zip(sets, prompts, strict=True):
        index = torch.tensor(rows, device=prompt_ids.device)
        used = int(completion_mask[index].sum(1).max())
        logps, entropy = _shared_set_scores(
            head_model,
            prompt,
            completion_ids[index, :used],
            completion_mask[index, :used],
            mask[index, :used],
            accelerator,
            temperature,
            prefix,
        )
        pieces.append((rows, logps, entropy))
    shared = {row for rows in sets for row in rows}
    alone = [row for row in range(prompt_ids.size(0)) if row not in shared]
    if alone:
        if score_rows is None:
            raise ValueError("rows whose prompt no other row shares need score_rows")
        pieces.append((alone, *score_rows(_unshared_rows(batch, alone))))
    order = torch.tensor([row for rows, _, _ in pieces for row in rows], device=prompt_ids.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)

    def gathered(k: int) -> torch.Tensor:
        # every piece back to the batch's completion width (0 past a row's tokens, as the usual path), rows in order
        return torch.cat([F.pad(piece[k], (0, width - piece[k].size(1))) for piece in pieces])[inverse]

    return gathered(1), gathered(2)


def _shared_set_scores(
    head_model: Any,
    prompt: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    mask: torch.Tensor,
    accelerator: Any,
    temperature: float,
    prefix: _PrefixCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of ``k`` rows with one prompt: the prompt's forward once, its KV cache repeated to the ``k`` rows.

    With ``prefix`` (the KV cache of the prompt's first ``prefix.length`` tokens) only the rest of the prompt runs.
    """
    rows, used = completion_ids.shape
    if used == 0:
        empty = mask.new_zeros((rows, 0))
        return empty, empty
    backbone = getattr(head_model, head_model.base_model_prefix)
    head = head_model.get_output_embeddings()
    n_prompt = prompt.numel()
    device = prompt.device
    start = 0 if prefix is None else prefix.length
    with accelerator.autocast():
        out = backbone(
            input_ids=prompt[None, start:],
            attention_mask=torch.ones(1, n_prompt, dtype=completion_mask.dtype, device=device),
            position_ids=torch.arange(start, n_prompt, device=device)[None],
            past_key_values=None if prefix is None else prefix.cache(),
            use_cache=True,
        )
        # The prompt's last position predicts completion token 0; completion position j predicts token j + 1, so
        # the last completion token is never an input.
        hidden = out.last_hidden_state[:, -1:].expand(rows, 1, -1)
        if used > 1:
            cache = out.past_key_values
            cache.batch_repeat_interleave(rows)  # repeat_interleave: the rows' gradients add up in the prompt's
            attention_mask = torch.cat(
                [torch.ones(rows, n_prompt, dtype=completion_mask.dtype, device=device), completion_mask[:, :-1]], 1
            )
            positions = torch.arange(n_prompt, n_prompt + used - 1, device=device).expand(rows, -1)
            completion_hidden = backbone(
                input_ids=completion_ids[:, :-1],
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state
            hidden = torch.cat([hidden, completion_hidden], 1)
    return logps_and_entropy(
        hidden, completion_ids, head.weight, head.bias, temperature=temperature, mask=mask, chunk_size=1024
    )


def common_prefix_length(prompts: list[torch.Tensor]) -> int:
    """How many first tokens all ``prompts`` share, at most the shortest one's length minus one.

    Each prompt keeps at least its last token for itself: that position's hidden state predicts the first
    completion token.

    Example:
        >>> common_prefix_length([torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 5]), torch.tensor([1, 2, 3])])
        2
        >>> common_prefix_length([torch.tensor([1, 2]), torch.tensor([1, 2])])
        1
    """
    shortest = min(p.numel() for p in prompts)
    if shortest < 2:
        return 0
    stacked = torch.stack([p[: shortest - 1] for p in prompts])
    differs = (stacked != stacked[:1]).any(0).nonzero()
    return int(differs[0]) if differs.numel() else shortest - 1


class _PrefixCache:
    """The KV cache of prompts' common first tokens, run once (with grad); :meth:`cache` gives each prompt its own."""

    def __init__(self, length: int, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.length = length
        self.layers = layers

    @classmethod
    def run(cls, head_model: Any, ids: torch.Tensor, mask_dtype: torch.dtype, accelerator: Any) -> _PrefixCache | None:
        """The prefix's forward into a cache of our own, or ``None`` (nothing run) where transformers' cache keeps
        no per-layer keys and values to share."""
        from transformers import DynamicCache

        cache = DynamicCache()
        if not hasattr(cache, "layers"):
            return None
        backbone = getattr(head_model, head_model.base_model_prefix)
        n = ids.numel()
        with accelerator.autocast():
            backbone(
                input_ids=ids[None],
                attention_mask=torch.ones(1, n, dtype=mask_dtype, device=ids.device),
                position_ids=torch.arange(n, device=ids.device)[None],
                past_key_values=cache,
                use_cache=True,
            )
        return cls(n, [(layer.keys, layer.values) for layer in cache.layers])

    def cache(self) -> Any:
        """A new cache holding the prefix's keys and values (a prompt's forward extends its copy, not the shared one)."""
        from transformers import DynamicCache

        fresh = DynamicCache()
        for index, (keys, values) in enumerate(self.layers):
            fresh.update(keys, values, index)
        return fresh


def _unshared_rows(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The batch's model inputs of ``rows``, without the columns that are padding in all of them."""
    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "tool_mask")
    index = torch.tensor(rows, device=batch["prompt_ids"].device)
    return trim_padding({key: batch[key][index] for key in keys})
