"""Differential tests: AgentGRPOTrainer's loss against the installed TRL's own ``GRPOTrainer._compute_loss``.

Both trainers are real (a tiny random Llama, the same weights), get the same prepared micro-batch and the same
accumulation state, and must agree on the loss value and on every parameter's gradient, for every TRL
``loss_type``, ``gradient_accumulation_steps`` 1, 2, 4 and ``num_iterations`` 1, 2, with no hook active.  Then the
terms TRL does not have (EPO, PPO's value loss) must keep their weight relative to the policy loss whatever the
accumulation.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trainer_toys import letter_env
from trl import GRPOConfig, GRPOTrainer

from trl_plugins.batch import model_inputs
from trl_plugins.config import AgentGRPOConfig
from trl_plugins.hooks import LOSS_TYPES, EPOHook
from trl_plugins.hooks.reductions import turn_token_mean
from trl_plugins.models import tiny_model, tiny_tokenizer
from trl_plugins.trainer import AgentGRPOTrainer

ROWS, PROMPT, COMPLETION = 4, 5, 7
MAX_LENGTH = 160  # TRL's max_completion_length == our max_context_tokens: Dr.GRPO's constant length


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def settings(tmp_path, loss_type: str, ga: int, num_iterations: int, **extra) -> dict:
    out = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=ROWS,
        num_generations=ROWS,
        gradient_accumulation_steps=ga,
        num_iterations=num_iterations,
        loss_type=loss_type,
        epsilon=0.2,
        epsilon_high=0.28 if loss_type != "cispo" else 1.5,  # cispo: eps_high caps the ratio itself
        temperature=0.8,
        max_completion_length=MAX_LENGTH,
        report_to="none",
        save_strategy="no",
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    if num_iterations > 1:  # off-policy: the KL term (with TRL's bias correction) and the entropy bonus too
        out.update(beta=0.04, entropy_coef=0.01)
    out.update(extra)
    return out


def build_pair(tok, tmp_path, **kw) -> tuple[AgentGRPOTrainer, GRPOTrainer]:
    path = tmp_path / "tiny"  # a saved model: with beta != 0 both trainers load their reference model from it
    if not path.exists():
        tiny_model(tok).save_pretrained(path)
    ours = AgentGRPOTrainer(
        str(path),
        args=AgentGRPOConfig(**settings(tmp_path, **kw), max_context_tokens=MAX_LENGTH, max_turns=3),
        processing_class=tok,
        env_factory=lambda: letter_env(max_steps=3),
    )
    theirs = GRPOTrainer(
        str(path),
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=GRPOConfig(**settings(tmp_path, **kw)),
        train_dataset=Dataset.from_dict({"prompt": ["hi"] * 8}),
        processing_class=tok,
    )
    return ours, theirs


def prepared_batch(trainer: AgentGRPOTrainer, num_iterations: int, beta: float, ga: int) -> dict:
    """A micro-batch as ``_prepare_inputs`` hands it over: padded completions, environment tokens, per-token advantages."""
    g = torch.Generator().manual_seed(1)
    vocab = len(trainer.processing_class)
    lengths = [7, 5, 3, 6]
    completion_mask = torch.tensor([[int(t < n) for t in range(COMPLETION)] for n in lengths])
    tool_mask = torch.ones(ROWS, COMPLETION, dtype=torch.long)
    tool_mask[0, 2:4] = 0  # environment tokens inside a model row carry no loss
    tool_mask[3, 1] = 0
    turn_ids = torch.where(completion_mask.bool() & tool_mask.bool(), (torch.arange(COMPLETION) >= 4).long(), -1)
    batch = {
        "prompt_ids": torch.randint(3, vocab, (ROWS, PROMPT), generator=g),
        "prompt_mask": torch.ones(ROWS, PROMPT, dtype=torch.long),
        "completion_ids": torch.randint(3, vocab, (ROWS, COMPLETION), generator=g),
        "completion_mask": completion_mask,
        "tool_mask": tool_mask,
        "turn_ids": turn_ids,
        "advantages": torch.randn(ROWS, COMPLETION, generator=g),
        # tokens of the whole generation batch (``ga`` micro-batches of about this size), as the trainer gathers them
        "num_items_in_batch": (completion_mask * tool_mask).sum() * ga + 1,
    }
    input_ids, attention_mask, keep, mask = model_inputs(batch)
    with torch.no_grad():
        logps, _ = trainer.token_logps_and_entropy(trainer.model, input_ids, attention_mask, keep, mask)
    if num_iterations > 1:  # a later iteration: the sampling policy differs (ratios clip on both sides)
        batch["old_per_token_logps"] = logps + 0.4 * torch.randn(logps.shape, generator=g)
    if beta:
        batch["ref_per_token_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=g)
    return batch


def loss_and_grads(trainer, batch: dict, ga: int) -> tuple[float, dict[str, torch.Tensor]]:
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = ga
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def assert_same(ours: tuple, theirs: tuple) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = ours, theirs
    assert loss_a == pytest.approx(loss_b, rel=1e-5, abs=1e-7)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("num_iterations", [1, 2])
@pytest.mark.parametrize("ga", [1, 2, 4])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_and_gradients_equal_trl(tok, tmp_path, loss_type, ga, num_iterations):
    ours, theirs = build_pair(tok, tmp_path, loss_type=loss_type, ga=ga, num_iterations=num_iterations)
    batch = prepared_batch(ours, num_iterations, ours.beta, ga)
    mine = loss_and_grads(ours, batch, ga)
    assert_same(mine, loss_and_grads(theirs, batch, ga))
    assert mine[0] != 0.0


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_sequence_level_importance_sampling_equals_trl(tok, tmp_path, loss_type):
    """GSPO (``importance_sampling_level="sequence"``) takes effect and is TRL's, on-policy and off-policy."""
    for num_iterations in (1, 2):
        ours, theirs = build_pair(
            tok, tmp_path, loss_type=loss_type, ga=2, num_iterations=num_iterations, importance_sampling_level="sequence"
        )
        batch = prepared_batch(ours, num_iterations, ours.beta, 2)
        mine = loss_and_grads(ours, batch, 2)
        assert_same(mine, loss_and_grads(theirs, batch, 2))
    # ... and differs from token-level weighting on the same off-policy batch
    token_level, _ = build_pair(tok, tmp_path, loss_type=loss_type, ga=2, num_iterations=2)
    assert loss_and_grads(token_level, batch, 2)[0] != pytest.approx(mine[0], rel=1e-4)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_epo_term_keeps_its_weight_under_gradient_accumulation(tok, tmp_path, loss_type):
    """Hook extras are per-micro-batch means divided by the accumulation, like TRL's entropy bonus: their weight
    relative to the policy loss is the same at GA = 1, 2, 4 (the issue measured 1x, 2x, 4x with dapo)."""
    coef = 0.5
    ratios = []
    for ga in (1, 2, 4):
        ours, theirs = build_pair(tok, tmp_path, loss_type=loss_type, ga=ga, num_iterations=1)
        hook = EPOHook(coef=coef)
        ours.loss_hooks, ours._needs_entropy_grad = [hook], True
        batch = prepared_batch(ours, 1, 0.0, ga)
        with_epo = loss_and_grads(ours, batch, ga)[0]
        trl_loss = loss_and_grads(theirs, batch, ga)[0]
        input_ids, attention_mask, keep, mask = model_inputs(batch)
        with torch.no_grad():
            _, entropy = ours.token_logps_and_entropy(ours.model, input_ids, attention_mask, keep, mask)
        epo = -coef * float(turn_token_mean(entropy, mask, batch["turn_ids"]))  # step 0: no history, no smoothing
        assert with_epo - trl_loss == pytest.approx(epo / ga, rel=1e-4)
        ratios.append((with_epo - trl_loss) / trl_loss)
    assert ratios[0] == pytest.approx(ratios[1], rel=0.05) and ratios[0] == pytest.approx(ratios[2], rel=0.05)
