"""A step-wise micro-batch with more samples than ``per_device_train_batch_size`` is scored in pieces; the pieces
must give the whole micro-batch's loss and gradients for every loss type, with and without the entropy bonus and
the KL term, with every hook (EPO in both modes, ERC, AEPO)."""

from __future__ import annotations

import pytest
import torch
from test_trainer import make_args, trainer_for
from trainer_toys import letter_env

from trl_plugins.batch import model_inputs, slice_rows
from trl_plugins.hooks import LOSS_TYPES, build_hooks
from trl_plugins.models import tiny_tokenizer

HOOKS = {
    "none": [],
    "epo+erc": ["epo", "erc"],
    "epo released": [{"name": "epo", "mode": "released", "released_max_step": 2}],
    "aepo": ["aepo"],
}
#: (entropy_coef, KL coefficient): neither term, then both.
EXTRA_TERMS = ((0.0, 0.0), (0.05, 0.1))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _perturbed(batch: dict, trainer, model) -> dict:
    """The trained batch with its prompts cut to their last 24 tokens (a fast forward), and advantages, old and
    reference log-probabilities and the old entropy moved off their trivial values (so clipping, the KL and every
    hook term are active), seeded."""
    batch = {**batch, "prompt_ids": batch["prompt_ids"][:, -24:], "prompt_mask": batch["prompt_mask"][:, -24:]}
    generator = torch.Generator().manual_seed(0)
    input_ids, attention_mask, logits_to_keep, mask = model_inputs(batch)
    with torch.no_grad():
        logps, entropy = trainer.token_logps_and_entropy(model, input_ids, attention_mask, logits_to_keep, mask)

    def noise(like: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator) * scale

    rows = batch["completion_ids"].size(0)
    advantages = torch.randn(rows, 1, generator=generator).expand_as(logps).clone()
    return {
        **batch,
        "advantages": advantages,
        "old_per_token_logps": logps + noise(logps, 0.3),
        "ref_per_token_logps": logps + noise(logps, 0.3),
        "old_entropy": (entropy + noise(entropy, 0.5)).clamp(min=0.0),
    }


def test_split_micro_batches_give_the_whole_loss_and_gradient_for_every_term(tok, tmp_path):
    args = make_args(
        tmp_path, max_steps=1, context_mode="stepwise", history_turns=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, max_turns=3,
    )  # fmt: skip
    trainer = trainer_for(tok, args, env=lambda: letter_env(target=9, max_steps=3))
    trainer.train()
    model = trainer.model
    model.train()
    # Five of the micro-batch's turns in pieces of two: three pieces, the last one shorter.
    batch = _perturbed(slice_rows(trainer._buffered_inputs[0], 0, 5), trainer, model)
    assert batch["completion_ids"].size(0) == 5
    trainer.args.per_device_train_batch_size = 2
    assert trainer._returned_loss_scale(None) == 1.0  # the returned loss is backpropagated as it is
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in params]), loss.detach()

    failures = []
    for hook_name, hooks in HOOKS.items():
        trainer.loss_hooks = build_hooks(hooks)
        trainer._needs_entropy_grad = any(h.needs_entropy for h in trainer.loss_hooks)
        for loss_type in LOSS_TYPES:
            for entropy_coef, kl in EXTRA_TERMS:
                trainer.loss_type, trainer.entropy_coef, trainer.beta = loss_type, entropy_coef, kl
                whole, whole_loss = gradient(lambda: trainer._compute_loss(model, batch))
                split, split_loss = gradient(lambda: trainer.compute_loss(model, batch))
                same_loss = torch.allclose(split_loss, whole_loss, rtol=1e-5, atol=1e-6)
                same_grad = torch.allclose(split, whole, rtol=1e-4, atol=1e-6)
                if not (same_loss and same_grad and whole.abs().sum() > 0):
                    ratio = float(split_loss / whole_loss) if whole_loss != 0 else float("nan")
                    failures.append(f"{hook_name}/{loss_type}/entropy {entropy_coef}/kl {kl}: loss ratio {ratio:.4f}")
    assert not failures, failures
