"""AgentGRPOTrainer on a tiny random model and a real (toy) TextEnv: steps, masks, resume, LoRA, learning."""

from __future__ import annotations

import pytest
import torch
from trainer_toys import letter_env, toy_run_settings

from trl_plugins.batch import split_batch
from trl_plugins.config import AgentGRPOConfig
from trl_plugins.hooks import LossHook
from trl_plugins.models import tiny_model, tiny_tokenizer
from trl_plugins.trainer import AgentGRPOTrainer

ROLLOUT_METRICS = (
    "env/success_rate",
    "env/mean_return",
    "env/turns_per_episode",
    "env/invalid_action_rate",
    "env/tokens_per_turn",
    "env/truncation_rate",
    "entropy/turn_0",
    "entropy",
    "clip_ratio/region_mean",
    "rollout/tokens_per_second",
    "reward",
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def make_args(tmp_path, **overrides) -> AgentGRPOConfig:
    return AgentGRPOConfig(**toy_run_settings(tmp_path, **{"learning_rate": 1e-2, "loss_type": "grpo", **overrides}))


class CountingHook(LossHook):
    """A real hook: scales advantages, counts calls, keeps state across checkpoints."""

    name = "counting"

    def __init__(self):
        self.calls: list[str] = []
        self.steps_done = 0

    saw_entropy = saw_old_entropy = False

    def transform_advantages(self, ctx):
        self.calls.append("advantages")
        if ctx.entropy is not None and ctx.entropy.requires_grad:
            self.saw_entropy = True
        if ctx.old_entropy is not None and ctx.old_entropy.shape == ctx.logps.shape:
            self.saw_old_entropy = True
        return ctx.advantages * 1.0

    def transform_token_loss(self, ctx, token_loss):
        self.calls.append("token_loss")
        assert ctx.mask.shape == token_loss.shape
        return token_loss

    def extra_loss(self, ctx):
        self.calls.append("extra")
        return None

    def end_step(self, step):
        self.steps_done += 1

    def metrics(self):
        return {"steps_done": float(self.steps_done)}

    def state_dict(self):
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state):
        self.steps_done = state["steps_done"]


def trainer_for(tok, args, model=None, hooks=None, env=None, **kw):
    return AgentGRPOTrainer(
        model if model is not None else tiny_model(tok),
        args=args,
        processing_class=tok,
        env_factory=env or (lambda: letter_env(target=2, max_steps=3)),
        loss_hooks=hooks,
        **kw,
    )


def test_steps_change_weights_and_log_every_metric(tok, tmp_path):
    # gradient accumulation 2 and num_iterations 2: old log-probs are computed and reused across updates
    # plus the real ERC (needs the old policy's entropy) and EPO (needs the entropy with its gradient) hooks
    args = make_args(
        tmp_path, gradient_accumulation_steps=2, num_iterations=2, gradient_checkpointing=True, max_turns=2,
        loss_hooks=["erc", {"name": "epo"}],
    )
    hook = CountingHook()
    trainer = trainer_for(tok, args, hooks=[hook])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "training did not change any weight"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for key in ROLLOUT_METRICS:
        assert key in logs[0], key
    assert logs[-1]["hooks/counting/steps_done"] >= 1
    assert hook.steps_done == 1  # one generation batch (RL step) over the 2 optimizer steps of num_iterations=2
    assert hook.calls[:3] == ["advantages", "token_loss", "extra"]
    assert [h.name for h in trainer.loss_hooks] == ["erc", "epo", "counting"]
    assert hook.saw_entropy and hook.saw_old_entropy
    assert any(k.startswith("hooks/erc/") for k in logs[-1]) and any(k.startswith("hooks/epo/") for k in logs[-1])


def test_environment_tokens_carry_no_loss(tok, tmp_path):
    trainer = trainer_for(tok, make_args(tmp_path, per_device_train_batch_size=8, num_generations=4))
    rows = [trainer.train_dataset[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    batch = trainer._generate_and_score_completions(rows)
    env_tokens = (batch["completion_mask"] * (1 - batch["tool_mask"])).bool()
    assert env_tokens.any(), "the episodes should have environment tokens"
    # Environment tokens are the tokens appended after each turn, exactly.
    for row, ep in enumerate(trainer.last_episodes):
        ids, mask, _ = ep.completion()
        assert batch["tool_mask"][row, : len(mask)].tolist() == mask
        assert batch["completion_ids"][row, : len(ids)].tolist() == ids
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, batch)
    # Any advantage placed on environment tokens changes nothing.
    poisoned = dict(batch, advantages=batch["advantages"] + 100.0 * env_tokens.float())
    assert torch.allclose(trainer._compute_loss(trainer.model, poisoned), loss)
    # Their log-probabilities are not even computed: zero and without gradient.
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    mask = (batch["completion_mask"] * batch["tool_mask"]).float()
    logps, entropy = trainer.token_logps_and_entropy(trainer.model, ids, attn, batch["completion_ids"].size(1), mask)
    assert torch.all(logps[env_tokens] == 0) and torch.all(entropy[env_tokens] == 0)
    grad = torch.autograd.grad(logps.sum(), next(p for p in trainer.model.parameters() if p.requires_grad), allow_unused=True)
    assert grad[0] is not None
    # Statistics use model tokens only: the logged entropy is the mean over them.
    trainer._metrics["train"].clear()
    trainer._compute_loss(trainer.model, batch)
    expected = (entropy.detach() * mask).sum() / mask.sum()
    assert abs(trainer._metrics["train"]["entropy"][-1] - expected.item()) < 1e-4


def test_resume_from_checkpoint(tok, tmp_path):
    args = make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    first = trainer_for(tok, args, hooks=[CountingHook()])
    first.train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert (checkpoint / "loss_hooks.pt").exists()
    hook = CountingHook()
    second = trainer_for(tok, args, hooks=[hook])
    second.train(resume_from_checkpoint=str(checkpoint))
    assert second.state.global_step == 2
    assert hook.steps_done == 2  # 1 restored from the checkpoint + 1 new step
    final = {n: p for n, p in first.model.named_parameters()}
    # Same seed, same data order: resuming reproduces the uninterrupted run's weights closely.
    diffs = [float((p - final[n]).abs().max()) for n, p in second.model.named_parameters()]
    assert max(diffs) < 5e-2


def test_lora_trains_only_the_adapter(tok, tmp_path):
    from peft import LoraConfig

    args = make_args(tmp_path, max_steps=1, learning_rate=5e-2)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = trainer_for(tok, args, peft_config=peft_config)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)


def test_stepwise_gigpo_and_dr_grpo_run(tok, tmp_path):
    args = make_args(
        tmp_path, max_steps=1, context_mode="stepwise", history_turns=1, advantage_estimator="gigpo", loss_type="dr_grpo"
    )
    trainer = trainer_for(tok, args)
    trainer.train()
    assert "entropy/turn_1" in trainer.state.log_history[0]


def test_unsupported_settings_raise_clear_errors(tok, tmp_path):
    with pytest.raises(NotImplementedError, match="vllm_enable_sleep_mode"):  # use_vllm itself: test_vllm_trainer
        trainer_for(tok, make_args(tmp_path, use_vllm=True, vllm_enable_sleep_mode=True))
    with pytest.raises(ValueError, match="loss_type"):
        make_args(tmp_path, loss_type="nope")
    with pytest.raises(ValueError, match="unknown loss hook"):
        trainer_for(tok, make_args(tmp_path, loss_hooks=["no-such-hook"]))


def test_split_batch_uneven():
    parts = split_batch({"x": torch.arange(7), "n": torch.tensor(7)}, 3, seed=1)
    assert sorted(len(p["x"]) for p in parts) == [2, 2, 3]
    assert sorted(torch.cat([p["x"] for p in parts]).tolist()) == list(range(7))


def _expected_reward(trainer, tok) -> float:
    """Probability that the policy's one-token reply contains an 'e' in the first state (= expected reward)."""
    env = letter_env(target=1, max_steps=1)
    obs, _ = env.reset(seed=0, options={"task": 0})
    from agentgym_envs.prompts import episode_messages

    ids = trainer.chat_format.prompt_ids(episode_messages(env, obs, trainer.args.prompt_config()))
    with torch.no_grad():
        logits = trainer.model(input_ids=torch.tensor([ids])).logits[0, -1]
    probs = torch.softmax(logits.float(), -1)
    hits = torch.tensor(["e" in tok.decode([i]).lower() for i in range(len(tok))])
    return float(probs[hits[: probs.numel()]].sum())


def test_reward_rises_on_a_learnable_environment(tok, tmp_path):
    torch.manual_seed(0)
    args = make_args(
        tmp_path,
        max_steps=8,
        num_generations=8,
        per_device_train_batch_size=16,
        max_turns=1,
        max_new_tokens_per_turn=1,
        learning_rate=5e-2,
        gradient_checkpointing=False,
    )
    trainer = trainer_for(tok, args, env=lambda: letter_env(target=1, max_steps=1))
    start = _expected_reward(trainer, tok)
    trainer.train()
    end = _expected_reward(trainer, tok)
    returns = [h["env/mean_return"] for h in trainer.state.log_history if "env/mean_return" in h]
    assert end > start + 0.25, (start, end)
    assert sum(returns[-3:]) / 3 > sum(returns[:3]) / 3, returns


def test_run_config_file(tmp_path):
    from trl_plugins.config import RunSpec

    path = tmp_path / "run.yaml"
    path.write_text(
        "model: tiny\nlora: {r: 4}\ntrainer:\n  output_dir: " + str(tmp_path / "out") + "\n  max_turns: 5\n"
        "  env_kwargs: {seed_range: [30001, 30002]}\n  advantage_estimator: rloo\n"
    )
    spec = RunSpec.from_file(path)
    assert (spec.model, spec.lora, spec.trainer.max_turns, spec.trainer.advantage_estimator) == ("tiny", {"r": 4}, 5, "rloo")
    path.write_text("trainer: {no_such_setting: 1}\n")
    with pytest.raises(ValueError, match="no_such_setting"):
        RunSpec.from_file(path)
