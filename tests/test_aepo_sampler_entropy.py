"""AEPO's branching rollout takes each action's entropy from what the transformers sampler recorded (no forward whose
result is already known): the numbers of ``action_entropies``' no-grad forward, without that forward.  Backends that
record no entropies, or sample at another temperature, still go through the entropy function.

A tiny random Llama (logits far from uniform) samples through the real ``TransformersBackend`` and plays the real
(toy) ``LetterEnv``.
"""

from __future__ import annotations

import random

import pytest
import torch
from trainer_toys import letter_env

from agentgym_envs.engine import ChatFormat, RolloutConfig
from agentgym_envs.generation.base import GenerationRequest, SamplingSettings
from agentgym_envs.generation.sampling import sample_batch
from agentgym_envs.generation.transformers import TransformersBackend
from trl_plugins.aepo import (
    AEPOBranchConfig,
    BranchingStats,
    action_entropies,
    recorded_action_entropies,
    run_branching_episodes,
)
from trl_plugins.models import tiny_model, tiny_tokenizer

K = 4
TEMPERATURE = 0.7
ENTROPY_TOKENS = 5


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return tiny_model(tok, initializer_range=0.2).eval()


def sampler(model, tok, temperature: float = TEMPERATURE) -> TransformersBackend:
    settings = SamplingSettings(temperature=temperature, stop_ids=ChatFormat(tok).stop_ids, seed=0)
    return TransformersBackend(model, tok.pad_token_id, settings)


def counted_entropy_fn(model, tok) -> tuple[list[int], object]:
    """``action_entropies`` at the sampling temperature, and the number of actions each call scored."""
    calls: list[int] = []

    def entropy(contexts, actions):
        calls.append(len(actions))
        return action_entropies(model, contexts, actions, tok.pad_token_id, temperature=TEMPERATURE)

    return calls, entropy


def play(model, tok, backend, entropy_temperature: float | None):
    """A group of K on LetterEnv with AEPO's branching; the entropy function's calls and the backbone forwards."""
    calls, entropy = counted_entropy_fn(model, tok)
    forwards = [0]  # the backbone's forwards: the sampler's and the entropy function's alike
    hook = model.model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    envs = [letter_env(target=9, max_steps=3) for _ in range(K)]
    config = RolloutConfig(max_turns=3, max_new_tokens=6, max_context_tokens=600)
    stats = BranchingStats()
    try:
        episodes = run_branching_episodes(
            envs,
            [(0, 1, 0)] * K,
            backend,
            ChatFormat(tok),
            config,
            entropy_fn=entropy,
            branching=AEPOBranchConfig(p_branch=0.3, entropy_tokens=ENTROPY_TOKENS),
            stats=stats,
            rng=random.Random(0),
            entropy_temperature=entropy_temperature,
        )
    finally:
        hook.remove()
    return episodes, stats, calls, forwards[0]


def test_recorded_entropies_are_the_entropy_forwards_numbers(model, tok):
    backend = sampler(model, tok)
    contexts = [tok.encode(text, add_special_tokens=False) for text in ("guess a letter", "the word is tree")]
    first = backend.generate([GenerationRequest(i, c) for i, c in enumerate(contexts)], 12)
    # a second turn after an observation, on the carried KV cache
    observation = tok.encode("wrong, try again", add_special_tokens=False)
    later = [c + out.ids + observation for c, out in zip(contexts, first, strict=True)]
    second = backend.generate([GenerationRequest(i, c) for i, c in enumerate(later)], 12)
    assert backend.reused_tokens > 0
    for ctxs, outputs in ((contexts, first), (later, second)):
        for n in (1, ENTROPY_TOKENS, 12):
            got = recorded_action_entropies(outputs, TEMPERATURE, TEMPERATURE, n)
            want = action_entropies(model, ctxs, [o.ids[:n] for o in outputs], tok.pad_token_id, TEMPERATURE)
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=2e-5)
        assert len(set(got)) == len(got)  # the model's entropies, not a constant
    # another temperature is another distribution: not read from the record
    assert recorded_action_entropies(first, TEMPERATURE, 1.0, ENTROPY_TOKENS) == [None, None]


def test_branching_rollout_runs_no_entropy_forward_when_the_sampler_records_them(model, tok):
    episodes, stats, calls, forwards = play(model, tok, sampler(model, tok), entropy_temperature=TEMPERATURE)
    assert calls == []  # every action's entropy came from the sampler
    # the same rollout with the entropy forward: the same samples, branches and entropies
    ref_episodes, ref_stats, ref_calls, ref_forwards = play(model, tok, sampler(model, tok), entropy_temperature=None)
    assert len(ref_calls) == ref_stats.generate_calls == stats.generate_calls > 0
    assert forwards == ref_forwards - len(ref_calls)  # exactly the entropy forwards are gone
    assert stats.branches == ref_stats.branches > 0 and stats.independent == ref_stats.independent
    assert [[t.action_ids for t in ep.turns] for ep in episodes] == [
        [t.action_ids for t in ep.turns] for ep in ref_episodes
    ]
    for got, want in ((stats.root_entropy, ref_stats.root_entropy), (stats.tool_entropy, ref_stats.tool_entropy)):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=2e-5)


def test_branching_rollout_calls_the_entropy_function_when_the_sampler_cannot_stand_in(model, tok):
    # another sampling temperature: its recorded entropies are not the entropy function's
    _, stats, calls, _ = play(model, tok, sampler(model, tok, temperature=1.0), entropy_temperature=TEMPERATURE)
    assert len(calls) == stats.generate_calls > 0

    # a plain generate function (token ids only: no entropies recorded)
    def generate(contexts, max_new_tokens):
        return sample_batch(
            model,
            contexts,
            max_new_tokens,
            eos_ids=ChatFormat(tok).stop_ids,
            pad_id=tok.pad_token_id,
            temperature=TEMPERATURE,
        )

    episodes, stats, calls, _ = play(model, tok, generate, entropy_temperature=TEMPERATURE)
    assert len(calls) == stats.generate_calls > 0 and len(episodes) == K
    # every sampled action scored (a branch's turns before its branching step are its parent's)
    assert sum(calls) == sum(len(ep.turns) - (ep.branch_turn if ep.parent is not None else 0) for ep in episodes)


def test_trainer_branches_on_its_samplers_entropies(tmp_path, tok):
    from trainer_toys import toy_run_settings

    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.trainer import AgentGRPOTrainer

    settings = toy_run_settings(
        tmp_path, temperature=TEMPERATURE, aepo={"branching": {"p_branch": 0.05}}, loss_hooks=["aepo"]
    )
    trainer = AgentGRPOTrainer(
        tiny_model(tok, initializer_range=0.2),
        args=AgentGRPOConfig(**settings),
        processing_class=tok,
        env_factory=lambda: letter_env(target=9, max_steps=3),
    )
    try:
        calls: list[int] = []
        forward = trainer.action_entropies
        trainer.action_entropies = lambda contexts, actions: calls.append(len(actions)) or forward(contexts, actions)
        if trainer.generation_backend is None:
            trainer.generation_backend = trainer.make_generation_backend()
        assert isinstance(trainer.generation_backend, TransformersBackend)
        episodes, stats = trainer._play_episodes([trainer.tasks.resolve(trainer.train_dataset[0])] * K)
    finally:
        trainer.close_envs()
    assert len(episodes) == K and stats.generate_calls > 0 and stats.root_entropy and stats.tool_entropy
    assert calls == []  # the trainer's entropy forward never ran
