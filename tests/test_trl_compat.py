"""The trainer overrides TRL internals: fail loudly when the installed TRL changes what it relies on.

``AgentGRPOTrainer`` / ``AgentPPOTrainer`` override private ``GRPOTrainer`` methods (``_generate_and_score_completions``,
``_prepare_inputs``, ``_compute_loss``, ...) and read attributes ``GRPOTrainer.__init__`` sets (``_step``,
``_buffered_inputs``, ``_metrics``, ...).  ``pyproject.toml`` pins ``trl`` below its next major; these tests say
exactly what moved when a newer minor release changes one of them (recorded on TRL 1.16).
"""

from __future__ import annotations

import inspect
import re

import pytest

trl = pytest.importorskip("trl")

from trl import GRPOTrainer  # noqa: E402

from trl_plugins.generation import GenerationMixin  # noqa: E402
from trl_plugins.ppo_trainer import AgentPPOTrainer  # noqa: E402
from trl_plugins.trainer import AgentGRPOTrainer  # noqa: E402

#: TRL's signature (annotations left out) of every GRPOTrainer method the trainers override, and of the TRL helpers
#: they call, as recorded on TRL 1.16.
RECORDED = {
    "__init__": "(self, model, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None, "
    "processing_class=None, reward_processing_classes=None, callbacks=None, optimizers=(None, None), "
    "quantization_config=None, peft_config=None, tools=None, rollout_func=None, environment_factory=None)",
    "_compute_loss": "(self, model, inputs)",
    "_generate_and_score_completions": "(self, inputs)",
    "_load_optimizer_and_scheduler": "(self, checkpoint)",
    "_prepare_inputs": "(self, generation_batch)",
    "_save_checkpoint": "(self, model, trial)",
    "compute_loss": "(self, model, inputs, return_outputs=False, num_items_in_batch=None)",
    "evaluate": "(self, eval_dataset=None, ignore_keys=None, metric_key_prefix='eval')",
    "log": "(self, logs, start_time=None)",
    "training_step": "(self, model, inputs, num_items_in_batch)",
}
HELPERS = {
    "trl.models.utils.unwrap_model_for_generation": "(model, accelerator, gather_deepspeed3_params=True, "
    "generation_kwargs=None, gradient_checkpointing_kwargs=None)",
    "trl.models.utils.disable_gradient_checkpointing": "(model, gradient_checkpointing_kwargs=None)",
    "trl.trainer.utils.pad": "(tensors, padding_value=0, padding_side='right', pad_to_multiple_of=None)",
    "trl.trainer.utils.use_adapter": "(model, adapter_name)",
}
#: Attributes GRPOTrainer.__init__ sets that the trainers read or write.
ATTRIBUTES = (
    "_step",
    "_buffered_inputs",
    "_metrics",
    "_tokenizer",
    "_dist",
    "chat_template_kwargs",
    "eos_token_ids",
    "aux_loss_enabled",
    "loss_type",
    "epsilon_low",
    "epsilon_high",
    "importance_sampling_level",
    "entropy_coef",
    "beta",
    "ref_model",
    "num_iterations",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "generation_config",
    "generation_kwargs",
    "use_vllm",
)


def bare_signature(function) -> str:
    """The signature without annotations (they name types of other packages, which move on their own)."""
    sig = inspect.signature(function)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def overridden() -> set[str]:
    names = set()
    for cls in (AgentGRPOTrainer, AgentPPOTrainer, GenerationMixin):
        names |= {n for n, v in vars(cls).items() if callable(v) and hasattr(GRPOTrainer, n)}
    return names


def test_every_overridden_trl_method_keeps_its_recorded_signature() -> None:
    names = overridden()
    assert names - set(RECORDED) == set(), "a new override of a TRL method: record its TRL signature in RECORDED"
    changed = {
        name: (recorded, bare_signature(getattr(GRPOTrainer, name)))
        for name, recorded in RECORDED.items()
        if bare_signature(getattr(GRPOTrainer, name)) != recorded
    }
    assert not changed, (
        f"TRL {trl.__version__} changed GRPOTrainer methods AgentGRPOTrainer overrides (recorded on 1.16 -> now): "
        f"{changed}; adapt trl_plugins/trainer.py and ppo_trainer.py, then update RECORDED"
    )


def test_the_trl_helpers_and_attributes_the_trainer_uses_are_unchanged() -> None:
    import importlib

    for path, recorded in HELPERS.items():
        module, name = path.rsplit(".", 1)
        now = bare_signature(getattr(importlib.import_module(module), name))
        assert now == recorded, f"TRL {trl.__version__} changed {path}: {recorded} -> {now}"
    source = inspect.getsource(GRPOTrainer)
    missing = [n for n in ATTRIBUTES if not re.search(rf"self\.{n}\s*(:[^=]*)?=", source)]
    assert not missing, f"TRL {trl.__version__}'s GRPOTrainer no longer sets {missing}, which the trainer reads"


def test_trl_is_pinned_below_its_next_major(repo_root) -> None:
    text = (repo_root / "pyproject.toml").read_text()
    pin = re.search(r'"trl([^"]*)"', text)
    assert pin and "<" in pin.group(1), f"pyproject.toml must pin trl below its next major, not {pin and pin.group(1)}"
    major = int(trl.__version__.split(".")[0])
    assert f"<{major + 1}" in pin.group(1), f"installed TRL {trl.__version__} is outside the pin {pin.group(1)}"
