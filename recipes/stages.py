"""The stages every recipe is made of: held-out evaluation, SFT on expert demos, RL (GRPO or PPO), and the report.

Each stage writes into its own folder and a ``stage.json`` (what it did, its wall time) when it finishes; a stage
whose ``stage.json`` exists is skipped, so a recipe run again resumes where it stopped (an evaluation also resumes
episode by episode, an RL run from its last checkpoint).

Example:
    >>> from recipes.stages import Family, RLSettings
    >>> tw = Family("textworld", "agentgym/TextWorld-w2-o3-q4-v0")
    >>> RLSettings(steps=2).episodes_per_step
    8
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

STAGE_FILE = "stage.json"
LOG_FILE = "log_history.json"


@dataclass(frozen=True)
class Family:
    """One environment of a recipe.

    Attributes:
        name: short name used in folders and tables (``"textworld"``).
        env_id: the registered id.
        env_kwargs: constructor keywords used for demos, RL and evaluation alike (e.g. ``{"max_steps": 10}``).
        demos: expert episodes for SFT: the first ``demos`` tasks of the train split.
        rl_tasks: train tasks for RL, taken after the demos' tasks (so RL never replays a demo's task).
    """

    name: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    demos: int = 40
    rl_tasks: int = 200


@dataclass(frozen=True)
class RLSettings:
    """The RL stage's settings (the fields of ``AgentGRPOConfig`` a recipe chooses).

    ``episodes_per_step`` = ``tasks_per_step * num_generations``; the loss runs over them ``micro_batch_size``
    episodes at a time (gradient accumulation), which bounds the activation memory: 8 BabyAI episodes of ~1 500
    tokens in one backward pass of SmolLM2-135M take over 20 GB, 2 at a time about 6 GB.
    """

    steps: int = 8
    tasks_per_step: int = 2
    num_generations: int = 4
    learning_rate: float = 1e-5
    beta: float = 0.0
    loss_type: str = "dapo"
    num_iterations: int = 1
    temperature: float = 1.0
    max_turns: int = 12
    max_new_tokens_per_turn: int = 24
    max_context_tokens: int = 2048
    loss_hooks: tuple[str, ...] = ()
    save_steps: int = 2
    seed: int = 0
    micro_batch_size: int = 2
    bf16: bool = False
    generation_backend: str = "transformers"
    algorithm: str = "grpo"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def episodes_per_step(self) -> int:
        return self.tasks_per_step * self.num_generations

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per step (``episodes_per_step / micro_batch_size``)."""
        if self.micro_batch_size < 1 or self.episodes_per_step % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide the {self.episodes_per_step} episodes of a step"
            )
        return self.episodes_per_step // self.micro_batch_size


def stage_done(folder: Path) -> dict[str, Any] | None:
    """The ``stage.json`` record of a finished stage, or ``None`` if it has not finished."""
    path = Path(folder) / STAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def finish_stage(folder: Path, started: float, **record: Any) -> dict[str, Any]:
    """Write the stage's ``stage.json`` (its wall time added) and return the record."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {**record, "seconds": round(time.time() - started, 1)}
    (folder / STAGE_FILE).write_text(json.dumps(record, indent=1, default=str))
    return record


def say(text: str) -> None:
    print(f"[recipe] {text}", flush=True)


# --------------------------------------------------------------------------------------------------- evaluation


def policy_spec(model: str, engine: str = "hf") -> str:
    """The leaderboard's policy name of a model: ``smollm2`` or ``hf:FOLDER``; ``vllm:smollm2`` or ``vllm:FOLDER``
    with ``engine="vllm"`` (on this 2-core CPU vLLM plays 100 BabyAI episodes in minutes, transformers in an hour)."""
    if engine == "vllm":
        return f"vllm:{model}"
    return "smollm2" if model == "smollm2" else f"hf:{model}"


VLLM_EVAL_BATCH = 100
"""Episodes per batch of a vLLM evaluation (the recipe sets a 4 GiB CPU KV cache, which holds them)."""


def evaluate(
    model: str,
    family: Family,
    folder: Path,
    episodes: int,
    temperature: float = 0.0,
    max_new_tokens: int = 24,
    threads: int | None = None,
    stage: str = "",
    engine: str = "hf",
) -> dict[str, Any]:
    """Held-out success of ``model`` (``smollm2`` or a model folder) on the first ``episodes`` test tasks.

    The leaderboard plays the episodes (batched through the rollout engine, the prompts rendered as the trainer
    renders them, each finished episode stored in ``folder/episodes.jsonl`` so an interrupted evaluation resumes);
    the record holds the success rate with its 95 % Wilson interval.
    """
    from agentgym_envs.eval import Suite, SuiteEntry, run_leaderboard

    if done := stage_done(folder):
        say(f"{family.name}/{stage}: evaluation done ({done['success_rate']:.1%}), skipped")
        return done
    started = time.time()
    say(f"{family.name}/{stage}: evaluating {model} on {episodes} held-out {family.env_id} episodes")
    suite = Suite(f"{family.name}-{stage}", (SuiteEntry(family.env_id, episodes, dict(family.env_kwargs)),))
    rows = run_leaderboard(
        suite,
        [policy_spec(model, engine)],
        folder,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        threads=threads,
        # vLLM with the recipe's 4 GiB CPU KV cache holds ~128 such episodes: one batch instead of 64 + 36.
        **({"batch_size": min(episodes, VLLM_EVAL_BATCH)} if engine == "vllm" else {}),
    )
    row = next(r for r in rows if r["level"] == "environment")
    keys = (
        "episodes",
        "success_rate",
        "success_ci_low",
        "success_ci_high",
        "mean_return",
        "mean_steps",
        "invalid_action_rate",
    )
    record = finish_stage(
        folder,
        started,
        kind="eval",
        family=family.name,
        stage=stage,
        model=str(model),
        env_id=family.env_id,
        temperature=temperature,
        **{k: row[k] for k in keys},
    )
    say(
        f"{family.name}/{stage}: success {record['success_rate']:.1%} "
        f"[{record['success_ci_low']:.1%}, {record['success_ci_high']:.1%}] over {record['episodes']} episodes"
    )
    return record


def reuse_evaluation(source: dict[str, Any], folder: Path, stage: str, model: str) -> dict[str, Any]:
    """The held-out evaluation of ``model``, whose weights equal those of the model ``source`` evaluated.

    Same weights, decoding and tasks play the same episodes, so ``source``'s results are ``model``'s; the record
    (``same_weights_as``: ``source``'s stage) is written to ``folder`` as an evaluation would be, in no time.

    Example:
        >>> reuse_evaluation(base_record, Path("runs/x/eval-base+grpo"), "base+grpo", "runs/x/base-grpo/model")  # doctest: +SKIP
    """
    if done := stage_done(folder):
        return done
    record = finish_stage(
        folder, time.time(), **{**source, "stage": stage, "model": str(model), "same_weights_as": source["stage"]}
    )
    say(
        f"{record['family']}/{stage}: weights equal those of {source['stage']}'s model (no step moved them); "
        f"its evaluation: success {record['success_rate']:.1%}"
    )
    return record


# ---------------------------------------------------------------------------------------------------------- models


def load_model(name: str) -> tuple[Any, Any]:
    """``(model, tokenizer)``: ``smollm2``, ``tiny`` (a random model, for smoke runs) or a folder / hub id."""
    from trl_plugins.cli import build_model

    return build_model(name)


def base_model_folder(name: str, out: Path) -> str:
    """The model a recipe starts from as something :func:`evaluate` can load: ``smollm2``, or a folder.

    A hub id is downloaded (``huggingface_hub.snapshot_download``) and its local folder returned.

    A ``tiny`` model is saved once under ``out/base-model`` (seeded, so every stage sees the same weights).
    """
    if name != "tiny":
        if name == "smollm2" or Path(name).is_dir():
            return name
        from huggingface_hub import snapshot_download

        return snapshot_download(name)  # a hub id: the evaluation's policy loads local folders only
    folder = out / "base-model"
    if not (folder / "config.json").is_file():
        import torch

        torch.manual_seed(0)
        model, tokenizer = load_model("tiny")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def save_log(folder: Path, log_history: Sequence[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOG_FILE).write_text(json.dumps(list(log_history), indent=1, default=float))


# ------------------------------------------------------------------------------------------------------------ SFT


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains ~1.7x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def bf16_options(bf16: bool) -> dict[str, Any]:
    """Trainer arguments for bf16 mixed precision (weights and optimizer stay fp32); on a machine without CUDA
    transformers accepts bf16 only with ``use_cpu=True``."""
    if not bf16:
        return {"bf16": False}
    import torch

    return {"bf16": True} if torch.cuda.is_available() else {"bf16": True, "use_cpu": True}


@dataclass(frozen=True)
class SFTSettings:
    """The SFT stage's settings (TRL ``SFTConfig`` fields)."""

    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 4
    max_length: int = 2048
    max_steps: int = -1
    bf16: bool = False


def sft(model: str, family: Family, folder: Path, settings: SFTSettings) -> str:
    """Fine-tune ``model`` on ``family.demos`` expert episodes of the train split; the model is saved in ``folder``.

    The demos are :func:`trl_plugins.sft.expert_dataset` rows: rendered exactly as the RL trainer and the
    evaluation render their prompts (same system prompt, instructions, observation messages, action format).
    """
    from trl import SFTConfig, SFTTrainer

    from trl_plugins.sft import expert_dataset

    if stage_done(folder):
        say(f"{family.name}/sft: done, skipped")
        return str(folder)
    started = time.time()
    say(f"{family.name}/sft: {family.demos} expert demos from the train split")
    demos = expert_dataset(family.env_id, episodes=family.demos, env_kwargs=dict(family.env_kwargs))
    network, tokenizer = load_model(model)
    trainer = SFTTrainer(
        network,
        args=SFTConfig(
            output_dir=str(folder / "trainer"),
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="constant",
            max_length=settings.max_length,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            **bf16_options(settings.bf16),
        ),
        train_dataset=demos.select_columns(["messages"]),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(str(folder))
    save_log(folder, trainer.state.log_history)
    finish_stage(
        folder,
        started,
        kind="sft",
        family=family.name,
        stage="sft",
        demos=len(demos),
        demo_turns=int(sum(demos["turns"])),
        settings=asdict(settings),
    )
    return str(folder)


# ------------------------------------------------------------------------------------------------------------- RL


class HorizonSchedule:
    """A ``TrainerCallback`` that sets the rollout's turn limit from a schedule (ScalingInter-RL) before each step.

    Example:
        >>> from trl_plugins.hooks.schedules import ScalingInterSchedule
        >>> HorizonSchedule(ScalingInterSchedule([6, 13, 20], 100)).schedule(101)
        13
    """

    def __init__(self, schedule: Callable[[int], int]):
        self.schedule = schedule
        self.trainer: Any = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        turns = self.schedule(state.global_step + 1)
        self.trainer.rollout_config = replace(self.trainer.rollout_config, max_turns=turns)


def _callback_base() -> type:
    from transformers import TrainerCallback

    return type("HorizonScheduleCallback", (HorizonSchedule, TrainerCallback), {})


def rl(
    model: str,
    family: Family,
    folder: Path,
    settings: RLSettings,
    stage: str = "grpo",
    horizons: tuple[Sequence[int], int] | None = None,
) -> str:
    """GRPO (or PPO, ``settings.algorithm="ppo"``) from ``model`` on train tasks after the demos'.

    Checkpoints every ``save_steps`` (only the last kept): an interrupted run resumes from it. The final model is
    saved in ``folder/model``; the trainer's per-step log in ``folder/log_history.json``. ``horizons``
    ``([h0, h1, ...], interval)`` grows the turn limit in phases (ScalingInter-RL).
    """
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint

    from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
    from trl_plugins.config import AgentPPOConfig
    from trl_plugins.ppo_trainer import AgentPPOTrainer

    final = folder / "model"
    if stage_done(folder):
        say(f"{family.name}/{stage}: done, skipped")
        return str(final)
    started = time.time()
    ppo = settings.algorithm == "ppo"
    config_class, trainer_class = (AgentPPOConfig, AgentPPOTrainer) if ppo else (AgentGRPOConfig, AgentGRPOTrainer)
    args = config_class(
        output_dir=str(folder),
        env_id=family.env_id,
        env_kwargs=dict(family.env_kwargs),
        num_generations=settings.num_generations,
        per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.accumulation_steps,
        max_turns=settings.max_turns,
        max_new_tokens_per_turn=settings.max_new_tokens_per_turn,
        max_context_tokens=settings.max_context_tokens,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        beta=settings.beta,
        loss_type=settings.loss_type,
        num_iterations=settings.num_iterations,
        temperature=settings.temperature,
        loss_hooks=list(settings.loss_hooks),
        generation_backend=settings.generation_backend,
        max_steps=settings.steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        report_to="none",
        gradient_checkpointing=False,
        seed=settings.seed,
        **bf16_options(settings.bf16),
        **({"advantage_estimator": "gae"} if ppo else {}),
        **settings.extra,
    )
    tasks = Dataset.from_dict({"task_index": list(range(family.demos, family.demos + family.rl_tasks))})
    network, tokenizer = load_model(model)
    callbacks = []
    if horizons is not None:
        from trl_plugins.hooks.schedules import ScalingInterSchedule

        callbacks.append(_callback_base()(ScalingInterSchedule(list(horizons[0]), horizons[1])))
    trainer = trainer_class(network, args=args, processing_class=tokenizer, train_dataset=tasks, callbacks=callbacks)
    for callback in callbacks:
        callback.trainer = trainer
    resume = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    say(
        f"{family.name}/{stage}: {settings.steps} steps x {settings.episodes_per_step} episodes"
        + (f", resuming from {resume}" if resume else "")
    )
    start_weights = weights_fingerprint(network)
    try:
        trainer.train(resume_from_checkpoint=resume)
        final_weights = weights_fingerprint(trainer.model)
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
    finally:
        trainer.close_envs()
    save_log(folder, trainer.state.log_history)
    finish_stage(
        folder,
        started,
        kind="rl",
        family=family.name,
        stage=stage,
        start_model=str(model),
        # False when no step moved a weight (e.g. every advantage 0): the model is then the start model.
        weights_changed=final_weights != start_weights,
        settings=asdict(settings),
    )
    return str(final)


def weights_fingerprint(model: Any) -> str:
    """A SHA-256 of a model's parameters (names, dtypes and bytes): equal fingerprints, equal weights.

    Example:
        >>> import torch
        >>> weights_fingerprint(torch.nn.Linear(2, 2)) == weights_fingerprint(torch.nn.Linear(2, 2))
        False
    """
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        tensor = parameter.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------- report


def write_results(out: Path, evaluations: Sequence[dict[str, Any]], command: str, extra: dict[str, Any]) -> Path:
    """``results.json`` and ``results.md`` (stage x family: held-out success with 95 % intervals) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"command": command, **extra, "evaluations": list(evaluations)}, indent=1, default=str)
    )
    lines = [
        f"Command: `{command}`",
        "",
        "| family | stage | held-out success | 95 % CI | episodes | invalid actions | stage wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in evaluations:
        lines.append(
            f"| {e['family']} | {e['stage']} | {e['success_rate']:.1%} | "
            f"[{e['success_ci_low']:.1%}, {e['success_ci_high']:.1%}] | {e['episodes']} | "
            f"{e['invalid_action_rate']:.2f} | {e.get('train_seconds', 0) + e['seconds']:.0f}"
            + (f" (weights as {e['same_weights_as']}: its evaluation)" if e.get("same_weights_as") else "")
            + " |"
        )
    lines += ["", *[f"- {k}: {v}" for k, v in extra.items()]]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return out / "results.md"


def read_log(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / LOG_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def plot_curves(out: Path, runs: dict[str, Path], metrics: Sequence[str], filename: str, title: str) -> Path | None:
    """One panel per metric, one line per RL run (its ``log_history.json``) against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {label: [r for r in read_log(folder) if "step" in r] for label, folder in runs.items()}
    present = [m for m in metrics if any(m in r for log in logs.values() for r in log)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        for label, log in logs.items():
            points = [(r["step"], r[metric]) for r in log if metric in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set_title(metric)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = out / filename
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_success(out: Path, evaluations: Sequence[dict[str, Any]], filename: str = "success_by_stage.png") -> Path:
    """Held-out success per stage (bars with their 95 % intervals), one panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(e["family"] for e in evaluations))
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 3.4), squeeze=False)
    for ax, name in zip(axes[0], families, strict=True):
        rows = [e for e in evaluations if e["family"] == name]
        x = range(len(rows))
        rates = [r["success_rate"] * 100 for r in rows]
        errors = [
            [(r["success_rate"] - r["success_ci_low"]) * 100 for r in rows],
            [(r["success_ci_high"] - r["success_rate"]) * 100 for r in rows],
        ]
        ax.bar(x, rates, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        for i, rate in enumerate(rates):
            ax.text(i, rate + 1, f"{rate:.0f}%", ha="center", fontsize=8)
        ax.set_xticks(list(x), [r["stage"] for r in rows], rotation=20, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("held-out success (%)")
        ax.set_title(f"{name} ({rows[0]['episodes']} episodes/stage)", fontsize=9)
    fig.tight_layout()
    path = out / filename
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
