"""The trainer in two processes, checked against one (run by ``tests/test_distributed.py``).

Launched with ``accelerate launch --multi_gpu --num_processes 2`` on CPU (torchrun, gloo), each process:

1. trains one step on TextCraft with GRPO (``scale_rewards="batch"``) and the EPO, ERC and AEPO hooks, saving a
   checkpoint; a second trainer resumes from it and trains a second step;
2. on the letter game of ``trainer_toys`` (a random model's rewards vary there, so advantages are not all 0) trains
   one step, then plays a probe batch in which a group is split across the two processes, perturbs the weights (so
   the ratio, the clips and ERC's band are active), computes the loss and backpropagates it (DDP all-reduces the
   gradients), for GRPO and for GiGPO, and steps EPO's history;
3. trains one step with AEPO's branching rollout (whole groups per process) and probes it too;
4. trains one step of ``AgentPPOTrainer`` on the letter game and probes it with the split group (advantages
   whitened over the global batch, value loss, gradients of the policy and the value head);

and writes what it saw to ``<out>/rank<r>.pt``.  :func:`replay_probe` recomputes a probe in one process holding the
global batch (the recorded episodes of both processes), which the test compares with it.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import torch
from trainer_toys import letter_env

from agentgym_envs.engine import RolloutStats
from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer, AgentPPOTrainer
from trl_plugins.aepo import AEPOBranchConfig, AEPOConfig
from trl_plugins.distributed import rank_seed
from trl_plugins.errors import TrainerConfigError

GROUP = 2  # num_generations
PER_DEVICE = 3  # a generation batch of 3 groups over 2 processes: the middle group is split
#: The PPO probe's settings (no loss hooks: they are probed with GRPO; this one is about the critic's statistics).
PPO_SETTINGS: dict[str, Any] = {"loss_hooks": [], "ppo": {"level": "token", "whiten": True, "value_clip": 0.2}}


def make_trainer(model: str, out: Path, letters: bool = False, cls: type = AgentGRPOTrainer, **overrides: Any):
    """A trainer on TextCraft, or (``letters``) on the test's letter game, whose random-model rewards vary."""
    config_class = cls.config_class
    if not letters:
        return cls(model, args=make_args(out, config_class, **overrides))
    overrides = {"max_turns": 3, "max_new_tokens_per_turn": 3, "max_context_tokens": 400, **overrides}
    args = make_args(out, config_class, **overrides)
    return cls(model, args=args, env_factory=lambda: letter_env(target=2, max_steps=3))


def make_args(out: Path, config_class: type[AgentGRPOConfig] = AgentGRPOConfig, **overrides: Any) -> AgentGRPOConfig:
    settings: dict[str, Any] = dict(
        output_dir=str(out),
        env_id="agentgym/TextCraft-v0",
        env_workers="inprocess",
        num_generations=GROUP,
        per_device_train_batch_size=PER_DEVICE,
        max_steps=1,
        max_turns=2,
        max_new_tokens_per_turn=4,
        max_context_tokens=4000,
        learning_rate=1e-2,
        loss_type="grpo",
        scale_rewards="batch",
        loss_hooks=["epo", "erc", "aepo"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        use_cpu=True,
    )
    settings.update(overrides)
    return config_class(**settings)


def probe_rows(trainer: AgentGRPOTrainer, per_device: int, num_processes: int) -> list[dict[str, Any]]:
    """The global generation batch as TRL's sampler lays it out: each task repeated ``num_generations`` times."""
    dataset = trainer.train_dataset
    groups = per_device * num_processes // trainer.num_generations
    return [dict(dataset[g]) for g in range(groups) for _ in range(trainer.num_generations)]


def perturb(model: Any) -> None:
    """The same small change of every weight in every process (the policy moved since the batch was scored)."""
    with torch.no_grad():
        for k, (_, p) in enumerate(sorted(model.named_parameters())):
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))


def per_turn_advantages(batch: dict[str, Any]) -> list[list[float]]:
    """Each sample's advantage of each turn, read off the batch the loss sees."""
    out = []
    model_tokens = batch["completion_mask"] * batch["tool_mask"]
    for adv, turns, mask in zip(batch["advantages"], batch["turn_ids"], model_tokens, strict=True):
        per_turn = {int(t): float(a) for a, t, m in zip(adv, turns, mask, strict=True) if m > 0}
        out.append([per_turn[t] for t in sorted(per_turn)])
    return out


def model_token_values(batch: dict[str, Any], key: str) -> list[list[float]]:
    """Each sample's ``batch[key]`` on its model tokens (PPO's token-level advantages and returns)."""
    model_tokens = batch["completion_mask"] * batch["tool_mask"]
    rows = zip(batch[key], model_tokens, strict=True)
    return [[float(v) for v, m in zip(row, mask, strict=True) if m > 0] for row, mask in rows]


def probe(trainer: AgentGRPOTrainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Play ``rows``, perturb the weights, compute the loss and its (all-reduced) gradient, step the hooks."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.train()
    batch = trainer._generate_and_score_completions(rows)
    episodes = list(trainer.last_episodes)
    perturb(model)
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model_wrapped, batch)
    trainer.accelerator.backward(loss)
    grads = {n: p.grad.detach().clone() for n, p in sorted(model.named_parameters()) if p.grad is not None}
    step, _ = trainer.rl_step()
    for hook in trainer.loss_hooks:
        hook.end_step(step)
    found = {
        "episodes": episodes,
        "advantages": per_turn_advantages(batch),
        "loss": float(loss.detach()),
        "grads": grads,
        "epo_history": next((h.state_dict() for h in trainer.loss_hooks if h.name == "epo"), None),
        "turn_entropy": {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith("entropy/turn_")},
    }
    if "returns" in batch:  # PPO: the critic's GAE targets and the whitened token advantages
        found["token_advantages"] = model_token_values(batch, "advantages")
        found["returns"] = model_token_values(batch, "returns")
    return found


def snapshot(trainer: AgentGRPOTrainer) -> dict[str, Any]:
    """What a one-process replay needs to stand where this trainer stands: weights, hook states, step counters."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "weights": {n: p.detach().clone() for n, p in model.state_dict().items()},
        "hooks": {h.name: h.state_dict() for h in trainer.loss_hooks},
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    out = Path(options.out)
    record: dict[str, Any] = {}

    # 1. TextCraft: one step with a checkpoint saved by both processes, then a resumed second step
    first = make_trainer(options.model, out / "run", save_strategy="steps", save_steps=1)
    rank, world = first.accelerator.process_index, first.accelerator.num_processes
    record.update(rank=rank, world=world, distributed_type=str(first.accelerator.distributed_type))
    record["torch_seed"] = torch.initial_seed()
    record["aepo_draw"] = first._aepo_rng.random()
    first.train()
    record["first_epo_count"] = next(h.history.count for h in first.loss_hooks if h.name == "epo")
    resumed = make_trainer(options.model, out / "run", max_steps=2)
    record["resumed_torch_seed"] = torch.initial_seed()
    resumed.train(resume_from_checkpoint=str(out / "run" / "checkpoint-1"))
    record["resumed_global_step"] = resumed.state.global_step
    record["resumed_epo_count"] = next(h.history.count for h in resumed.loss_hooks if h.name == "epo")

    # 2. the letter game (rewards vary): one step, then probes with a split group, GRPO (batch-scaled) and GiGPO
    letters = make_trainer(options.model, out / "letters", letters=True)
    letters.train()
    rows = probe_rows(letters, PER_DEVICE, world)
    mine = rows[rank * PER_DEVICE : (rank + 1) * PER_DEVICE]
    for estimator in ("grpo", "gigpo"):
        letters.args.advantage_estimator = estimator
        before = snapshot(letters)
        record[estimator] = {"before": before, "rows": rows, **probe(letters, mine)}

    # 3. AEPO's branching rollout: whole groups per process (a split group is refused), one step, then a probe
    branching = AEPOConfig(branching=AEPOBranchConfig(p_branch=0.5))
    try:
        make_trainer(options.model, out / "split", letters=True, aepo=branching)
        record["split_branching_error"] = None
    except TrainerConfigError as error:
        record["split_branching_error"] = str(error)
    aepo = make_trainer(options.model, out / "aepo", letters=True, aepo=branching, per_device_train_batch_size=2)
    aepo.train()
    rows = probe_rows(aepo, 2, world)
    record["aepo"] = {"before": snapshot(aepo), "rows": rows, **probe(aepo, rows[rank * 2 : (rank + 1) * 2])}

    # 4. PPO: one step, then a probe with the split group
    ppo = make_trainer(options.model, out / "ppo", letters=True, cls=AgentPPOTrainer, **PPO_SETTINGS)
    ppo.train()
    rows = probe_rows(ppo, PER_DEVICE, world)
    mine = rows[rank * PER_DEVICE : (rank + 1) * PER_DEVICE]
    record["ppo"] = {"before": snapshot(ppo), "rows": rows, **probe(ppo, mine)}
    torch.save(record, out / f"rank{rank}.pt")


class Replaying:
    """Replays recorded episodes instead of playing them (mixed into a trainer: the reference of the two-process
    run)."""

    replay: list[Any] = []

    def _play_episodes(self, tasks):
        assert len(tasks) == len(self.replay)
        return list(self.replay), RolloutStats()


class ReplayTrainer(Replaying, AgentGRPOTrainer):
    """One GRPO process replaying recorded episodes."""


class ReplayPPOTrainer(Replaying, AgentPPOTrainer):
    """One PPO process replaying recorded episodes."""


def replay_probe(
    model_dir: str,
    out: Path,
    recorded: dict[str, Any],
    episodes: list[Any],
    cls: type[AgentGRPOTrainer] = ReplayTrainer,
    **overrides: Any,
):
    """The probe of ``recorded`` in one process holding the global batch (``episodes`` of every process)."""
    before = recorded["before"]
    per_device = len(recorded["rows"])
    trainer = make_trainer(model_dir, out, letters=True, cls=cls, per_device_train_batch_size=per_device, **overrides)
    trainer.replay = episodes
    trainer.accelerator.unwrap_model(trainer.model).load_state_dict(before["weights"])
    for hook in trainer.loss_hooks:
        hook.load_state_dict(before["hooks"][hook.name])
    trainer.state.global_step, trainer.state.max_steps = before["global_step"], before["max_steps"]
    return probe(trainer, recorded["rows"])


def seeds_of(record: dict[str, Any]) -> tuple[int, float]:
    """The seeds a process is expected to have: TRL's device-specific torch seed and AEPO's stream."""
    own = rank_seed(0, record["rank"])
    return own, random.Random(own).random()


if __name__ == "__main__":
    main()
