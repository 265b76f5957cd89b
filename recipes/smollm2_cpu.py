"""SmolLM2-135M-Instruct on a CPU: base -> SFT on expert demos -> GRPO, and RL from the base model (plain, EPO, ERC).

    PYTHONPATH=$PWD .venv/bin/python recipes/smollm2_cpu.py --out runs/recipe-cpu           # the recipe
    PYTHONPATH=$PWD .venv/bin/python recipes/smollm2_cpu.py --out /tmp/smoke --smoke         # tiny model, 1 step each

For each family (TextWorld w2-o3-q4, the Practitioner's Guide setting, and BabyAI GoToRedBall): held-out success of
the base model, SFT on expert demos of the train split, held-out success; then GRPO from the SFT weights on other
train tasks and its held-out success (on TextWorld by default, where it is measured to help; ``--rl-families``).
Then GRPO from the base model (on ``--base-rl-family``, BabyAI by default: its episodes are the shorter) three times
on the same seeds and tasks: plain, with the EPO hook and with ERC (two optimizer passes per batch, so that ERC's
entropy ratio differs from 1); their entropy curves are drawn on one figure. An RL run that moved no weight (every
sampled episode failed, so every advantage was 0) has its start model's evaluation instead of a second identical one.
Every evaluation plays the first ``--eval-episodes`` tasks of the test split
(greedy by default). Output: ``results.json``, ``results.md``, ``success_by_stage.png``, ``rl_curves_*.png`` and
``entropy_base_rl.png`` in ``--out``; each stage in its own folder, skipped when it has finished (run the same command
again to resume).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python recipes/x.py` from the checkout

from recipes.stages import (  # noqa: E402
    Family,
    RLSettings,
    SFTSettings,
    base_model_folder,
    cpu_has_bf16,
    evaluate,
    plot_curves,
    plot_success,
    reuse_evaluation,
    rl,
    say,
    sft,
    stage_done,
    write_results,
)

FAMILIES = {
    "textworld": Family("textworld", "agentgym/TextWorld-w2-o3-q4-v0", {}, demos=40, rl_tasks=200),
    "babyai": Family("babyai", "agentgym/BabyAI-GoToRedBall-v0", {"max_steps": 10}, demos=40, rl_tasks=200),
}
SMOKE_FAMILIES = {name: replace(family, demos=1, rl_tasks=2) for name, family in FAMILIES.items()}
CURVE_METRICS = ("reward", "env/success_rate", "entropy", "completions/mean_length")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/recipe-cpu", help="output folder (a finished stage in it is skipped)")
    p.add_argument("--model", default="smollm2", help="smollm2, tiny or a model folder")
    p.add_argument("--families", default="textworld,babyai", help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--eval-episodes", type=int, default=100, help="held-out test episodes per evaluation")
    p.add_argument("--eval-temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--demos", type=int, default=None, help="expert demos for SFT (default: the family's, 40)")
    p.add_argument("--sft-epochs", type=float, default=2.0)
    p.add_argument("--sft-lr", type=float, default=1e-4)
    p.add_argument("--rl-steps", type=int, default=12, help="GRPO steps after SFT")
    p.add_argument("--rl-lr", type=float, default=1e-5)
    p.add_argument(
        "--rl-loss-type",
        default="grpo",
        help="GRPOConfig.loss_type of every RL run (grpo: each episode weighs the same; dapo: TRL's default)",
    )
    p.add_argument("--base-rl-steps", type=int, default=5, help="GRPO steps of each RL-from-base run (0: none)")
    p.add_argument(
        "--rl-families",
        default=None,
        help="families that get the GRPO-from-SFT stage (default: textworld if chosen, where it is measured to help; "
        "else every one chosen)",
    )
    p.add_argument("--base-rl-tasks-per-step", type=int, default=1, help="tasks per step of the RL-from-base runs")
    p.add_argument("--base-rl-family", default="babyai", help="family of the RL-from-base runs")
    p.add_argument("--tasks-per-step", type=int, default=2)
    p.add_argument("--generations", type=int, default=4, help="episodes per task (GRPO group size)")
    p.add_argument("--micro-batch", type=int, default=2, help="episodes per backward pass (bounds the memory)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="per turn, in RL and evaluation")
    p.add_argument(
        "--rollouts",
        default="hf",
        choices=["hf", "vllm"],
        help="generator of the GRPO-from-SFT rollouts: transformers (the measured setting) or vLLM colocated",
    )
    p.add_argument(
        "--base-rl-rollouts",
        default="vllm",
        choices=["hf", "vllm"],
        help="generator of the RL-from-base rollouts (vLLM: the base model's long failing episodes, 2.3x faster here)",
    )
    p.add_argument(
        "--async-staleness",
        type=int,
        default=None,
        metavar="K",
        help="GRPO from SFT with async_rollouts=True, max_staleness=K, in its own stage (sft-grpo-asyncK), "
        "to compare with the synchronous run",
    )
    p.add_argument(
        "--eval-engine",
        default="vllm",
        choices=["vllm", "hf"],
        help="held-out evaluation through vLLM (default; far faster on CPU) or transformers",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast for SFT and RL (default: on where the CPU has AVX512-BF16 or AMX)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny random model, 1 step per stage, 2 eval episodes")
    return p.parse_args(argv)


def turn_limit(family: Family, smoke: bool) -> int:
    """An RL run's turn limit: the family's own step limit (2 turns for ``--smoke``)."""
    return 2 if smoke else family.env_kwargs.get("max_steps", 12)


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    command = "PYTHONPATH=$PWD .venv/bin/python recipes/smollm2_cpu.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    if opts.smoke:
        opts.model, opts.eval_episodes, opts.rl_steps = "tiny", 1, 1
        opts.base_rl_steps = min(opts.base_rl_steps, 1)
        opts.tasks_per_step, opts.generations, opts.max_new_tokens = 1, 2, 4
        opts.base_rl_tasks_per_step = 1
    families = SMOKE_FAMILIES if opts.smoke else FAMILIES
    chosen = [n.strip() for n in opts.families.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in families]
    if unknown:
        raise SystemExit(f"error: unknown families {unknown}; known: {', '.join(families)}")
    if opts.rl_families is None:
        # BabyAI's GRPO from SFT did not help in 12 steps (docs/results.md) and costs ~25 minutes here.
        rl_families = [n for n in chosen if n == "textworld"] or chosen
    else:
        rl_families = [n.strip() for n in opts.rl_families.split(",") if n.strip()]
    if not set(rl_families) <= set(chosen):
        raise SystemExit(f"error: --rl-families {rl_families} must be among --families {chosen}")
    if opts.async_staleness is not None and (opts.async_staleness < 0 or opts.rollouts != "hf"):
        raise SystemExit("error: --async-staleness needs K >= 0 and the transformers generator (--rollouts hf)")
    if opts.base_rl_steps > 0 and opts.base_rl_family not in families:
        raise SystemExit(f"error: unknown --base-rl-family {opts.base_rl_family!r}; known: {', '.join(families)}")
    threads = opts.threads or os.cpu_count() or 1
    # vLLM's CPU default KV cache (1 GiB) holds about 32 BabyAI/TextWorld episodes of ~1 300 tokens; the leaderboard
    # batches 64, and a cache that is too small makes vLLM preempt and recompute sequences (10x slower here).
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    base = base_model_folder(opts.model, out)
    bf16 = cpu_has_bf16() if opts.bf16 is None else opts.bf16
    sft_settings = SFTSettings(
        epochs=opts.sft_epochs, learning_rate=opts.sft_lr, max_steps=1 if opts.smoke else -1, bf16=bf16
    )
    rl_settings = RLSettings(
        steps=opts.rl_steps,
        tasks_per_step=opts.tasks_per_step,
        num_generations=opts.generations,
        learning_rate=opts.rl_lr,
        loss_type=opts.rl_loss_type,
        max_new_tokens_per_turn=opts.max_new_tokens,
        save_steps=2,
        micro_batch_size=opts.micro_batch,
        bf16=bf16,
        generation_backend="vllm" if opts.rollouts == "vllm" else "transformers",
    )

    def held_out(model: str, family: Family, stage: str, train_folder: Path | None = None) -> dict:
        trained = stage_done(train_folder) if train_folder else None
        folder = out / family.name / f"eval-{stage}"
        if trained and trained.get("weights_changed") is False:
            # An RL run in which no step moved a weight (every advantage 0) left the start model: its evaluation.
            start = [e for e in evaluations if e["family"] == family.name and e["model"] == trained["start_model"]]
            if start:
                return {**reuse_evaluation(start[0], folder, stage, model), "train_seconds": trained["seconds"]}
        record = evaluate(
            model,
            family,
            folder,
            opts.eval_episodes,
            opts.eval_temperature,
            opts.max_new_tokens,
            threads,
            stage,
            engine="hf" if opts.smoke else opts.eval_engine,
        )
        return {**record, "train_seconds": trained["seconds"] if trained else 0.0}

    evaluations = []
    for name in chosen:
        family = families[name]
        if opts.demos is not None:
            family = replace(family, demos=opts.demos)
        turns = turn_limit(family, opts.smoke)
        settings = replace(rl_settings, max_turns=turns)
        evaluations.append(held_out(base, family, "base"))
        sft_model = sft(base, family, out / name / "sft", sft_settings)
        evaluations.append(held_out(sft_model, family, "sft", out / name / "sft"))
        if name not in rl_families:
            continue
        rl_model = rl(sft_model, family, out / name / "sft-grpo", settings, stage="sft-grpo")
        evaluations.append(held_out(rl_model, family, "sft+grpo", out / name / "sft-grpo"))
        curves = {"GRPO from SFT": out / name / "sft-grpo"}
        if opts.async_staleness is not None:
            k = opts.async_staleness
            folder = out / name / f"sft-grpo-async{k}"
            async_settings = replace(settings, extra={**settings.extra, "async_rollouts": True, "max_staleness": k})
            async_model = rl(sft_model, family, folder, async_settings, stage=f"sft-grpo-async{k}")
            evaluations.append(held_out(async_model, family, f"sft+grpo-async{k}", folder))
            curves[f"GRPO from SFT, async (max_staleness={k})"] = folder
        plot_curves(
            out,
            curves,
            CURVE_METRICS,
            f"rl_curves_{name}.png",
            f"{family.env_id}: GRPO from the SFT weights (training episodes)",
        )

    if opts.base_rl_steps > 0:
        family = families[opts.base_rl_family]
        if opts.demos is not None:
            family = replace(family, demos=opts.demos)
        # Same seeds and tasks for the three runs; two optimizer passes per batch so that ERC's ratio can leave 1.
        turns = turn_limit(family, opts.smoke)
        base_rl = replace(
            rl_settings,
            steps=opts.base_rl_steps,
            tasks_per_step=opts.base_rl_tasks_per_step,
            num_iterations=2,
            max_turns=turns,
            generation_backend="vllm" if opts.base_rl_rollouts == "vllm" and not opts.smoke else "transformers",
        )
        variants = {
            "grpo": base_rl,
            "grpo+epo": replace(base_rl, loss_hooks=("epo",)),
            "grpo+erc": replace(base_rl, loss_hooks=("erc",)),
        }
        runs = {}
        for label, settings in variants.items():
            folder = out / family.name / f"base-{label.replace('+', '-')}"
            model = rl(base, family, folder, settings, stage=f"base-{label}")
            evaluations.append(held_out(model, family, f"base+{label}", folder))
            runs[f"{label} from base"] = folder
        plot_curves(
            out,
            runs,
            ("entropy", "reward", "env/success_rate", "hooks/erc/erc/clip_fraction"),
            "entropy_base_rl.png",
            f"{family.env_id}: GRPO from the base model, plain / EPO / ERC",
        )

    load_after = os.getloadavg()
    extra = {
        "wall_seconds_this_invocation": round(time.time() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "model": opts.model,
    }
    write_results(out, evaluations, command, extra)
    plot_success(out, evaluations)
    say(f"results in {out}/results.md ({extra['wall_seconds_this_invocation']:.0f} s)")
    return {"evaluations": evaluations, **extra}


if __name__ == "__main__":
    main()
