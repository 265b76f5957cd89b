"""The recipes start and complete one step of every stage with a tiny random model (``--smoke``)."""

from __future__ import annotations

import json

import pytest

from recipes import gpu, smollm2_cpu
from recipes.stages import STAGE_FILE, RLSettings, stage_done, weights_fingerprint


def _check_outputs(out, stages: int) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert len(results["evaluations"]) == stages
    for record in results["evaluations"]:
        assert 0.0 <= record["success_ci_low"] <= record["success_rate"] <= record["success_ci_high"] <= 1.0
        assert record["episodes"] >= 1
    assert (out / "results.md").read_text().count("\n| ") == stages + 1  # header + one row per evaluation
    assert (out / "success_by_stage.png").stat().st_size > 1000
    return results


def test_cpu_recipe_smoke_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "cpu"
    args = ["--out", str(out), "--smoke", "--families", "textworld", "--base-rl-steps", "0"]
    smollm2_cpu.main(args)
    _check_outputs(out, stages=3)  # base, sft, sft+grpo
    log = json.loads((out / "textworld" / "sft-grpo" / "log_history.json").read_text())
    assert any("reward" in row for row in log) and log[-1]["step"] == 1
    assert (out / "rl_curves_textworld.png").is_file()
    marks = {p: p.stat().st_mtime_ns for p in out.rglob(STAGE_FILE)}
    smollm2_cpu.main(args)  # everything finished: every stage is skipped
    assert {p: p.stat().st_mtime_ns for p in out.rglob(STAGE_FILE)} == marks


def test_cpu_recipe_rejects_an_unknown_family(tmp_path):
    with pytest.raises(SystemExit, match="unknown families"):
        smollm2_cpu.main(["--out", str(tmp_path), "--smoke", "--families", "chess"])


@pytest.mark.parametrize("name", sorted(gpu.EXPERIMENTS))
def test_gpu_recipe_smoke_completes_one_step_per_arm(tmp_path, name):
    experiment = gpu.smoke_version(gpu.EXPERIMENTS[name])
    # One arm per test keeps the test short; the arm kept is the experiment's distinctive one (its hook / schedule).
    arm = experiment.arms[-1]
    experiment = gpu.replace(experiment, arms=(arm,), families=(arm.family,))
    results = gpu.run_experiment(experiment, tmp_path, f"recipes/gpu.py {name} --smoke")
    stages = 2 + (experiment.sft is not None)  # base, [sft], the arm
    _check_outputs(tmp_path, stages)
    folder = tmp_path / arm.family.name / arm.label.replace("+", "-")
    assert stage_done(folder)["settings"]["loss_hooks"] == list(arm.settings.loss_hooks)
    log = json.loads((folder / "log_history.json").read_text())
    assert [row["step"] for row in log if "loss" in row] == [1]
    assert results["target"] == gpu.EXPERIMENTS[name].target


def test_rl_settings_count_episodes_per_step():
    assert RLSettings(tasks_per_step=3, num_generations=4).episodes_per_step == 12


def test_rl_settings_split_a_step_into_micro_batches():
    assert RLSettings(tasks_per_step=2, num_generations=4, micro_batch_size=2).accumulation_steps == 4
    with pytest.raises(ValueError, match="must divide the 8 episodes"):
        _ = RLSettings(tasks_per_step=2, num_generations=4, micro_batch_size=3).accumulation_steps


def test_cpu_recipe_rejects_an_unknown_base_rl_family(tmp_path):
    with pytest.raises(SystemExit, match="unknown --base-rl-family"):
        smollm2_cpu.main(["--out", str(tmp_path), "--smoke", "--families", "babyai", "--base-rl-family", "chess"])


def test_cpu_recipe_rejects_rl_families_outside_the_chosen_families(tmp_path):
    with pytest.raises(SystemExit, match="must be among --families"):
        smollm2_cpu.main(["--out", str(tmp_path), "--smoke", "--families", "babyai", "--rl-families", "textworld"])


def test_cpu_recipe_runs_the_async_arm_beside_the_synchronous_one(tmp_path):
    out = tmp_path / "cpu"
    smollm2_cpu.main(
        ["--out", str(out), "--smoke", "--families", "textworld", "--base-rl-steps", "0", "--async-staleness", "1"]
    )
    results = _check_outputs(out, stages=4)  # base, sft, sft+grpo, sft+grpo-async1
    assert [r["stage"] for r in results["evaluations"]][-1] == "sft+grpo-async1"
    folder = out / "textworld" / "sft-grpo-async1"
    assert stage_done(folder)["settings"]["extra"] == {"async_rollouts": True, "max_staleness": 1}
    log = json.loads((folder / "log_history.json").read_text())
    assert any("async/staleness" in row for row in log)


def test_cpu_recipe_rejects_async_with_vllm_rollouts(tmp_path):
    with pytest.raises(SystemExit, match="--async-staleness needs"):
        smollm2_cpu.main(["--out", str(tmp_path), "--smoke", "--async-staleness", "1", "--rollouts", "vllm"])


def test_weights_fingerprint_tells_equal_weights_from_moved_ones():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert weights_fingerprint(model) != before


def test_cpu_recipe_gives_an_rl_run_that_moved_no_weight_its_start_models_evaluation(tmp_path):
    out = tmp_path / "cpu"
    # The tiny model never wins: every advantage is 0, so plain GRPO and ERC move no weight, while EPO's entropy
    # term is a gradient of its own.
    smollm2_cpu.main(["--out", str(out), "--smoke", "--families", "babyai", "--base-rl-steps", "1"])
    results = _check_outputs(out, stages=6)  # base, sft, sft+grpo, base+grpo, base+grpo+epo, base+grpo+erc
    evaluations = {r["stage"]: r for r in results["evaluations"]}
    moved = {}
    for folder, stage, start in [
        ("sft-grpo", "sft+grpo", "sft"),
        *[(f"base-{x.replace('+', '-')}", f"base+{x}", "base") for x in ("grpo", "grpo+epo", "grpo+erc")],
    ]:
        moved[stage] = stage_done(out / "babyai" / folder)["weights_changed"]
        record = evaluations[stage]
        if moved[stage]:
            assert "same_weights_as" not in record and record["seconds"] > 0
        else:
            assert record["same_weights_as"] == start
            keys = ("success_rate", "episodes", "mean_steps", "invalid_action_rate")
            assert [record[k] for k in keys] == [evaluations[start][k] for k in keys]
            assert stage_done(out / "babyai" / f"eval-{stage}")["same_weights_as"] == start
    assert [moved[f"base+{x}"] for x in ("grpo", "grpo+epo", "grpo+erc")] == [False, True, False]
    assert "weights as base: its evaluation" in (out / "results.md").read_text()
