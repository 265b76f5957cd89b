"""The trainer's loss bookkeeping across steps: EPO's history per RL step and never from evaluation, and the
GRPOConfig options that apply to agent batches (mask_truncated_completions, mask_truncated_episodes) or are refused at construction."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trainer_toys import letter_env, toy_run_settings

from trl_plugins.batch import masked_turns
from trl_plugins.config import AgentGRPOConfig
from trl_plugins.hooks import EPOHook
from trl_plugins.models import tiny_model, tiny_tokenizer
from trl_plugins.trainer import AgentGRPOTrainer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def make_trainer(tok, tmp_path, hooks=None, **overrides) -> AgentGRPOTrainer:
    settings = toy_run_settings(
        tmp_path,
        **{
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "max_steps": 4,
            "max_turns": 2,
            "max_context_tokens": 300,
            "loss_type": "grpo",
            **overrides,
        },
    )
    return AgentGRPOTrainer(
        tiny_model(tok),
        args=AgentGRPOConfig(**settings),
        processing_class=tok,
        env_factory=lambda: letter_env(target=2, max_steps=3),
        loss_hooks=hooks,
    )


class RecordingEPO(EPOHook):
    """The real EPO hook, recording the RL step of every history update and of every loss it computes."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ended: list[int] = []
        self.loss_steps: list[int] = []

    def extra_loss(self, ctx):
        self.loss_steps.append(ctx.step)
        return super().extra_loss(ctx)

    def end_step(self, step):
        self.ended.append(step)
        super().end_step(step)


def test_epo_history_gets_one_entry_per_generation_batch(tok, tmp_path):
    # 4 optimizer steps with num_iterations=2: two generation batches (RL steps), each trained twice.
    hook = RecordingEPO(coef=0.1)
    trainer = make_trainer(tok, tmp_path, hooks=[hook], num_iterations=2, max_steps=4)
    trainer.train()
    assert hook.ended == [0, 1]
    assert hook.history.count == 2
    assert hook.loss_steps == [0, 0, 1, 1]  # beta_k and the reference count RL steps too
    # with gradient accumulation the same holds: 2 optimizer steps of GA=2, num_iterations=1 = 2 RL steps
    hook = RecordingEPO(coef=0.1)
    trainer = make_trainer(tok, tmp_path, hooks=[hook], gradient_accumulation_steps=2, max_steps=2)
    trainer.train()
    assert hook.ended == [0, 1] and hook.history.count == 2
    assert hook.loss_steps == [0, 0, 1, 1]


def test_evaluation_does_not_feed_epo_history(tok, tmp_path):
    eval_rows = Dataset.from_dict({"task_index": [0, 0], "seed": [5, 5], "prompt": ["", ""]})
    hook = EPOHook(coef=0.1)
    trainer = make_trainer(tok, tmp_path, hooks=[hook], max_steps=1, per_device_eval_batch_size=2)
    trainer.eval_dataset = eval_rows
    trainer.train()
    history = (hook.history.total, hook.history.count)
    assert history[1] == 1
    trainer.evaluate(eval_rows)
    assert (hook.history.total, hook.history.count) == history
    assert float(hook._step_count) == 0.0  # nothing pending for the next training step either


def test_mask_truncated_completions_is_trls_and_masking_step_limited_episodes_is_opt_in(tok, tmp_path):
    rows = lambda t: [t.train_dataset[i] for i in (0, 0, 1, 1)]  # noqa: E731
    # max_turns=1 with a target of 2 points: every episode is cut by the turn limit
    plain = make_trainer(tok, tmp_path, per_device_train_batch_size=4, max_turns=1)
    batch = plain._generate_and_score_completions(rows(plain))
    assert all(ep.truncated for ep in plain.last_episodes)
    assert (batch["completion_mask"] * batch["tool_mask"]).sum() > 0
    masked = make_trainer(tok, tmp_path, per_device_train_batch_size=4, max_turns=1, mask_truncated_episodes=True)
    batch = masked._generate_and_score_completions(rows(masked))
    assert all(ep.truncated for ep in masked.last_episodes)
    assert (batch["completion_mask"] * batch["tool_mask"]).sum() == 0 and int(batch["num_items_in_batch"]) == 0
    # TRL's meaning: only turns cut by the token budget (and context-budget episodes) lose their loss
    budget = make_trainer(tok, tmp_path, per_device_train_batch_size=4, max_turns=8, mask_truncated_completions=True)
    batch = budget._generate_and_score_completions(rows(budget))
    kept = (batch["completion_mask"] * batch["tool_mask"]).sum(-1)
    for ep, n in zip(budget.last_episodes, kept.tolist(), strict=True):
        masked_out = masked_turns(ep, token_budget=True)
        assert n == sum(len(turn.action_ids) for t, turn in enumerate(ep.turns) if t not in masked_out)
    assert any(turn.hit_token_limit for ep in budget.last_episodes for turn in ep.turns)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("reward_weights", [2.0], "reward_weights"),
        ("log_completions", True, "log_completions"),
        ("max_tool_calling_iterations", 3, "max_tool_calling_iterations"),
    ],
)
def test_grpo_options_that_do_not_apply_are_refused(tok, tmp_path, option, value, match):
    with pytest.raises(NotImplementedError, match=match):
        make_trainer(tok, tmp_path, **{option: value})


def test_gspo_setting_reaches_the_loss(tok, tmp_path):
    trainer = make_trainer(tok, tmp_path, importance_sampling_level="sequence", num_iterations=2)
    assert trainer.importance_sampling_level == "sequence"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
