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
