"""AEPO's branching entropy is the entropy of the distribution actions are sampled from: ``softmax(logits / T)`` at
the run's temperature T, the same entropy the trainer's loss side (and so AEPO's entropy-aware advantage) uses."""

from __future__ import annotations

import math

import pytest
import torch

from trl_plugins.aepo import action_entropies
from trl_plugins.entropy import logps_and_entropy
from trl_plugins.errors import TrainerConfigError
from trl_plugins.models import tiny_model, tiny_tokenizer

CONTEXTS = [[5, 6, 7, 8], [9, 10]]
ACTIONS = [[11, 12, 13], [14, 15, 16, 17]]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    # A larger init scale than the default so the logits are far from uniform and temperature visibly matters.
    return tiny_model(tok, initializer_range=0.2).eval()


def loss_side_entropy(model, context: list[int], action: list[int], temperature: float) -> float:
    """The trainer's loss-side entropy (``logps_and_entropy`` on the backbone's hidden states), mean over ``action``."""
    ids = torch.tensor([context + action])
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[:, len(context) - 1 : -1]
        head = model.get_output_embeddings()
        _, entropy = logps_and_entropy(
            hidden, ids[:, len(context) :], head.weight, head.bias, temperature=temperature, backend="torch"
        )
    return entropy.mean().item()


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
def test_branching_entropy_is_the_loss_sides_entropy_at_the_sampling_temperature(model, tok, temperature):
    got = action_entropies(model, CONTEXTS, ACTIONS, pad_id=tok.pad_token_id, temperature=temperature)
    want = [loss_side_entropy(model, c, a, temperature) for c, a in zip(CONTEXTS, ACTIONS, strict=True)]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_temperature_moves_the_branching_entropy(model, tok):
    by_t = {t: action_entropies(model, CONTEXTS, ACTIONS, pad_id=tok.pad_token_id, temperature=t) for t in (0.3, 1, 3)}
    for row in range(len(CONTEXTS)):
        assert by_t[0.3][row] + 0.5 < by_t[1][row] < by_t[3][row] - 0.5  # sharper below 1, flatter above
        assert by_t[3][row] <= math.log(len(tok)) + 1e-4


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_a_temperature_that_samples_nothing_is_a_config_error(model, tok, bad):
    with pytest.raises(TrainerConfigError, match="sampling temperature > 0"):
        action_entropies(model, CONTEXTS, ACTIONS, pad_id=tok.pad_token_id, temperature=bad)


def test_trainer_branches_on_its_own_sampling_temperature(tmp_path, tok):
    from trainer_toys import toy_run_settings

    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.trainer import AgentGRPOTrainer

    args = AgentGRPOConfig(
        **toy_run_settings(tmp_path, temperature=0.4, aepo={"branching": {"p_branch": 0.05}}, loss_hooks=["aepo"])
    )
    policy = tiny_model(tok, initializer_range=0.2)
    trainer = AgentGRPOTrainer(policy, args=args, processing_class=tok)
    try:
        got = trainer.action_entropies(CONTEXTS, ACTIONS)
    finally:
        trainer.close_envs()
    assert got == pytest.approx(action_entropies(policy, CONTEXTS, ACTIONS, tok.pad_token_id, temperature=0.4))
    assert got != pytest.approx(action_entropies(policy, CONTEXTS, ACTIONS, tok.pad_token_id, temperature=1.0))
