"""Subclassing AgentGRPOTrainer: a custom advantage and a logged extra metric.

    .venv/bin/python examples/custom_trainer.py                  # one step with a tiny random model
    .venv/bin/python examples/custom_trainer.py --steps 5 --output-dir runs/custom

Measured on a 2-core CPU: about 15 s, most of it importing torch and TRL (the first run also generates the
TextWorld game, which adds seconds; a loaded machine can take twice as long).
"""

from __future__ import annotations

import argparse

import torch

from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
from trl_plugins.advantages import rloo_advantages
from trl_plugins.models import tiny_model, tiny_tokenizer


class ShortEpisodeTrainer(AgentGRPOTrainer):
    """RLOO on returns minus a small cost per turn; every turn of an episode gets its episode's advantage."""

    turn_cost = 0.01

    def episode_advantages(self, episodes):
        returns = [ep.total_return - self.turn_cost * len(ep.turns) for ep in episodes]
        adv = rloo_advantages(returns, [ep.group for ep in episodes])
        self._metrics["train"]["custom/mean_shaped_return"].append(float(torch.tensor(returns).mean()))
        return [adv[i].repeat(len(ep.turns)) for i, ep in enumerate(episodes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1, help="training steps (default: 1)")
    parser.add_argument("--output-dir", default="runs/custom-example", help="run folder (default: runs/custom-example)")
    cli = parser.parse_args()
    tokenizer = tiny_tokenizer()
    args = AgentGRPOConfig(
        output_dir=cli.output_dir, env_id="agentgym/TextWorld-w2-o3-q4-v0",
        env_kwargs={"seed_range": (30001, 30001)}, num_generations=2, per_device_train_batch_size=2,
        max_turns=2, max_new_tokens_per_turn=8, max_context_tokens=1024, max_steps=cli.steps, report_to="none",
        save_strategy="no", gradient_checkpointing=False,
    )
    trainer = ShortEpisodeTrainer(tiny_model(tokenizer), args=args, processing_class=tokenizer)
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[0].items() if k.startswith(("custom/", "env/"))})


if __name__ == "__main__":
    main()
