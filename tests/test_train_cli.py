"""`agentgym train` reads TRL's config format with command-line overrides; TRL's parsers set dict and list fields."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from trl import TrlParser  # noqa: E402

from trl_plugins.cli import load_train_run  # noqa: E402
from trl_plugins.config import AgentGRPOConfig, AgentPPOConfig  # noqa: E402
from trl_plugins.errors import TrainerConfigError  # noqa: E402
from trl_plugins.hooks import EPOConfig, ERCConfig  # noqa: E402


def test_trl_parser_sets_dict_and_list_fields_from_the_command_line(tmp_path) -> None:
    (args,) = TrlParser((AgentGRPOConfig,)).parse_args_and_config(args=[
        "--output_dir", str(tmp_path), "--env_kwargs", '{"max_steps": 3, "seed_range": [30001, 30002]}',
        "--loss_hooks", '["epo", {"name": "erc"}]', "--epo", '{"alpha": 0.1}',
    ])
    assert args.env_kwargs == {"max_steps": 3, "seed_range": [30001, 30002]}
    assert args.loss_hooks == ["epo", {"name": "erc"}] and args.epo == EPOConfig(alpha=0.1)
    assert AgentGRPOConfig(output_dir=str(tmp_path), loss_hooks="epo, erc").loss_hooks == ["epo", "erc"]
    with pytest.raises(TrainerConfigError, match="env_kwargs must be a JSON object"):
        AgentGRPOConfig(output_dir=str(tmp_path), env_kwargs="{max_steps: 3")


def test_hook_settings_are_typed_sub_configs_from_yaml_json_and_python(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: tiny\noutput_dir: {tmp_path}\nloss_hooks: [epo, erc]\n"
                      "erc: {beta_low: 0.1}\nalgorithm: ppo\nppo: {level: turn, critic: separate}\n")
    run = load_train_run(config, ["--epo", '{"mode": "released"}'])
    assert run.args.erc == ERCConfig(beta_low=0.1) and run.args.epo == EPOConfig(mode="released")
    assert (run.args.ppo.level, run.args.ppo.critic) == ("turn", "separate")
    assert run.args.to_dict()["erc"] == {"beta_low": 0.1, "beta_high": 0.05}  # TRL's logging gets plain values
    settings = run.args.hook_settings()
    assert settings["erc"].beta_low == 0.1 and settings["epo"].mode == "released"
    with pytest.raises(TrainerConfigError, match=r"unknown epo settings \['alpah'\]"):
        AgentGRPOConfig(output_dir=str(tmp_path), epo={"alpah": 0.1})
    with pytest.raises(TrainerConfigError, match="erc must be a JSON object"):
        load_train_run(None, ["--output_dir", str(tmp_path), "--erc", "{beta_low: 1}"])
    with pytest.raises(TrainerConfigError, match="discount"):
        AgentPPOConfig(output_dir=str(tmp_path), ppo={"gamma": 0.5})
    assert AgentPPOConfig(output_dir=str(tmp_path), gamma=0.5).ppo.gamma == 0.5


def test_deprecated_loss_hook_kwargs_and_flat_ppo_fields_warn_and_map(tmp_path) -> None:
    with pytest.warns(FutureWarning, match="loss_hook_kwargs is deprecated"):
        args = AgentGRPOConfig(output_dir=str(tmp_path), loss_hooks=["epo", "aepo"],
                               loss_hook_kwargs={"epo": {"alpha": 0.05}, "aepo": {"coef": 0.2}})
    assert args.epo.alpha == 0.05 and args.loss_hook_kwargs == {"aepo": {"coef": 0.2}}
    assert args.hook_settings()["aepo"] == {"coef": 0.2}
    with pytest.warns(FutureWarning, match="ppo_level, ppo_value_clip: deprecated"):
        ppo = AgentPPOConfig(output_dir=str(tmp_path), ppo_level="turn", ppo_value_clip=0.3)
    assert (ppo.ppo.level, ppo.ppo.value_clip, ppo.ppo_level) == ("turn", 0.3, None)


def test_a_flat_trl_config_with_overrides(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: tiny\noutput_dir: {tmp_path / 'out'}\nmax_turns: 5\n"
                      "env_kwargs: {seed_range: [30001, 30002]}\nuse_peft: true\nlora_r: 4\n")
    run = load_train_run(config, ["--max_turns", "7", "--learning_rate", "0.001", "--loss_hooks", "epo"])
    assert (run.model, run.args.max_turns, run.args.learning_rate, run.args.loss_hooks) == ("tiny", 7, 0.001, ["epo"])
    assert run.args.env_kwargs == {"seed_range": [30001, 30002]} and run.peft_config.r == 4
    run = load_train_run(config, ["--algorithm", "ppo", "--ppo", '{"level": "turn"}'])
    assert isinstance(run.args, AgentPPOConfig) and run.args.ppo.level == "turn"
    with pytest.raises(TrainerConfigError, match="unknown command-line settings"):
        load_train_run(config, ["--no_such_setting", "1"])
    config.write_text("model_name_or_path: tiny\nppo: {level: turn}\n")
    with pytest.raises(TrainerConfigError, match="algorithm: ppo"):
        load_train_run(config)


def test_the_nested_form_and_the_examples_still_load(tmp_path, repo_root) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"model: tiny\nlora: {{r: 4}}\ntrainer:\n  output_dir: {tmp_path / 'out'}\n  max_turns: 5\n")
    run = load_train_run(config, ["--max_turns", "6"])
    assert (run.model, run.args.max_turns, run.peft_config.r) == ("tiny", 6, 4)
    for example in ("tiny_smoke.yaml", "textworld_grpo.yaml"):
        assert load_train_run(repo_root / "examples" / example).args.env_id == "agentgym/TextWorld-w2-o3-q4-v0"
    config.write_text("model: tiny\n  bad: [")
    with pytest.raises(TrainerConfigError, match="not valid YAML"):
        load_train_run(config)


# ---- agentgym train on the command line: one-line errors, warnings that say what to set, hook metric names ----


def test_a_model_that_cannot_be_loaded_is_one_error_line_and_exit_2(tmp_path, repo_root, capsys, monkeypatch) -> None:
    import huggingface_hub.constants

    from trl_plugins.cli import main

    smoke = str(repo_root / "examples" / "tiny_smoke.yaml")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a hub id while offline
    expected = {
        str(tmp_path / "missing"): f"error: model_name_or_path '{tmp_path / 'missing'}': no such folder (give a folder",
        str(tmp_path / "empty"): f"error: model_name_or_path '{tmp_path / 'empty'}': could not load a model: ",
        "HuggingFaceTB/no-such-model": "error: model_name_or_path 'HuggingFaceTB/no-such-model': could not load a "
                                       "model: We couldn't connect to 'https://huggingface.co'",
    }
    for model, line in expected.items():
        capsys.readouterr()
        assert main(["--config", smoke, "--model_name_or_path", model, "--output_dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(line), err
        assert not any("Traceback" in row for row in err)


def test_trl_dataset_settings_are_refused_with_what_to_set_instead(tmp_path, capsys) -> None:
    from trl_plugins.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: tiny\noutput_dir: {tmp_path}\ndataset_name: trl-lib/tldr\n")
    hint = "(the tasks come from the environment, not a dataset: set env_id (e.g. agentgym/TextWorld-w2-o3-q4-v0), "
    with pytest.raises(TrainerConfigError, match=r"unknown settings for algorithm 'grpo': \['dataset_name'\] "):
        load_train_run(config)
    assert main(["--config", str(config)]) == 2
    assert capsys.readouterr().err.strip().endswith(hint + "env_kwargs and max_tasks)")
    config.write_text(f"model_name_or_path: tiny\noutput_dir: {tmp_path}\n")
    with pytest.raises(TrainerConfigError, match=r"unknown command-line settings: --dataset_name x \(the tasks come"):
        load_train_run(config, ["--dataset_name", "x"])


def test_max_completion_length_warns_once_with_what_to_set_instead(tmp_path) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AgentGRPOConfig(output_dir=str(tmp_path))  # TRL's default: nothing to say
        AgentGRPOConfig(output_dir=str(tmp_path), max_completion_length=64)
    said = [str(w.message) for w in caught if "max_completion_length" in str(w.message)]
    assert said == ["max_completion_length=64 is not used by the agent trainer: an episode is limited by "
                    "max_new_tokens_per_turn (tokens per reply), max_turns and max_context_tokens (the whole "
                    "conversation); set those instead"]
    assert caught[-1].filename == __file__  # points at the line that set it


def test_hook_metrics_have_one_hooks_level_and_no_undefined_values() -> None:
    import dataclasses
    import math
    from collections import defaultdict

    import torch

    from trl_plugins.hooks import EPOConfig, EPOHook, LossContext
    from trl_plugins.metrics import hook_metrics

    hook = EPOHook(EPOConfig(coef=1.0))
    ones = torch.ones(1, 3)
    ctx = LossContext(logps=-ones, old_logps=-ones, advantages=ones, mask=ones, entropy=ones,
                      turn_ids=torch.zeros(1, 3, dtype=torch.long), step=0, total_steps=4)
    hook.extra_loss(ctx)  # step 0: no entropy history yet, so no reference
    assert math.isnan(hook.metrics()["epo/reference"])
    hook.extra_loss(ctx)
    logged: dict[str, list] = defaultdict(list)
    hook_metrics(logged, [hook])
    assert sorted(logged) == ["hooks/epo/beta", "hooks/epo/entropy_term", "hooks/epo/loss", "hooks/epo/penalty",
                              "hooks/epo/smooth"]
    hook.end_step(0)
    hook.extra_loss(dataclasses.replace(ctx, step=1))
    hook_metrics(logged, [hook])
    assert logged["hooks/epo/reference"] == [1.0] and logged["hooks/epo/beta"][0] == 2.0


def test_agentgym_train_says_what_matters_once(tmp_path, repo_root) -> None:
    """The real command: no vLLM-version or pin_memory noise, one warning line, hook metrics named once."""
    import json
    import subprocess
    import sys

    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "train", "--config", str(repo_root / "examples" / "tiny_smoke.yaml"),
         "--output_dir", str(out), "--loss_hooks", "epo", "--logging_steps", "1", "--max_completion_length", "64"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "TRL currently supports vLLM" not in result.stderr and "pin_memory" not in result.stderr
    warned = [line for line in result.stderr.splitlines() if "max_completion_length" in line]
    assert warned == ["warning: max_completion_length=64 is not used by the agent trainer: an episode is limited by "
                      "max_new_tokens_per_turn (tokens per reply), max_turns and max_context_tokens (the whole "
                      "conversation); set those instead"]
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    hook_keys = {key for key in record if key.startswith("hooks/")}
    assert {"hooks/epo/beta", "hooks/epo/loss"} <= hook_keys and not any("/epo/epo/" in key for key in hook_keys)
    assert None not in record.values() and "hooks/epo/reference" not in record  # step 0: no reference entropy yet
