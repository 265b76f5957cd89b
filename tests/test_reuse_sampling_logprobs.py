"""``reuse_sampling_logprobs``: no forward whose result is already known, and the same loss and gradients.

A tiny random Llama plays the real (toy) ``LetterEnv`` through the trainer's own rollout.  Off-policy
(``num_iterations=2``) the transformers sampler's log-probs (and, for ERC, its entropies) stand in for the
old-policy forward: checked per position against a fresh forward, across sampling settings and context modes;
on-policy the old entropies (ERC) and vLLM's importance-sampling ratio come from the loss's own forward.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_trainer import make_args, trainer_for
from trainer_toys import letter_env

from trl_plugins import batch as batching
from trl_plugins.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def generation_batch(trainer, seed: int = 0) -> dict:
    """One generation batch through the trainer's own rollout and scoring (seeded: the same samples every call)."""
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in range(trainer.args.per_device_train_batch_size)]
    torch.manual_seed(seed)
    return trainer._generate_and_score_completions(rows)


def fresh_old_scores(trainer, batch: dict) -> dict:
    """What the no-grad old-policy forward adds to ``batch`` (the path reuse skips): old log-probs, and old
    entropies when a hook needs them."""
    scored = {k: v for k, v in batch.items() if k not in ("old_per_token_logps", "old_entropy")}
    trainer._score_old_and_ref(scored, "train", score_old=True)
    return scored


def fresh_old_logps(trainer, batch: dict) -> torch.Tensor:
    return fresh_old_scores(trainer, batch)["old_per_token_logps"]


def loss_and_grads(trainer, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return float(loss), grads


def backbone_forwards(trainer) -> list[int]:
    """A counter of the backbone's forwards (the sampler's and the scoring passes alike)."""
    calls = [0]
    trainer.model.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"temperature": 0.7, "top_k": 5},
        {"temperature": 1.3, "top_p": 0.8},
        {"context_mode": "stepwise", "temperature": 0.9},
    ],
    ids=["plain", "temperature-top-k", "temperature-top-p", "stepwise"],
)
def test_the_samplers_logprobs_and_entropies_equal_a_fresh_forward_at_every_position(tok, tmp_path, sampling):
    # ERC needs the old entropies: off-policy they come from the sampler too
    args = make_args(tmp_path, num_iterations=2, max_turns=3, max_new_tokens_per_turn=4, loss_hooks=["erc"], **sampling)
    trainer = trainer_for(tok, args)
    batch = generation_batch(trainer)
    assert trainer._old_scores_source(trainer.last_episodes) == "sampler"
    fresh_scores = fresh_old_scores(trainer, batch)
    mask = (batch["completion_mask"] * batch["tool_mask"]).bool()
    assert mask.sum() >= 8
    # A random tiny model's distributions are near uniform: its entropies vary little from position to position,
    # but still 20 times the tolerance (so a constant or a neighbour's entropy would not pass).
    for name, spread in (("old_per_token_logps", 0.05), ("old_entropy", 4e-4)):
        reused, fresh = batch[name], fresh_scores[name]
        assert reused.shape == fresh.shape, name
        # every model token: what the sampler recorded is the trainer's (float rounding of other batch shapes)
        assert torch.allclose(reused[mask], fresh[mask], atol=2e-5, rtol=0), (name, (reused - fresh).abs().max())
        assert (reused[~mask] == 0).all() and (fresh[~mask] == 0).all(), name
        # ... and genuinely the model's: not a constant, different at other positions
        assert reused[mask].std() > spread, name
    assert (batch["old_entropy"][mask] > 0).all()


def test_a_step_with_reuse_has_the_loss_and_gradients_of_one_without(tok, tmp_path):
    args = make_args(tmp_path, num_iterations=2, max_turns=3, max_new_tokens_per_turn=4)
    trainer = trainer_for(tok, args)
    calls = backbone_forwards(trainer)
    reused = generation_batch(trainer)
    with_reuse = calls[0]
    trainer.args.reuse_sampling_logprobs = False
    calls[0] = 0
    fresh = generation_batch(trainer)
    without_reuse = calls[0]
    assert torch.equal(reused["completion_ids"], fresh["completion_ids"])  # the same episodes on both sides
    # one whole no-grad pass fewer (the 4 episodes are scored in one piece)
    assert without_reuse - with_reuse == 1, (with_reuse, without_reuse)
    # the second optimizer step of a generation batch: the weights moved, so old != current and the ratio matters
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    loss_a, grads_a = loss_and_grads(trainer, reused)
    loss_b, grads_b = loss_and_grads(trainer, fresh)
    assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=1e-3, atol=1e-6, msg=name)


def test_off_policy_erc_takes_its_old_entropy_from_the_sampler(tok, tmp_path):
    # narrow bounds: the weights' small move below shifts some tokens' entropy ratio out of them (by 0.2-0.4%),
    # not all
    erc = {"beta_low": 3e-3, "beta_high": 3e-3}
    args = make_args(tmp_path, num_iterations=2, max_turns=3, max_new_tokens_per_turn=4, loss_hooks=["erc"], erc=erc)
    trainer = trainer_for(tok, args)
    calls = backbone_forwards(trainer)
    reused = generation_batch(trainer)
    with_reuse = calls[0]
    assert trainer._old_scores_source(trainer.last_episodes) == "sampler" and "old_entropy" in reused
    trainer.args.reuse_sampling_logprobs = False
    calls[0] = 0
    fresh = generation_batch(trainer)
    without_reuse = calls[0]
    assert torch.equal(reused["completion_ids"], fresh["completion_ids"])  # the same episodes on both sides
    assert without_reuse - with_reuse == 1, (with_reuse, without_reuse)  # the old-policy forward is gone
    # the second optimizer step of a generation batch: old != current, so ERC's entropy ratio and clip matter
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    torch.testing.assert_close(reused["old_entropy"], fresh["old_entropy"], rtol=0, atol=2e-5)
    (hook,) = trainer.loss_hooks
    loss_a, grads_a = loss_and_grads(trainer, reused)
    clipped = hook.metrics()["erc/clip_fraction"]
    assert 0 < clipped < 1  # ERC's mask depends on the old entropies here
    loss_b, grads_b = loss_and_grads(trainer, fresh)
    assert hook.metrics()["erc/clip_fraction"] == clipped
    assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=1e-3, atol=1e-6, msg=name)


def test_on_policy_erc_takes_its_old_entropy_from_the_loss_forward(tok, tmp_path):
    args = make_args(tmp_path, max_turns=2, max_new_tokens_per_turn=4, loss_hooks=["erc"])
    trainer = trainer_for(tok, args)
    calls = backbone_forwards(trainer)
    folded = generation_batch(trainer)
    with_reuse = calls[0]
    assert "old_entropy" not in folded and "old_per_token_logps" not in folded
    trainer.args.reuse_sampling_logprobs = False
    calls[0] = 0
    scored = generation_batch(trainer)
    assert calls[0] - with_reuse == 1 and "old_entropy" in scored
    assert torch.equal(folded["completion_ids"], scored["completion_ids"])
    loss_a, grads_a = loss_and_grads(trainer, folded)
    loss_b, grads_b = loss_and_grads(trainer, scored)
    assert loss_a == pytest.approx(loss_b, rel=1e-5, abs=1e-7)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=1e-4, atol=1e-7, msg=name)


def test_dropout_and_text_replies_keep_the_separate_forward(tok, tmp_path):
    model = tiny_model(tok, attention_dropout=0.1)
    trainer = trainer_for(tok, make_args(tmp_path, num_iterations=2, max_turns=2, max_new_tokens_per_turn=3), model)
    generation_batch(trainer)
    assert trainer._old_scores_source(trainer.last_episodes) == "forward"  # every training forward drops anew
    trainer.model.eval()
    assert trainer._old_scores_source(trainer.last_episodes) == "sampler"
    assert not batching.sampled_in_sample_context(trainer.last_episodes, "full", reply="text")


def test_a_peft_policys_reference_is_its_base_with_the_adapter_off(tok, tmp_path):
    from peft import LoraConfig

    args = make_args(tmp_path, num_iterations=2, max_turns=2, max_new_tokens_per_turn=3, beta=0.1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    trainer = trainer_for(tok, args, peft_config=lora)
    assert trainer.ref_model is None  # no copy of the model: the base is the reference
    batch = generation_batch(trainer)
    assert trainer._old_scores_source(trainer.last_episodes) == "sampler"
    input_ids, attention_mask, keep, mask = batching.model_inputs(batch)
    with trainer.model.disable_adapter(), torch.no_grad():
        base, _ = trainer.token_logps_and_entropy(trainer.model, input_ids, attention_mask, keep, mask)
    torch.testing.assert_close(batch["ref_per_token_logps"], base)
    policy = fresh_old_logps(trainer, batch)
    on = mask.bool()
    assert (policy[on] - base[on]).abs().max() > 1e-3  # the adapter (random, not zero) changes the policy
    assert torch.allclose(batch["old_per_token_logps"][on], policy[on], atol=2e-5, rtol=0)


needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")


@needs_vllm
def test_vllm_on_policy_computes_the_correction_in_the_loss_forward(tok, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "tiny-llama"
    tiny_model(tok, hidden_size=256, max_position_embeddings=1024).save_pretrained(folder)  # vLLM CPU: head size 64
    tok.save_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    args = make_args(
        tmp_path,
        use_vllm=True,
        vllm_mode="colocate",
        max_turns=2,
        max_new_tokens_per_turn=4,
        vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=3.0,
    )
    trainer = trainer_for(
        AutoTokenizer.from_pretrained(folder), args, model=model, env=lambda: letter_env(target=2, max_steps=3)
    )
    try:
        calls = backbone_forwards(trainer)
        folded = generation_batch(trainer)
        assert calls[0] == 0  # vLLM sampled; nothing was scored by the trainer's model
        assert "old_per_token_logps" not in folded and "importance_sampling_ratio" not in folded
        separate = dict(folded)
        separate["old_per_token_logps"] = fresh_old_logps(trainer, folded)
        separate["importance_sampling_ratio"] = trainer._correct_sampling(
            separate, separate["old_per_token_logps"], "train"
        )
        loss_a, grads_a = loss_and_grads(trainer, folded)
        loss_b, grads_b = loss_and_grads(trainer, separate)
    finally:
        trainer.close_envs()
    assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=1e-3, atol=1e-6, msg=name)
    gaps = trainer._metrics["train"]["sampling/sampling_logp_difference/max"]
    assert gaps and gaps[0] < 2e-3  # logged from the loss forward: vLLM served the current weights
