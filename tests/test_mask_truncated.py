"""``mask_truncated_completions`` means what it means in TRL (completions cut by the length budget carry no loss);
masking the episodes that the environment's step limit ended is the explicit ``mask_truncated_episodes``.  Real
episodes from the rollout engine on a real environment, with a scripted policy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from trainer_toys import letter_env

from agentgym_envs.engine import ChatFormat, RolloutConfig, run_episodes
from trl_plugins.batch import episode_samples, masked_turns
from trl_plugins.config import AgentGRPOConfig
from trl_plugins.models import tiny_tokenizer

MAX_NEW = 6


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _play(tok, replies: list[list[int]], target: int, max_steps: int, max_context_tokens: int = 4096):
    """One episode of LetterEnv whose n-th reply is ``replies[n]`` (the last one repeated)."""
    calls = []

    def generate(contexts, max_new_tokens):
        calls.append(len(contexts))
        return [list(replies[min(len(calls), len(replies)) - 1][:max_new_tokens]) for _ in contexts]

    config = RolloutConfig(max_turns=5, max_new_tokens=MAX_NEW, max_context_tokens=max_context_tokens)
    (episode,) = run_episodes(
        [letter_env(target=target, max_steps=max_steps)], [(0, 0, 0)], generate, ChatFormat(tok), config
    )
    return episode


@pytest.fixture(scope="module")
def episodes(tok):
    word = tok.encode("tree", add_special_tokens=False) + [tok.eos_token_id]
    cut = (tok.encode(" tree" * MAX_NEW, add_special_tokens=False))[:MAX_NEW]  # no end token: the budget cuts it
    step_limit = _play(tok, [word], target=10, max_steps=2)
    token_cut = _play(tok, [cut, word], target=2, max_steps=4)
    context = _play(tok, [word], target=10, max_steps=10, max_context_tokens=len(step_limit.prompt_ids) + 40)
    assert (step_limit.truncation_reason, step_limit.won) == ("step_limit", False)
    assert [t.hit_token_limit for t in token_cut.turns] == [True, False] and token_cut.won
    assert context.truncation_reason == "context_budget" and context.turns
    return {"step_limit": step_limit, "token_cut": token_cut, "context": context}


@pytest.mark.parametrize(
    ("token_budget", "unfinished", "expected"),
    [
        (False, False, {"step_limit": set(), "token_cut": set(), "context": set()}),
        (True, False, {"step_limit": set(), "token_cut": {0}, "context": "all"}),  # TRL's meaning, the default
        (True, True, {"step_limit": "all", "token_cut": {0}, "context": "all"}),
        (False, True, {"step_limit": "all", "token_cut": set(), "context": "all"}),
    ],
)
def test_masked_turns_follow_trl_and_the_step_limit_is_opt_in(episodes, token_budget, unfinished, expected):
    for name, episode in episodes.items():
        want = set(range(len(episode.turns))) if expected[name] == "all" else expected[name]
        assert masked_turns(episode, token_budget=token_budget, unfinished=unfinished) == want, name
        advantages = [torch.ones(len(episode.turns))]
        (full,) = episode_samples(
            [episode], advantages, mask_truncated=token_budget, mask_truncated_episodes=unfinished
        )
        model_turns = [t for t in full["turn_ids"] if t >= 0]
        assert [t for t, m in zip(full["turn_ids"], full["mask"], strict=True) if t >= 0 and m == 0] == [
            t for t in model_turns if t in want
        ]
        stepwise = episode_samples(
            [episode], advantages, context_mode="stepwise", mask_truncated=token_budget,
            mask_truncated_episodes=unfinished,
        )  # fmt: skip
        assert [set(s["mask"]) == {0} for s in stepwise] == [t in want for t in range(len(episode.turns))]


def test_the_config_says_what_each_option_masks():
    help_of = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(AgentGRPOConfig)}
    assert AgentGRPOConfig.mask_truncated_completions is False and AgentGRPOConfig.mask_truncated_episodes is False
    assert "as TRL" in help_of["mask_truncated_completions"]
    assert "step limit" in help_of["mask_truncated_completions"]
    assert "step limit" in help_of["mask_truncated_episodes"]
