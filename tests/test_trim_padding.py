"""Micro-batches drop the columns that are padding in all their rows; the loss and its gradient do not change."""

from __future__ import annotations

import torch
from test_trainer import make_args, trainer_for
from trainer_toys import letter_env

from trl_plugins.batch import trim_padding
from trl_plugins.models import tiny_tokenizer


def _padded(batch: dict, left: int, right: int, pad_id: int) -> dict:
    """``batch`` with ``left`` padding columns before its prompts and ``right`` after its completions."""
    rows = batch["prompt_ids"].size(0)
    width = batch["completion_ids"].size(1)
    out = {}
    for key, value in batch.items():
        if key in ("prompt_ids", "prompt_mask"):
            fill = pad_id if key == "prompt_ids" else 0
            value = torch.cat([torch.full((rows, left), fill, dtype=value.dtype), value], 1)
        elif isinstance(value, torch.Tensor) and value.ndim >= 2 and value.size(1) == width:
            fill = pad_id if key == "completion_ids" else (-1 if key == "turn_ids" else 0)
            value = torch.cat([value, torch.full((rows, right), fill, dtype=value.dtype)], 1)
        out[key] = value
    return out


def test_trimmed_micro_batch_gives_the_padded_loss_and_gradient(tmp_path):
    tok = tiny_tokenizer()
    args = make_args(tmp_path, max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_turns=3)
    trainer = trainer_for(tok, args, env=lambda: letter_env(target=9, max_steps=3))
    trainer.train()
    model = trainer.model
    model.train()
    trimmed = trainer._buffered_inputs[0]
    # A micro-batch has no column that is padding in all its rows.
    assert trimmed["prompt_mask"][:, 0].any() and trimmed["completion_mask"][:, -1].any()
    padded = _padded(trimmed, left=5, right=7, pad_id=tok.pad_token_id)
    again = trim_padding(padded)
    assert again.keys() == trimmed.keys()
    for key, value in trimmed.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(again[key], value), key
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grad(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        loss = trainer._compute_loss(model, batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in params])

    loss_trimmed, grad_trimmed = loss_and_grad(trimmed)
    loss_padded, grad_padded = loss_and_grad(padded)
    torch.testing.assert_close(loss_trimmed, loss_padded, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_trimmed, grad_padded, rtol=1e-4, atol=1e-6)
    assert grad_trimmed.abs().sum() > 0
