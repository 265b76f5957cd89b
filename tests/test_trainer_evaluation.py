"""Held-out evaluation in the trainer, the run log (metrics.jsonl), loggers, and ``agentgym plot`` of real runs.

Two real tiny runs (a random 2-layer Llama): one on TextCraft with ``eval_on_start``, ``eval_steps=1`` and
TensorBoard, one on the toy LetterEnv without evaluation; both with ``save_strategy="no"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from trainer_toys import letter_env, toy_run_settings  # noqa: E402

from agentgym_envs.cli import main as agentgym_main  # noqa: E402
from agentgym_envs.core import as_text_env  # noqa: E402
from agentgym_envs.registry import list_environments  # noqa: E402
from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer  # noqa: E402
from trl_plugins.errors import TrainerConfigError  # noqa: E402
from trl_plugins.models import tiny_model, tiny_tokenizer  # noqa: E402

EVAL_TASKS, EVAL_SAMPLES, MAX_STEPS = 2, 2, 2


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- held-out tasks never appear in training ---------------------------------------------------------------
def _one_env_per_family() -> list[tuple[str, dict]]:
    chosen: dict[str, str] = {}
    for row in list_environments():
        if row.installed:
            chosen.setdefault(row.family, row.env_id)
    cases = [(env_id, {}) for env_id in chosen.values()]
    if "textworld" in chosen:  # the quick start's training selection (generator seeds of the train split)
        cases.append((chosen["textworld"], {"seed_range": [30001, 30400]}))
    return cases


@pytest.mark.parametrize(("env_id", "env_kwargs"), _one_env_per_family())
def test_held_out_tasks_are_disjoint_from_the_training_tasks(env_id, env_kwargs, tmp_path) -> None:
    args = AgentGRPOConfig(
        output_dir=str(tmp_path), env_id=env_id, env_kwargs=env_kwargs, eval_tasks="all", report_to="none"
    )
    train_env = AgentGRPOTrainer.make_env_factory(args)()  # exactly how the trainer builds its environments
    try:
        training = set(as_text_env(train_env).task_ids)
    finally:
        train_env.close()
    held_out = AgentGRPOTrainer.held_out_task_ids(args)
    assert held_out and training
    assert not training & set(held_out), f"{env_id}: {sorted(map(str, training & set(held_out)))[:5]}"


def test_eval_settings_are_checked(tmp_path) -> None:
    for bad in (
        {"eval_tasks": 0},
        {"eval_tasks": "[1, -2]"},
        {"eval_tasks": "some"},
        {"eval_samples": 0},
        {"eval_temperature": -1.0},
    ):
        with pytest.raises(TrainerConfigError, match=next(iter(bad))):
            AgentGRPOConfig(output_dir=str(tmp_path), **bad)
    assert AgentGRPOConfig(output_dir=str(tmp_path), eval_tasks="[3, 1]").eval_tasks == [3, 1]
    assert AgentGRPOConfig(output_dir=str(tmp_path), eval_tasks="all").eval_tasks is None


def test_eval_settings_from_the_command_line(repo_root) -> None:
    from trl_plugins.cli import load_train_run

    run = load_train_run(
        repo_root / "examples" / "tiny_smoke.yaml",
        [
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "5",
            "--eval_tasks",
            "[0, 2]",
            "--eval_samples",
            "3",
            "--eval_temperature",
            "0.5",
            "--per_device_eval_batch_size",
            "5",
        ],
    )
    args = run.args
    assert (args.eval_tasks, args.eval_samples, args.eval_temperature, args.eval_steps) == ([0, 2], 3, 0.5, 5)
    assert load_train_run(repo_root / "examples" / "tiny_smoke.yaml", ["--eval_tasks", "50"]).args.eval_tasks == 50


# ---- two tiny runs -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    tok = tiny_tokenizer()
    evaluated = AgentGRPOConfig(
        output_dir=str(root / "textcraft-eval"),
        env_id="agentgym/TextCraft-v0",
        env_kwargs={"max_steps": 2},
        num_generations=2,
        per_device_train_batch_size=2,
        max_steps=MAX_STEPS,
        max_turns=2,
        max_new_tokens_per_turn=3,
        max_context_tokens=1024,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        report_to="tensorboard",
        eval_strategy="steps",
        eval_steps=1,
        eval_on_start=True,
        eval_tasks=EVAL_TASKS,
        eval_samples=EVAL_SAMPLES,
        per_device_eval_batch_size=3,
    )
    trainer = AgentGRPOTrainer(tiny_model(tok), args=evaluated, processing_class=tok)
    trainer.train()
    toy = AgentGRPOConfig(**toy_run_settings(root, output_dir=str(root / "letters"), max_steps=1, eval_on_start=True))
    AgentGRPOTrainer(
        tiny_model(tok),
        args=toy,
        processing_class=tok,
        env_factory=letter_env,
        eval_env_factory=lambda: letter_env(split="test"),
    ).train()
    return {"trainer": trainer, "evaluated": Path(evaluated.output_dir), "toy": Path(toy.output_dir)}


def test_eval_metrics_appear_on_start_and_at_every_eval_step(runs) -> None:
    evals = [r for r in records(runs["evaluated"]) if "eval/success_rate" in r]
    assert [r["step"] for r in evals] == list(range(MAX_STEPS + 1))  # on start (step 0), then at every step
    for r in evals:
        assert r["eval/episodes"] == EVAL_TASKS * EVAL_SAMPLES
        for name in ("success_rate", "return", "steps", "invalid_action_rate"):
            assert r[f"eval/{name}_ci_low"] <= r[f"eval/{name}"] <= r[f"eval/{name}_ci_high"]
        assert 1 <= r["eval/steps"] <= 2  # the held-out environment keeps the training keywords (max_steps=2)
        assert r["eval/success_rate_ci_high"] > 0  # a Wilson interval: 0 wins of 4 is not certainty
    trainer = runs["trainer"]
    assert not set(trainer.tasks.task_ids) & set(trainer.eval_task_ids)
    assert len(trainer.eval_task_ids) == EVAL_TASKS
    # Greedy evaluation at a fixed seed: evaluate() again on the same weights plays the same episodes.
    again = trainer.evaluate()
    assert again["eval/return"] == evals[-1]["eval/return"] and again["eval/steps"] == evals[-1]["eval/steps"]
    assert again["eval_success_rate"] == again["eval/success_rate"]  # the alias metric_for_best_model reads
    assert trainer._eval_pool  # kept for the next evaluation ...
    trainer.close_envs()
    assert not trainer._eval_pool  # ... until close_envs


def test_a_custom_env_factory_evaluates_on_its_eval_env_factory(runs, tmp_path) -> None:
    (start,) = [r for r in records(runs["toy"]) if "eval/success_rate" in r]
    assert start["step"] == 0 and start["eval/episodes"] == 1  # LetterEnv's test split has one task
    tok = tiny_tokenizer()
    args = AgentGRPOConfig(**toy_run_settings(tmp_path, eval_on_start=True))
    with pytest.raises(TrainerConfigError, match="pass eval_env_factory="):
        AgentGRPOTrainer(tiny_model(tok), args=args, processing_class=tok, env_factory=letter_env)


def test_the_metrics_log_has_one_record_per_logging_step_without_checkpoints(runs) -> None:
    for run, steps in ((runs["evaluated"], MAX_STEPS), (runs["toy"], 1)):
        training = [r for r in records(run) if "loss" in r and "train_runtime" not in r]
        assert [r["step"] for r in training] == list(range(1, steps + 1))
        for r in training:
            assert {"epoch", "time", "reward", "entropy", "env/invalid_action_rate"} <= set(r)
        assert not list(run.glob("checkpoint-*"))  # save_strategy="no": the log is there anyway


def test_report_to_tensorboard_writes_event_files(runs) -> None:
    assert list(runs["evaluated"].rglob("events.out.tfevents.*"))


def test_agentgym_plot_draws_two_runs_into_a_png(runs, tmp_path, capsys) -> None:
    out = tmp_path / "curves.png"
    assert agentgym_main(["plot", str(runs["evaluated"]), str(runs["toy"]), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > 1000 and height > 500
    assert capsys.readouterr().out.strip() == f"written: {out}"


def test_plot_of_a_folder_without_a_log_is_a_one_line_error(tmp_path, capsys) -> None:
    assert agentgym_main(["plot", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert "metrics.jsonl" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_an_uninstalled_logger_is_a_one_line_error_naming_the_extra(repo_root, tmp_path) -> None:
    import importlib.util

    from trl_plugins.cli import load_train_run

    if importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    message = "report_to names 'wandb', which is not installed: pip install 'agentgym-envs[wandb]'"
    with pytest.raises(TrainerConfigError) as direct:
        AgentGRPOConfig(output_dir=str(tmp_path), report_to=["tensorboard", "wandb"])
    # What `agentgym train --report_to wandb` reads (it prints a TrainerConfigError as "error: ...", exit 2).
    with pytest.raises(TrainerConfigError) as from_the_command_line:
        load_train_run(repo_root / "examples" / "tiny_smoke.yaml", ["--report_to", "wandb"])
    assert str(direct.value) == str(from_the_command_line.value) == message


def test_the_ppo_trainer_evaluates_the_same_way(tmp_path) -> None:
    from trl_plugins import AgentPPOConfig, AgentPPOTrainer

    tok = tiny_tokenizer()
    args = AgentPPOConfig(**toy_run_settings(tmp_path, eval_samples=3, eval_temperature=1.0))
    trainer = AgentPPOTrainer(
        tiny_model(tok),
        args=args,
        processing_class=tok,
        env_factory=letter_env,
        eval_env_factory=lambda: letter_env(split="test"),
    )
    metrics = trainer.evaluate()
    assert metrics["eval/episodes"] == 3 and 1 <= metrics["eval/steps"] <= 3
    assert [r for r in trainer.state.log_history if "eval/success_rate" in r]
    assert (tmp_path / "run" / "metrics.jsonl").is_file()  # an evaluation before train() is logged too
    trainer.close_envs()
