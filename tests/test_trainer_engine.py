"""The trainer on the rollout engine: the carried KV cache, step-wise micro-batches, the prompt budget."""

from __future__ import annotations

import pytest
import torch
from test_trainer import make_args, trainer_for
from trainer_toys import letter_env

from agentgym_envs.generation.transformers import TransformersBackend
from trl_plugins.errors import TrainerConfigError
from trl_plugins.hooks import LossHook
from trl_plugins.models import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


class RowCounter(LossHook):
    """Records how many samples each loss forward scored."""

    name = "rows"

    def __init__(self):
        self.rows: list[int] = []

    def transform_advantages(self, ctx):
        self.rows.append(int(ctx.logps.size(0)))
        return ctx.advantages


def test_the_trainer_generates_through_the_backend_with_a_carried_cache(tok, tmp_path):
    trainer = trainer_for(tok, make_args(tmp_path, max_steps=1, max_turns=3, max_new_tokens_per_turn=3))
    backend = trainer.generation_backend
    assert isinstance(backend, TransformersBackend)
    assert set(backend.settings.stop_ids) == set(trainer.eos_token_ids) == trainer.chat_format.eos_ids
    trainer.train()
    assert backend.reused_tokens > backend.prefilled_tokens  # later turns came from the cache
    assert backend.cached_keys == []
    assert any(len(ep.turns) > 1 for ep in trainer.last_episodes)


def test_stepwise_micro_batches_are_bounded_and_give_the_same_gradient(tok, tmp_path):
    hook = RowCounter()
    args = make_args(
        tmp_path, max_steps=1, context_mode="stepwise", history_turns=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, max_turns=3,
    )
    trainer = trainer_for(tok, args, hooks=[hook], env=lambda: letter_env(target=9, max_steps=3))
    forward_rows: list[int] = []

    def count_rows(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        forward_rows.append(int(ids.size(0)))

    trainer.model.model.register_forward_pre_hook(count_rows, with_kwargs=True)  # every forward of the backbone
    trainer.train()
    batch = trainer._buffered_inputs[0]
    rows = batch["completion_ids"].size(0)
    assert rows > 4  # 4 episodes of up to 3 turns: more samples than the batch size
    assert forward_rows and max(forward_rows) <= 4  # the model only ever sees pieces
    assert hook.rows == [rows]  # the loss (and its hooks) see the whole micro-batch, once
    model = trainer.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(loss_fn):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in params]), loss.detach()

    whole, whole_loss = gradient(lambda: trainer._compute_loss(model, batch))
    split, split_loss = gradient(lambda: trainer.compute_loss(model, batch) * 1.0)
    scale = trainer._returned_loss_scale(None)
    # Earlier pieces were backpropagated inside compute_loss with the Trainer's scale; the returned loss is unscaled.
    if scale != 1.0:
        pytest.skip("the Trainer scales the returned loss; the comparison below assumes it does not")
    assert torch.allclose(split_loss, whole_loss, atol=1e-6)
    assert torch.allclose(split, whole, atol=1e-6, rtol=1e-4)


def test_a_prompt_budget_that_cannot_hold_the_instructions_fails_at_construction(tok, tmp_path):
    with pytest.raises(TrainerConfigError, match="format instructions alone take"):
        trainer_for(tok, make_args(tmp_path, max_context_tokens=40, max_new_tokens_per_turn=8))


def _textcraft_trainer(tok, tmp_path, workers: str):
    from trl_plugins.models import tiny_model
    from trl_plugins.trainer import AgentGRPOTrainer

    args = make_args(
        tmp_path / workers, env_id="agentgym/TextCraft-v0", env_workers=workers, env_processes=2, max_steps=1,
        max_turns=3, max_new_tokens_per_turn=4, max_context_tokens=4000,
    )
    return AgentGRPOTrainer(tiny_model(tok), args=args, processing_class=tok)


def test_environments_step_in_worker_processes_with_the_same_episodes(tok, tmp_path):
    from process_checks import descendants

    from agentgym_envs.workers import ProcessWorker

    before = descendants()
    local = _textcraft_trainer(tok, tmp_path, "inprocess")
    local.train()
    remote = _textcraft_trainer(tok, tmp_path, "process")
    assert remote.env_worker_kind == "process" and remote.env_pool.envs == []  # the probe env was closed
    remote.train()  # train() closes the environments (and the worker processes) at its end
    assert remote.env_pool.worker_groups == [] and remote.env_pool.envs == []
    assert [ep.completion() for ep in remote.last_episodes] == [ep.completion() for ep in local.last_episodes]
    assert [ep.total_return for ep in remote.last_episodes] == [ep.total_return for ep in local.last_episodes]
    # During training the pool held process workers: build it again to look, then close it.
    workers = remote.env_pool.take(2)
    assert all(isinstance(w, ProcessWorker) for w in workers)
    remote.close_envs()
    assert descendants() <= before, "worker processes left after close_envs()"


def test_env_worker_settings_are_checked(tmp_path):
    with pytest.raises(TrainerConfigError, match="env_workers"):
        make_args(tmp_path, env_workers="threads")
    with pytest.raises(TrainerConfigError, match="env_urls"):
        make_args(tmp_path, env_urls="")
    assert make_args(tmp_path, env_urls="ws://a:1, ws://b:2").env_urls == ["ws://a:1", "ws://b:2"]
