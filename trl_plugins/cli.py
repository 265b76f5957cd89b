"""``agentgym train --config run.yaml [--field value ...]``: train from a config file, TRL style.

The config is what ``trl grpo --config`` reads: a flat YAML (or JSON) mapping of
:class:`~trl_plugins.config.AgentGRPOConfig` fields (every ``GRPOConfig`` field included) and TRL's
``ModelConfig`` fields (``model_name_or_path``, ``use_peft``, ``lora_r``, ``lora_alpha``,
``lora_target_modules``, ...), plus ``algorithm: ppo`` for :class:`~trl_plugins.config.AgentPPOConfig`.
Any field can be overridden on the command line after the file (``--learning_rate 1e-6
--env_kwargs '{"max_steps": 20}' --loss_hooks epo,erc``).  ``model_name_or_path`` is a local folder,
``smollm2`` (the embedded SmolLM2-135M-Instruct) or ``tiny`` (a random tiny model for smoke runs).

The earlier nested form (``model:``, ``lora:``, ``trainer:``; :class:`~trl_plugins.config.RunSpec`)
is still read.  ``agentgym_envs.cli`` picks up :func:`add_subcommand` when this module is importable;
it can also be run directly: ``python -m trl_plugins.cli --config examples/textworld_grpo.yaml``.

Example:
    >>> run = load_train_run("examples/tiny_smoke.yaml", ["--learning_rate", "0.001", "--loss_hooks", "epo"])
    >>> run.model, run.args.learning_rate, run.args.loss_hooks
    ('tiny', 0.001, ['epo'])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Default ``model_name_or_path`` when a config names none.
DEFAULT_MODEL = "smollm2"
#: Default ``output_dir`` when a config names none.
DEFAULT_OUTPUT_DIR = "runs/agentgym"


@dataclass
class TrainRun:
    """What ``agentgym train`` runs: the model name, the trainer config and an optional PEFT config."""

    model: str
    args: Any
    peft_config: Any = None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file, with clear errors for a missing or malformed file."""
    from trl_plugins.errors import TrainerConfigError

    file = Path(path)
    if not file.is_file():
        raise TrainerConfigError(f"the config file {str(path)!r} does not exist")
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError or json.JSONDecodeError, both worth one clear line
        raise TrainerConfigError(f"{path} is not valid {'YAML' if file.suffix != '.json' else 'JSON'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainerConfigError(f"{path}: the config must be a mapping of settings")
    return data


def flat_config(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A config mapping in TRL's flat form, and the nested form's ``lora`` mapping (``None`` in the flat form).

    Example:
        >>> flat_config({"model": "tiny", "trainer": {"max_steps": 1}})
        ({'max_steps': 1, 'model_name_or_path': 'tiny'}, None)
    """
    from trl_plugins.errors import TrainerConfigError

    if "trainer" not in data and "model" not in data:
        return dict(data), None
    unknown = set(data) - {"algorithm", "model", "trainer", "lora"}
    if unknown:
        raise TrainerConfigError(f"unknown top-level keys in the run config: {sorted(unknown)} (the nested form has "
                                 "algorithm, model, lora and trainer; the flat form has no 'model' or 'trainer')")
    flat = dict(data.get("trainer") or {})
    flat["model_name_or_path"] = str(data.get("model", DEFAULT_MODEL))
    if "algorithm" in data:
        flat["algorithm"] = data["algorithm"]
    return flat, data.get("lora")


def load_train_run(config: str | Path | None, overrides: list[str] | None = None) -> TrainRun:
    """Read a config file (flat TRL form or nested form) and apply command-line overrides.

    Unknown settings, in the file or on the command line, raise
    :class:`~trl_plugins.errors.TrainerConfigError`.
    """
    from transformers import HfArgumentParser
    from trl import ModelConfig, get_peft_config

    from trl_plugins.config import RUN_CONFIGS
    from trl_plugins.errors import TrainerConfigError

    overrides = list(overrides or [])
    data, lora = flat_config(read_config_file(config)) if config else ({}, None)
    picker = argparse.ArgumentParser(add_help=False)
    picker.add_argument("--algorithm", default=None)
    picked, overrides = picker.parse_known_args(overrides)
    algorithm = str(picked.algorithm or data.pop("algorithm", "grpo")).lower()
    data.pop("algorithm", None)
    if algorithm not in RUN_CONFIGS:
        raise TrainerConfigError(f"algorithm must be one of {sorted(RUN_CONFIGS)}, not {algorithm!r}")
    config_class = RUN_CONFIGS[algorithm]
    known = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(config_class)}
    bad = sorted(set(data) - known)
    if bad:
        hint = " (PPO settings need 'algorithm: ppo')" if any(k.startswith("ppo") for k in bad) else ""
        raise TrainerConfigError(f"unknown settings for algorithm {algorithm!r}: {bad}{hint}")
    data.setdefault("model_name_or_path", DEFAULT_MODEL)
    data.setdefault("output_dir", DEFAULT_OUTPUT_DIR)
    parser = HfArgumentParser((ModelConfig, config_class))
    parser.set_defaults(**data)  # the file's values, which the command line overrides (as TrlParser does)
    try:
        model_args, args, rest = parser.parse_args_into_dataclasses(args=overrides, return_remaining_strings=True)
    except SystemExit as exc:  # argparse already printed what was wrong
        raise TrainerConfigError(f"bad command-line settings: {' '.join(overrides)}") from exc
    if rest:
        raise TrainerConfigError(f"unknown command-line settings: {' '.join(rest)}")
    peft_config = get_peft_config(model_args)
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(**lora)
    return TrainRun(model=str(model_args.model_name_or_path), args=args, peft_config=peft_config)


def build_model(name: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a config's ``model_name_or_path``: ``smollm2``, ``tiny`` or a local folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_plugins.models import smollm2_dir, tiny_model, tiny_tokenizer

    if name == "tiny":
        tok = tiny_tokenizer()
        return tiny_model(tok), tok
    path = smollm2_dir() if name == "smollm2" else name
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def train_from_config(path: str | Path | None, resume: str | None = None, overrides: list[str] | None = None) -> Any:
    """Build the model, optional LoRA and trainer of a config (plus overrides), train, and return the trainer."""
    from trl_plugins.config import AgentPPOConfig
    from trl_plugins.ppo_trainer import AgentPPOTrainer
    from trl_plugins.trainer import AgentGRPOTrainer

    run = load_train_run(path, overrides)
    trainer_class = AgentPPOTrainer if isinstance(run.args, AgentPPOConfig) else AgentGRPOTrainer
    model, tokenizer = build_model(run.model)
    trainer = trainer_class(model, args=run.args, processing_class=tokenizer, peft_config=run.peft_config)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.close_envs()
    return trainer


def _run(args: argparse.Namespace) -> int:
    from trl_plugins.errors import TrainerConfigError

    try:
        train_from_config(args.config, resume=args.resume, overrides=list(getattr(args, "overrides", []) or []))
    except TrainerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="YAML or JSON config: flat TRL fields (as `trl grpo --config`) or the nested "
                             "model/lora/trainer form")
    parser.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    # Any other --field value pairs override the config's fields (collected by parse_known_args).
    parser.set_defaults(accepts_overrides=True)


def add_subcommand(subparsers: Any) -> None:
    """Register ``train`` on an ``argparse`` sub-parser collection."""
    parser = subparsers.add_parser(
        "train", help="train a model (AgentGRPOTrainer or AgentPPOTrainer) from a config file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train from a config file in TRL's format (flat fields of AgentGRPOConfig/AgentPPOConfig and "
                    "TRL's ModelConfig); any field can follow as --field value, e.g. --learning_rate 1e-6 "
                    "--env_kwargs '{\"max_steps\": 20}' --loss_hooks epo,erc.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """``python -m trl_plugins.cli --config run.yaml`` (the same as ``agentgym train --config run.yaml``)."""
    parser = argparse.ArgumentParser(prog="python -m trl_plugins.cli", description="train from a config file")
    _add_arguments(parser)
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
