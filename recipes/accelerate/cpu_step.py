"""One training step of ``AgentGRPOTrainer`` in several CPU processes, under any config of ``recipes/accelerate``.

A smoke check that a sharding config (FSDP2, DeepSpeed ZeRO) constructs the trainer and steps it on this machine,
before a GPU run.  Each process builds the same tiny random model (``trl_plugins.models.tiny_model``) and trains one
step on TextCraft (two turns of four tokens); the main process prints what ran and whether the weights moved.

Example (FSDP2 over two gloo processes; ``docs/multi_gpu.md`` lists what runs on CPU):

    ACCELERATE_USE_CPU=1 accelerate launch --config_file recipes/accelerate/fsdp.yaml --mixed_precision no \
        recipes/accelerate/cpu_step.py --out /tmp/fsdp_step

Args (command line):
    --out: the run's output folder.
    --env-id: the environment to train on (default TextCraft, the cheapest real family).
    --loss-hooks: comma-separated loss hooks (default ``epo,erc``).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
from trl_plugins.models import tiny_model, tiny_tokenizer


def requested_sharding() -> str | None:
    """The sharding ``accelerate launch`` was asked for (its config's ``distributed_type``), read from the
    environment it sets for the processes."""
    for name, kind in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if os.environ.get(name, "false").lower() == "true":
            return kind
    return None


def one_step(out: str, env_id: str, loss_hooks: list[str]) -> dict[str, object]:
    """Train one step and report what ran: the distributed type, processes, loss and how far the weights moved."""
    sharding = requested_sharding()
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)  # same seed in every process: the same weights before any broadcast
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = AgentGRPOConfig(
        output_dir=out,
        env_id=env_id,
        env_workers="inprocess",
        num_generations=2,
        per_device_train_batch_size=2,
        max_steps=1,
        max_turns=2,
        max_new_tokens_per_turn=4,
        max_context_tokens=2000,
        learning_rate=1e-2,
        loss_hooks=loss_hooks,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        # Accelerate turns DeepSpeed off under cpu=True; without it, gloo must be named (no accelerator to infer from).
        use_cpu=sharding != "DEEPSPEED",
        ddp_backend="gloo",
    )
    trainer = AgentGRPOTrainer(model, args=args, processing_class=tokenizer)
    ran = str(trainer.accelerator.distributed_type).split(".")[-1]
    if sharding is not None and ran != sharding:
        raise SystemExit(f"asked for {sharding} but Accelerate set up {ran} on this machine")
    trainer.train()
    # Full weights, gathered from the shards; under ZeRO-3 only the main process receives them (None elsewhere).
    trained = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    moved = None
    if trained is not None:
        moved = max(float((trained[n].float() - p.float()).abs().max()) for n, p in before.items() if n in trained)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "distributed_type": str(trainer.accelerator.distributed_type),
        "num_processes": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "loss": logs[-1]["loss"] if logs else None,
        "max_weight_change": moved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--env-id", default="agentgym/TextCraft-v0")
    parser.add_argument("--loss-hooks", default="epo,erc")
    options = parser.parse_args()
    hooks = [h for h in options.loss_hooks.split(",") if h]
    report = one_step(options.out, options.env_id, hooks)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    print(json.dumps(report))


if __name__ == "__main__":
    main()
