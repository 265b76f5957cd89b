"""Training throughput: AgentGRPOTrainer against TRL's stock GRPOTrainer with ``environment_factory``.

Both trainers run in the same process, on the same model (freshly loaded for each), the same
environment configuration and the same batch (episodes per step, ``num_generations``, turn and
token limits), one after the other.  Reported per trainer:

* rollout tokens/s: model-generated tokens divided by the wall time of the rollout phase
  (generation plus environment steps), averaged over the measured steps;
* step time: TRL's ``step_time`` metric (rollout + loss + optimizer), mean over measured steps;
* peak memory: ``torch.cuda.max_memory_allocated`` (CUDA) or the process's peak RSS (CPU);
* turns per episode, so that a reader sees how much multi-turn work each trainer did (TRL's
  stock loop only continues an episode when the model emits a parseable tool call).

The first step of each trainer is a warm-up and is not measured.

Usage::

    .venv/bin/python benchmarks/train_throughput.py                        # CUDA, SmolLM2, TextWorld
    .venv/bin/python benchmarks/train_throughput.py --device cpu --model tiny --steps 2   # smoke check
    .venv/bin/python benchmarks/train_throughput.py --json results/train_throughput.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def load_model(name: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_plugins.models import smollm2_dir, tiny_model, tiny_tokenizer

    if name == "tiny":
        tok = tiny_tokenizer()
        return tiny_model(tok, hidden_size=128, layers=2), tok
    path = smollm2_dir() if name == "smollm2" else Path(name)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path)


def peak_memory(device: str) -> float:
    """Peak memory in MiB since the last reset (CUDA), or the process's peak RSS (CPU)."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_memory(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def common_config(opts: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=opts.episodes,
        num_generations=opts.num_generations,
        max_steps=opts.steps + 1,
        learning_rate=1e-6,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=opts.gradient_checkpointing,
        loss_type="grpo",
        temperature=1.0,
        bf16=opts.device == "cuda",
        use_cpu=opts.device == "cpu",
        disable_tqdm=True,
        seed=0,
    )


def measured(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h][1:]  # drop the warm-up step
    return sum(values) / len(values) if values else None


def run_ours(opts: argparse.Namespace, sampler: str = "kv") -> dict[str, Any]:
    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.trainer import AgentGRPOTrainer

    model, tok = load_model(opts.model, opts.device)
    args = AgentGRPOConfig(
        **common_config(opts, "/tmp/agentgym-bench/ours"),
        env_id=opts.env,
        env_kwargs={"seed_range": tuple(opts.seed_range)},
        max_turns=opts.max_turns,
        max_new_tokens_per_turn=opts.max_new_tokens,
        max_context_tokens=opts.max_context,
        sampler=sampler,
    )
    reset_memory(opts.device)
    trainer = AgentGRPOTrainer(model, args=args, processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    history = trainer.state.log_history
    trainer.close_envs()
    result = {
        "trainer": f"agentgym AgentGRPOTrainer (sampler={sampler})",
        "rollout_tokens_per_s": measured(history, "rollout/tokens_per_second"),
        "step_time_s": measured(history, "step_time"),
        "peak_memory_mib": peak_memory(opts.device),
        "turns_per_episode": measured(history, "env/turns_per_episode"),
        "wall_s": wall,
    }
    del trainer, model
    return result


class _Timer:
    """Wraps a trainer's ``_generate`` to time the rollout phase and count model tokens."""

    def __init__(self, trainer: Any):
        self.trainer, self.original = trainer, trainer._generate
        self.rates: list[float] = []
        self.turns: list[float] = []
        trainer._generate = self

    def __call__(self, prompts):
        start = time.perf_counter()
        out = self.original(prompts)
        seconds = time.perf_counter() - start
        completion_ids, tool_mask = out[1], out[2]
        tokens = sum(sum(m) for m in tool_mask) if tool_mask is not None else sum(len(c) for c in completion_ids)
        self.rates.append(tokens / seconds)
        envs = self.trainer.environments or []
        self.turns.append(sum(getattr(e, "turns", 0) for e in envs) / max(1, len(envs)))
        return out


def run_trl(opts: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    from agentgym_envs.core import as_text_env
    from agentgym_envs.prompts import DEFAULT_SYSTEM_PROMPT
    from agentgym_envs.registry import make_env

    env_id, seed_range = opts.env, tuple(opts.seed_range)

    class GameEnv:
        """The same agentgym environment, exposed to TRL as a tool-calling environment."""

        def __init__(self):
            self.env = make_env(env_id, split="train", seed_range=seed_range)
            self.reward, self.done, self.turns = 0.0, True, 0

        def reset(self, task=None, seed=None, **kwargs) -> str:
            obs, _ = self.env.reset(seed=seed, options={"task": task})
            self.reward, self.done, self.turns = 0.0, False, 0
            return f"Task: {as_text_env(self.env).instruction}\n\nObservation:\n{obs}"

        def act(self, command: str) -> str:
            """Send one text command to the game.

            Args:
                command: The command, for example 'open door'.

            Returns:
                What the game answers.
            """
            if self.done or self.turns >= opts.max_turns:
                return "The episode is over."
            obs, reward, terminated, truncated, _ = self.env.step(command)
            self.reward += float(reward)
            self.turns += 1
            self.done = terminated or truncated
            return obs

        def get_reward(self) -> float:
            return self.reward

    model, tok = load_model(opts.model, opts.device)
    tok.chat_template = qwen2_5_chat_template  # a tool-calling template TRL can parse (ChatML, like SmolLM2's)
    tasks = list(as_text_env(make_env(env_id, split="train", seed_range=seed_range)).task_ids)
    rows = [
        {"prompt": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": ""}],
         "task": int(t) if isinstance(t, int) else t, "seed": i}
        for i, t in enumerate(tasks)
    ]
    args = GRPOConfig(
        **common_config(opts, "/tmp/agentgym-bench/trl"),
        max_completion_length=opts.max_new_tokens * opts.max_turns,
        max_tool_calling_iterations=opts.max_turns,
    )
    reset_memory(opts.device)
    trainer = GRPOTrainer(model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows), environment_factory=GameEnv)
    timer = _Timer(trainer)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    history = trainer.state.log_history
    rates, turns = timer.rates[1:] or timer.rates, timer.turns[1:] or timer.turns
    result = {
        "trainer": "TRL GRPOTrainer + environment_factory",
        "rollout_tokens_per_s": sum(rates) / len(rates) if rates else None,
        "step_time_s": measured(history, "step_time"),
        "peak_memory_mib": peak_memory(opts.device),
        "turns_per_episode": sum(turns) / len(turns) if turns else None,
        "wall_s": wall,
    }
    del trainer, model
    return result


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny, or a local model folder")
    parser.add_argument("--env", default="agentgym/TextWorld-w2-o3-q4-v0")
    parser.add_argument("--seed-range", type=int, nargs=2, default=(30001, 30016))
    parser.add_argument("--episodes", type=int, default=32, help="episodes per step (per_device_train_batch_size)")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-context", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after one warm-up step)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--only", choices=["ours", "ours-generate", "trl"], help="run one trainer only")
    parser.add_argument("--with-generate", action="store_true", help="also run ours with transformers' generate")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    opts = parser.parse_args(argv)
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --device cpu for a smoke check")

    results = []
    runs = [("ours", run_ours), ("ours-generate", lambda o: run_ours(o, sampler="generate")), ("trl", run_trl)]
    for name, fn in runs:
        if opts.only and opts.only != name:
            continue
        if name == "ours-generate" and not (opts.with_generate or opts.only == name):
            continue
        try:
            results.append(fn(opts))
        except Exception as exc:  # noqa: BLE001 - report one side's failure, keep the other
            import traceback

            traceback.print_exc()
            results.append({"trainer": name, "error": repr(exc)})
        print(json.dumps(results[-1]), flush=True)

    device = torch.cuda.get_device_name() if opts.device == "cuda" else "cpu"
    print(f"\nmodel {opts.model}, env {opts.env}, {opts.episodes} episodes/step, G={opts.num_generations}, "
          f"max {opts.max_turns} turns x {opts.max_new_tokens} tokens, device {device}\n")
    print("| trainer | rollout tokens/s | step time (s) | peak memory (MiB) | turns/episode |")
    print("|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['trainer']} | error: {r['error'][:80]} | | | |")
            continue
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(f"| {r['trainer']} | {fmt(r['rollout_tokens_per_s'], '.1f')} | {fmt(r['step_time_s'], '.2f')} | "
              f"{fmt(r['peak_memory_mib'], '.0f')} | {fmt(r['turns_per_episode'], '.2f')} |")
    ok = {r["trainer"]: r for r in results if "error" not in r and r.get("rollout_tokens_per_s")}
    trl = next((r for name, r in ok.items() if name.startswith("TRL")), None)
    for name, r in ok.items():
        if trl is not None and r is not trl:
            print(f"rollout throughput ratio ({name} / TRL): {r['rollout_tokens_per_s'] / trl['rollout_tokens_per_s']:.2f}x")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(opts).items()}, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
