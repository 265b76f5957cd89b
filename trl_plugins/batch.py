"""Episodes -> tensors: the trainer's samples, their padded batch, and how a batch is cut into micro-batches.

An episode becomes one sample (``context_mode="full"``: the whole trajectory, environment tokens masked) or one
sample per turn (``"stepwise"``); :func:`pad_samples` pads them into the tensors TRL's loss reads
(``prompt_ids`` left-padded, ``completion_ids``, ``tool_mask`` = 1 on model tokens, ``turn_ids``, per-token
``advantages``).  :func:`split_batch` and :func:`slice_rows` cut a batch into micro-batches and pieces.

Example:
    >>> import torch
    >>> samples = [{"prompt": [1, 2], "completion": [3, 4, 5], "mask": [1, 0, 1], "turn_ids": [0, -1, 1],
    ...             "advantages": [1.0, 0.0, 1.0]}]
    >>> batch = pad_samples(samples, pad_id=0, device="cpu")
    >>> model_inputs(batch)[3].tolist()
    [[1.0, 0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from trl.trainer.utils import pad

from agentgym_envs.engine import Episode
from trl_plugins.vllm_colocate import sampling_logps

__all__ = [
    "trim_padding",
    "episode_samples",
    "last_action_end",
    "model_inputs",
    "pad_samples",
    "sampled_in_sample_context",
    "slice_rows",
    "split_batch",
    "turn_entropies",
    "turn_logprobs",
]


def _along_actions(turn: Any, values: list[float] | None, what: str) -> list[float] | None:
    """``values`` (one per action id of ``turn``, or None), checked to lie along the turn's action ids."""
    if values is not None and len(values) != len(turn.action_ids):
        raise ValueError(
            f"a turn has {len(values)} sampling {what} for {len(turn.action_ids)} action tokens; they need replies "
            "kept as the sampled ids (RolloutConfig.reply='tokens'), as use_vllm does"
        )
    return values


def turn_logprobs(turn: Any) -> list[float] | None:
    """A turn's sampling log-probs, checked to lie along its action ids (they do when replies stay token ids)."""
    return _along_actions(turn, turn.logprobs, "log-probs")


def turn_entropies(turn: Any) -> list[float] | None:
    """A turn's sampling entropies (one per action id), checked to lie along its action ids."""
    return _along_actions(turn, turn.entropies, "entropies")


def sampled_in_sample_context(
    episodes: Sequence[Episode], context_mode: str = "full", reply: str = "tokens", entropies: bool = False
) -> bool:
    """Whether every turn's sampling log-probs (and, with ``entropies``, entropies) were taken in the context its
    sample gives that turn.

    Then the sampler scored each action token after exactly the tokens the trainer's forward puts before it, so,
    with the same weights and temperature, its log-probs are the trainer's.  ``"full"``: the engine samples each
    turn after the prompt and every earlier turn's action and environment tokens, which is the sample; a recorded
    ``context_ids`` must be that.  ``"stepwise"``: the sample's prompt is the turn's recorded context.  False when
    replies are re-tokenised text (``reply="text"``: the action ids are not the sampled ids), or a turn has no
    log-probs (the backend cannot give them) or not one per action id; with ``entropies``, also when a turn has no
    recorded entropies or not one per action id.

    Example:
        >>> from agentgym_envs.engine import Episode, Turn
        >>> ep = Episode(group=0, task_id=1, seed=0, prompt_ids=[5], messages=[])
        >>> ep.turns.append(Turn([7], "go", 0.0, "ok", "s0", env_ids=[9], context_ids=[5], logprobs=[-0.5]))
        >>> ep.turns.append(Turn([8], "go", 0.0, "ok", "s1", context_ids=[5, 7, 9], logprobs=[-0.1]))
        >>> sampled_in_sample_context([ep]), sampled_in_sample_context([ep], reply="text")
        (True, False)
        >>> sampled_in_sample_context([ep], entropies=True)   # these turns recorded no entropies
        False
        >>> ep.turns[1].context_ids = [5, 9]   # not the history the full sample puts before this turn
        >>> sampled_in_sample_context([ep]), sampled_in_sample_context([ep], "stepwise")
        (False, True)
    """
    if reply != "tokens":
        return False
    for episode in episodes:
        context = list(episode.prompt_ids)
        for turn in episode.turns:
            if turn.logprobs is None or len(turn.logprobs) != len(turn.action_ids):
                return False
            if entropies and (turn.entropies is None or len(turn.entropies) != len(turn.action_ids)):
                return False
            if context_mode == "stepwise" and turn.context_ids is None:
                return False
            if context_mode == "full" and turn.context_ids is not None and turn.context_ids != context:
                return False
            context += turn.action_ids + turn.env_ids
    return True


def masked_turns(episode: Episode, token_budget: bool = False, unfinished: bool = False) -> set[int]:
    """The turns of ``episode`` that carry no loss.

    ``token_budget`` (TRL's ``mask_truncated_completions``: a completion cut by the length budget): a turn cut at
    ``max_new_tokens_per_turn`` (``Turn.hit_token_limit``), and every turn of an episode that the context budget
    ended (``truncation_reason == "context_budget"``).  ``unfinished``: every turn of an episode that did not end
    in the environment (its step limit, ``max_turns``, the context budget, a time limit, a crash).

    Example:
        >>> from agentgym_envs.engine import Episode, Turn
        >>> ep = Episode(group=0, task_id=1, seed=0, prompt_ids=[5], messages=[], truncated=True,
        ...              truncation_reason="step_limit")
        >>> ep.turns += [Turn([7], "go", 0.0, "ok", "s0", hit_token_limit=True), Turn([8], "go", 0.0, "ok", "s1")]
        >>> masked_turns(ep, token_budget=True), masked_turns(ep, token_budget=True, unfinished=True)
        ({0}, {0, 1})
    """
    every = set(range(len(episode.turns)))
    if unfinished and episode.truncated:
        return every
    if not token_budget:
        return set()
    if episode.truncation_reason == "context_budget":
        return every
    return {t for t, turn in enumerate(episode.turns) if turn.hit_token_limit}


def episode_samples(
    episodes: Sequence[Episode],
    advantages: Sequence[torch.Tensor],
    *,
    context_mode: str = "full",
    mask_truncated: bool = False,
    mask_truncated_episodes: bool = False,
    with_sampling_logps: bool = False,
    with_sampling_entropies: bool = False,
) -> list[dict[str, list]]:
    """The trainer's samples of a batch of episodes, each with per-token advantages from its turn's.

    ``mask_truncated`` (TRL's ``mask_truncated_completions``) and ``mask_truncated_episodes``: the turns
    :func:`masked_turns` names keep their place in the advantages but carry no loss.  ``with_sampling_logps``: add
    the sampler's log-probs along the completion (0 on environment tokens); ``with_sampling_entropies``: the
    sampler's entropies, laid out alike.
    """
    samples = []
    for ep, adv in zip(episodes, advantages, strict=True):
        masked = masked_turns(ep, token_budget=mask_truncated, unfinished=mask_truncated_episodes)
        if context_mode == "full":
            ids, mask, turn_ids = ep.completion()
            # The environment's tokens after the last action (the final observation) carry no loss and, the model
            # being causal, change no log-prob or value before them: scoring them would be wasted work.
            end = last_action_end(turn_ids)
            ids, mask, turn_ids = ids[:end], mask[:end], turn_ids[:end]
            sample = {
                "prompt": ep.prompt_ids,
                "completion": ids,
                "mask": [0 if t in masked else m for m, t in zip(mask, turn_ids, strict=True)],
                "turn_ids": turn_ids,
                "advantages": [float(adv[t]) if t >= 0 else 0.0 for t in turn_ids],
            }
            env_lengths = [len(turn.env_ids) for turn in ep.turns]
            if with_sampling_logps:
                sample["sampling_logps"] = sampling_logps([turn_logprobs(turn) for turn in ep.turns], env_lengths)[:end]
            if with_sampling_entropies:
                sample["sampling_entropies"] = sampling_logps(
                    [turn_entropies(turn) for turn in ep.turns], env_lengths, "entropies"
                )[:end]
            samples.append(sample)
            continue
        for t, turn in enumerate(ep.turns):
            n = len(turn.action_ids)
            sample = {
                "prompt": turn.context_ids or [],
                "completion": turn.action_ids,
                "mask": [int(t not in masked)] * n,
                "turn_ids": [t] * n,
                "advantages": [float(adv[t])] * n,
            }
            if with_sampling_logps:
                sample["sampling_logps"] = sampling_logps([turn_logprobs(turn)], [0])
            if with_sampling_entropies:
                sample["sampling_entropies"] = sampling_logps([turn_entropies(turn)], [0], "entropies")
            samples.append(sample)
    return samples


def last_action_end(turn_ids: Sequence[int]) -> int:
    """The length of a completion up to and including its last action token (turn index ``>= 0``); 0 without one.

    Example:
        >>> last_action_end([0, 0, -1, 1, -1, -1]), last_action_end([-1])
        (4, 0)
    """
    for i in range(len(turn_ids) - 1, -1, -1):
        if turn_ids[i] >= 0:
            return i + 1
    return 0


def pad_samples(samples: Sequence[dict[str, list]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """The padded tensors of :func:`episode_samples` (``sampling_per_token_logps`` and ``sampling_per_token_entropy``
    when the samples have them)."""

    def right(key: str, dtype: torch.dtype, value: float) -> torch.Tensor:
        rows = [torch.tensor(s[key], dtype=dtype) for s in samples]
        return pad(rows, padding_value=value, padding_side="right").to(device)

    prompts = [torch.tensor(s["prompt"], dtype=torch.long) for s in samples]
    completions = [torch.tensor(s["completion"], dtype=torch.long) for s in samples]
    batch = {
        "prompt_ids": pad(prompts, padding_value=pad_id, padding_side="left").to(device),
        "prompt_mask": pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left").to(device),
        "completion_ids": pad(completions, padding_value=pad_id, padding_side="right").to(device),
        "completion_mask": pad([torch.ones_like(c) for c in completions], padding_value=0, padding_side="right").to(
            device
        ),
        "tool_mask": right("mask", torch.long, 0),
        "turn_ids": right("turn_ids", torch.long, -1),
        "advantages": right("advantages", torch.float32, 0.0),
    }
    if samples and "sampling_logps" in samples[0]:
        batch["sampling_per_token_logps"] = right("sampling_logps", torch.float32, 0.0)
    if samples and "sampling_entropies" in samples[0]:
        batch["sampling_per_token_entropy"] = right("sampling_entropies", torch.float32, 0.0)
    return batch


def model_inputs(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """``(input_ids, attention_mask, logits_to_keep, mask)`` of a scored batch; ``mask`` is 1.0 on model tokens.

    Example:
        >>> b = {"prompt_ids": torch.tensor([[1]]), "prompt_mask": torch.tensor([[1]]),
        ...      "completion_ids": torch.tensor([[2, 3]]), "completion_mask": torch.tensor([[1, 1]]),
        ...      "tool_mask": torch.tensor([[1, 0]])}
        >>> model_inputs(b)[0].tolist(), model_inputs(b)[2]
        ([[1, 2, 3]], 2)
    """
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    mask = (batch["completion_mask"] * batch["tool_mask"]).float()
    return input_ids, attention_mask, batch["completion_ids"].size(1), mask


def slice_rows(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of every batched tensor of ``batch`` (scalars and other values are kept).

    Example:
        >>> slice_rows({"x": torch.arange(5), "n": torch.tensor(5)}, 1, 3)["x"].tolist()
        [1, 2]
    """
    return {k: v[start:stop] if isinstance(v, torch.Tensor) and v.ndim > 0 else v for k, v in batch.items()}


def split_batch(batch: dict[str, Any], chunks: int, seed: int | None = None) -> list[dict[str, Any]]:
    """Shuffle the rows of a batch and cut them into ``chunks`` near-equal micro-batches.

    Unlike TRL's ``split_tensor_dict`` the row count need not divide evenly (step-wise samples vary).

    Example:
        >>> parts = split_batch({"x": torch.arange(5), "n": torch.tensor(5)}, 2, seed=0)
        >>> [len(p["x"]) for p in parts], int(parts[0]["n"])
        ([3, 2], 5)
    """
    rows = next(v.size(0) for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim > 0)
    if rows < chunks:
        raise ValueError(f"{rows} samples cannot be split into {chunks} micro-batches")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    order = torch.randperm(rows, generator=generator)
    parts = []
    for piece in np.array_split(order.numpy(), chunks):
        index = torch.as_tensor(piece)
        part = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                part[key] = value[index.to(value.device)]
            else:
                part[key] = value
        parts.append(trim_padding(part))
    return parts


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` without the columns that are padding in every row: prompt columns on the left, completion columns
    on the right (every ``(rows, completion tokens)`` tensor is cut alike).

    A micro-batch cut from a generation batch keeps the width of the batch's longest episode; the model's cost
    follows the width, and padding columns change no log-probability (positions come from the attention mask).

    Example:
        >>> b = {"prompt_ids": torch.tensor([[0, 1], [0, 2]]), "prompt_mask": torch.tensor([[0, 1], [0, 1]]),
        ...      "completion_ids": torch.tensor([[3, 0, 0]]).repeat(2, 1),
        ...      "completion_mask": torch.tensor([[1, 0, 0], [1, 1, 0]])}
        >>> {k: tuple(v.shape) for k, v in trim_padding(b).items()}
        {'prompt_ids': (2, 1), 'prompt_mask': (2, 1), 'completion_ids': (2, 2), 'completion_mask': (2, 2)}
    """
    prompt_mask, completion_mask = batch.get("prompt_mask"), batch.get("completion_mask")
    if not isinstance(prompt_mask, torch.Tensor) or not isinstance(completion_mask, torch.Tensor):
        return batch
    rows, prompt_width, completion_width = prompt_mask.size(0), prompt_mask.size(1), completion_mask.size(1)
    used = prompt_mask.bool().any(0).nonzero()
    drop_left = int(used[0]) if used.numel() else prompt_width
    used = completion_mask.bool().any(0).nonzero()
    keep_right = int(used[-1]) + 1 if used.numel() else 0
    if drop_left == 0 and keep_right == completion_width:
        return batch
    trimmed = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and value.size(0) == rows:
            if key.startswith("prompt_") and value.size(1) == prompt_width:
                value = value[:, drop_left:]
            elif value.size(1) == completion_width:
                value = value[:, :keep_right]
        trimmed[key] = value
    return trimmed
