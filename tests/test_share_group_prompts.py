"""``share_group_prompts``: a prompt that rows of a micro-batch share runs once, and nothing downstream can tell.

A tiny random Llama (fp32) scores hand-built micro-batches (two groups with prompts of different lengths, a row of
its own, completions of different lengths: padding on both sides) and real generation batches of the trainer's
own rollout on the toy ``LetterEnv``: the same per-token log-probs, entropies, loss and gradients as the usual
forward, over fewer tokens; micro-batches without a shared prompt and models where sharing is not exact take the
usual path.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from test_trainer import make_args, trainer_for
from trainer_toys import letter_env, toy_run_settings
from transformers import Qwen2Config, Qwen2ForCausalLM

from trl_plugins import AgentPPOConfig, AgentPPOTrainer
from trl_plugins.batch import model_inputs, pad_samples
from trl_plugins.models import tiny_model, tiny_tokenizer
from trl_plugins.scoring import token_logps_and_entropy
from trl_plugins.shared_prompts import shared_prompt_logps_and_entropy, shared_prompt_model, shared_prompt_sets


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def embedded_tokens(model) -> list[int]:
    """A counter of the tokens the backbone runs over (its embedding's inputs) and of its forwards."""
    seen = [0, 0]

    def count(_module, args):
        seen[0] += args[0].numel()
        seen[1] += 1

    model.get_input_embeddings().register_forward_pre_hook(count)
    return seen


def hand_batch(pad_id: int) -> dict:
    """Two groups (prompts of 7 and 3 tokens), one row with a prompt of its own; completions of 1 to 8 tokens, some
    environment tokens masked out of the loss."""
    long, short = list(range(5, 12)), [12, 13, 14]
    prompts = [long, short, long, [50, 51], short, long, short]
    completions = [[20, 21, 22, 23, 24], [34], [25, 26], [60, 61, 62], [35, 36, 37], [27, 28, 29, 30, 31, 32, 33, 40],
                   [46, 47]]  # fmt: skip
    return padded_batch(prompts, completions, pad_id)


def padded_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict:
    """The trainer's padded batch of these rows; each completion's third token is an environment token (no loss)."""
    samples = []
    for prompt, completion in zip(prompts, completions, strict=True):
        n = len(completion)
        mask = [int(i != 2) for i in range(n)]
        samples.append({"prompt": prompt, "completion": completion, "mask": mask, "turn_ids": [0] * n,
                        "advantages": [1.0] * n})  # fmt: skip
    return pad_samples(samples, pad_id, "cpu")


def unshared_scores(model, batch, accelerator):
    input_ids, attention_mask, logits_to_keep, mask = model_inputs(batch)
    return token_logps_and_entropy(model, input_ids, attention_mask, logits_to_keep, mask, accelerator=accelerator)


def shared_scores(model, batch, accelerator, temperature=1.0):
    head_model = shared_prompt_model(model, accelerator)
    assert head_model is not None
    return shared_prompt_logps_and_entropy(
        head_model, batch, accelerator=accelerator, temperature=temperature,
        score_rows=lambda rows: unshared_scores(model, rows, accelerator),
    )  # fmt: skip


def both_paths(model, batch, accelerator) -> list[tuple]:
    """``(logps, entropy, gradients, backbone tokens)`` of the usual forward, then of the shared one (the same random
    weighting of the scores backpropagated through each)."""
    weights = torch.randn(batch["completion_ids"].shape)
    results = []
    for score in (unshared_scores, shared_scores):
        tokens = embedded_tokens(model)
        model.zero_grad()
        logps, entropy = score(model, batch, accelerator)
        ((logps * weights).sum() + (entropy * weights).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logps.detach(), entropy.detach(), grads, tokens[0]))
        model.get_input_embeddings()._forward_pre_hooks.clear()
    return results


def test_shared_prompt_scores_and_gradients_equal_the_unshared_forward(tok):
    torch.manual_seed(0)
    model, accelerator = tiny_model(tok).float(), Accelerator()
    batch = hand_batch(tok.pad_token_id)
    assert shared_prompt_sets(batch["prompt_ids"], batch["prompt_mask"]) == [[0, 2, 5], [1, 4, 6]]
    assert not batch["prompt_mask"].all() and not batch["completion_mask"].all()  # padding on both sides
    (logps, entropy, grads, tokens), (s_logps, s_entropy, s_grads, s_tokens) = both_paths(model, batch, accelerator)
    assert s_logps.shape == logps.shape and s_entropy.shape == entropy.shape
    torch.testing.assert_close(s_logps, logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_entropy, entropy, atol=1e-5, rtol=0)
    mask = model_inputs(batch)[3]
    assert bool((s_logps[mask == 0] == 0).all()) and bool((s_entropy[mask == 0] == 0).all())
    assert grads.keys() == s_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(s_grads[name], grads[name], atol=1e-5, rtol=1e-4)
    # the usual path: 7 rows x (7 prompt + 8 completion columns); shared: 7 + 3 prompt tokens once, the groups'
    # completions minus their last token (7 and 2 columns, 3 rows each) and the lone row (2 + 3 columns)
    assert tokens == 7 * 15
    assert s_tokens == 7 + 3 + 3 * 7 + 3 * 2 + 5


def test_a_micro_batch_without_a_shared_prompt_is_left_to_the_usual_path(tok):
    model, accelerator = tiny_model(tok), Accelerator()
    batch = hand_batch(tok.pad_token_id)
    rows = torch.tensor([0, 1, 3])  # three different prompts
    distinct = {k: v[rows] for k, v in batch.items()}
    assert shared_prompt_sets(distinct["prompt_ids"], distinct["prompt_mask"]) == []
    assert shared_prompt_logps_and_entropy(model, distinct, accelerator=accelerator, score_rows=None) is None


def test_gradient_checkpointing_with_sharing_is_warned_about(tmp_path):
    with pytest.warns(UserWarning, match="gradient_checkpointing=False"):
        make_args(tmp_path, share_group_prompts=True)  # GRPOConfig turns gradient checkpointing on by default


def test_sharing_is_refused_where_it_would_not_be_exact(tok):
    accelerator = Accelerator()
    model = tiny_model(tok)
    model.train()
    assert shared_prompt_model(model, accelerator) is model
    model.gradient_checkpointing_enable()  # transformers drops the KV cache under it while training
    assert shared_prompt_model(model, accelerator) is None
    dropping = tiny_model(tok)
    dropping.config.attention_dropout = 0.1  # one dropout mask on the prompt would stand in for G of them
    dropping.train()
    assert shared_prompt_model(dropping, accelerator) is None
    dropping.eval()
    assert shared_prompt_model(dropping, accelerator) is dropping
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    full = Qwen2ForCausalLM(Qwen2Config(**small))
    windowed = Qwen2ForCausalLM(Qwen2Config(**small, use_sliding_window=True, sliding_window=4, max_window_layers=0))
    assert shared_prompt_model(full, accelerator) is full
    assert shared_prompt_model(windowed, accelerator) is None  # its cache keeps only the window's last keys


def group_batch(trainer) -> dict:
    """A generation batch of the trainer's own rollout: groups of ``num_generations`` episodes of one task each."""
    trainer.model.train()
    groups = trainer.args.per_device_train_batch_size // trainer.num_generations
    rows = [trainer.train_dataset[g] for g in range(groups) for _ in range(trainer.num_generations)]
    torch.manual_seed(0)
    return trainer._generate_and_score_completions(rows)


def loss_grads_and_tokens(trainer, batch: dict, share: bool):
    trainer.args.share_group_prompts = share
    model = trainer.model
    tokens = embedded_tokens(model)
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.get_input_embeddings()._forward_pre_hooks.clear()
    return float(loss.detach()), grads, tokens


@pytest.mark.parametrize(
    "settings",
    [
        {"loss_hooks": ["erc", {"name": "epo"}]},  # hooks that read the entropy (with its gradient) and old entropy
        # turns as samples, a micro-batch larger than per_device_train_batch_size (scored in pieces)
        {"context_mode": "stepwise", "loss_type": "dapo"},
    ],
    ids=["full-hooks", "stepwise-pieces"],
)
def test_a_training_step_gives_the_same_loss_and_gradients_over_fewer_tokens(tok, tmp_path, settings):
    args = make_args(
        tmp_path, num_generations=4, per_device_train_batch_size=8, max_turns=2, max_new_tokens_per_turn=4, **settings
    )
    trainer = trainer_for(tok, args)
    batch = group_batch(trainer)
    assert shared_prompt_sets(batch["prompt_ids"], batch["prompt_mask"])
    assert batch["advantages"].abs().sum() > 0  # a loss with a gradient
    if settings.get("context_mode") == "stepwise":  # more turns than per_device_train_batch_size: scored in pieces
        assert batch["completion_ids"].size(0) > args.per_device_train_batch_size
    loss, grads, tokens = loss_grads_and_tokens(trainer, batch, share=False)
    s_loss, s_grads, s_tokens = loss_grads_and_tokens(trainer, batch, share=True)
    assert s_loss == pytest.approx(loss, abs=1e-5)
    assert grads.keys() == s_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(s_grads[name], grads[name], atol=1e-5, rtol=1e-4)
    assert s_tokens[0] < tokens[0]


def test_trainer_takes_the_usual_path_when_no_prompt_is_shared(tok, tmp_path):
    args = make_args(tmp_path, num_generations=4, max_turns=2, share_group_prompts=True, gradient_checkpointing=False)
    trainer = trainer_for(tok, args)
    batch = group_batch(trainer)
    last = batch["prompt_ids"][:, -1:]
    batch["prompt_ids"] = torch.cat([batch["prompt_ids"][:, :-1], last + torch.arange(4)[:, None]], 1)
    assert shared_prompt_sets(batch["prompt_ids"], batch["prompt_mask"]) == []
    loss, grads, tokens = loss_grads_and_tokens(trainer, batch, share=False)
    s_loss, s_grads, s_tokens = loss_grads_and_tokens(trainer, batch, share=True)
    assert s_tokens == tokens  # one forward over the whole micro-batch, as without sharing
    assert tokens[1] == 1
    assert s_loss == loss
    for name in grads:
        assert torch.equal(s_grads[name], grads[name])


def test_train_with_shared_prompts_takes_the_same_step(tok, tmp_path):
    weights, tokens = [], []
    for share in (False, True):
        args = make_args(
            tmp_path / str(share),
            max_steps=1,
            max_turns=2,
            share_group_prompts=share,
            gradient_checkpointing=False,
            optim="sgd",  # Adam's normalisation would blow float rounding of near-zero gradients up to the lr
        )
        torch.manual_seed(0)
        trainer = trainer_for(tok, args, model=tiny_model(tok).float())
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        tokens.append(embedded_tokens(trainer.model))
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
        assert any(not torch.equal(before[n], weights[-1][n]) for n in before), "the step changed no weight"
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=1e-5, rtol=1e-4)
    assert tokens[1][0] < tokens[0][0]  # the same rollouts (same seed); the loss forward ran over fewer tokens


def test_ppo_policy_scores_share_the_prompt_and_the_value_head_is_unchanged(tok, tmp_path):
    settings = toy_run_settings(tmp_path, learning_rate=1e-2, per_device_train_batch_size=8, beta=0.0)
    args = AgentPPOConfig(**settings, ppo={"critic": "head"})
    trainer = AgentPPOTrainer(
        tiny_model(tok), args=args, processing_class=tok, env_factory=lambda: letter_env(target=2)
    )
    batch = group_batch(trainer)
    assert shared_prompt_sets(batch["prompt_ids"], batch["prompt_mask"])
    loss, grads, tokens = loss_grads_and_tokens(trainer, batch, share=False)
    s_loss, s_grads, s_tokens = loss_grads_and_tokens(trainer, batch, share=True)
    assert s_loss == pytest.approx(loss, abs=1e-5)
    assert any("value_head" in name for name in grads) and grads.keys() == s_grads.keys()
    for name in grads:
        torch.testing.assert_close(s_grads[name], grads[name], atol=1e-5, rtol=1e-4)
    assert s_tokens[0] < tokens[0]


def test_prompts_that_begin_alike_run_their_common_beginning_once(tok):
    """Two groups whose prompts share their first 20 tokens (a system prompt, say), and a row of its own: the common
    beginning runs once for both groups; scores and gradients are the usual forward's."""
    torch.manual_seed(0)
    model, accelerator = tiny_model(tok).float(), Accelerator()
    system = list(range(5, 25))
    first, second = system + [30, 31, 32], system + [40, 41]
    prompts = [first, second, first, second, system + [50]]
    completions = [[60, 61, 62, 63], [64, 65], [66, 67, 68], [69, 70, 71, 72, 73], [74, 75]]
    batch = padded_batch(prompts, completions, tok.pad_token_id)
    (logps, entropy, grads, tokens), (s_logps, s_entropy, s_grads, s_tokens) = both_paths(model, batch, accelerator)
    torch.testing.assert_close(s_logps, logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_entropy, entropy, atol=1e-5, rtol=0)
    for name in grads:
        torch.testing.assert_close(s_grads[name], grads[name], atol=1e-5, rtol=1e-4)
    # the common 20 tokens once, then each group's remaining 3 and 2 prompt tokens, the groups' completions minus
    # their last token (2 rows x 3 and 2 rows x 4 columns) and the lone row whole (21 prompt + 2 completion columns,
    # the usual path: it shares no prompt)
    assert s_tokens == 20 + 3 + 2 + 2 * 3 + 2 * 4 + (21 + 2)
    # min_common_prefix above the common length: each group's prompt runs whole, as before
    head_model = shared_prompt_model(model, accelerator)
    tokens = embedded_tokens(model)
    shared_prompt_logps_and_entropy(head_model, batch, accelerator=accelerator, min_common_prefix=21,
                                    score_rows=lambda rows: unshared_scores(model, rows, accelerator))  # fmt: skip
    model.get_input_embeddings()._forward_pre_hooks.clear()
    assert tokens[0] == 23 + 22 + 2 * 3 + 2 * 4 + (21 + 2)
