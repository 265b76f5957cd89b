"""Warm start: the expert dataset is rendered exactly as the trainer renders rollouts, and SFTTrainer takes it."""

from __future__ import annotations

import pytest

pytest.importorskip("textworld")

from agentgym_envs.engine import ChatFormat, RolloutConfig, run_episodes  # noqa: E402
from agentgym_envs.registry import make_env  # noqa: E402
from trl_plugins.models import tiny_model, tiny_tokenizer  # noqa: E402
from trl_plugins.sft import expert_dataset  # noqa: E402

ENV = "agentgym/TextWorld-w2-o3-q4-v0"


def test_expert_rows_match_trainer_rendering(tmp_path):
    data = expert_dataset(ENV, episodes=1, env_kwargs={"seed_range": (30001, 30001)})
    row = data[0]
    assert row["won"] and row["messages"][-1]["role"] == "assistant"
    tok = tiny_tokenizer()
    fmt = ChatFormat(tok)
    replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]

    def replay(contexts, max_new_tokens):
        text = replay.replies.pop(0)
        return [tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _ in contexts]

    replay.replies = list(replies)
    env = make_env(ENV, split="train", seed_range=(30001, 30001))
    ep = run_episodes([env], [(30001, row["seed"], 0)], replay, fmt, RolloutConfig(max_new_tokens=64, max_turns=20))[0]
    env.close()
    assert ep.won
    # The trainer's conversation, without the final observation, is the SFT row.
    assert ep.messages[:-1] == row["messages"]
    # And its tokens are the chat template of that conversation.
    ids, _, _ = ep.completion()
    text = fmt.render(row["messages"])
    assert tok.decode(ep.prompt_ids + ids) + fmt.close_after_eos == text

    from trl import SFTConfig, SFTTrainer

    model = tiny_model(tok)
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=1, report_to="none",
        save_strategy="no", bf16=False, disable_tqdm=True,
    )
    trainer = SFTTrainer(model, args=args, train_dataset=data.select_columns(["messages"]), processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1
