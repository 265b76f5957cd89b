"""AEPO's dynamic rollout as the paper defines it: H_tool averages the probe's tool-call steps, and the
consecutive-branch penalty counts branching rounds (the released code's variant is opt-in)."""

from __future__ import annotations

import pytest
from trainer_toys import letter_env

from agentgym_envs.engine import ChatFormat, RolloutConfig
from trl_plugins.aepo import (
    AEPOBranchConfig,
    BranchingStats,
    BranchPenaltyState,
    aepo_rollout_budget,
    run_branching_episodes,
)
from trl_plugins.models import tiny_tokenizer

K = 4
PROBE = [0.5, 1.0, 3.0]  # the probe's three turns: H_root = 0.5, tool-call steps 1.0 and 3.0


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def play(tok, variant: str, p_branch: float = 1.01):
    """One group of K on a 3-turn environment, a scripted policy and scripted entropies."""
    fmt = ChatFormat(tok)
    word = tok.encode("tree", add_special_tokens=False) + [tok.eos_token_id]
    calls: list[int] = []

    def generate(contexts, max_new_tokens):
        return [list(word) for _ in contexts]

    def entropy(contexts, actions):
        calls.append(len(contexts))
        n = len(calls)
        if n <= len(PROBE):  # pre-monitoring: the probe plays alone
            assert len(contexts) == 1
            return [PROBE[n - 1]]
        return [2.0] * len(contexts)

    envs = [letter_env(target=10, max_steps=3) for _ in range(K)]
    config = RolloutConfig(max_turns=3, max_new_tokens=8)
    branching = AEPOBranchConfig(p_branch=p_branch, seed=0, variant=variant)
    stats = BranchingStats()
    episodes = run_branching_episodes(
        envs, [(0, 1, 0)] * K, generate, fmt, config, entropy_fn=entropy, branching=branching, stats=stats
    )
    return episodes, stats, calls


@pytest.mark.parametrize(("variant", "h_tool"), [("paper", 2.0), ("released", 1.5)])
def test_h_tool_averages_the_probes_tool_call_steps(tok, variant, h_tool):
    episodes, stats, calls = play(tok, variant)
    assert calls[: len(PROBE)] == [1, 1, 1]  # the probe's whole episode before anything else
    assert stats.root_entropy == [0.5] and stats.tool_entropy == [pytest.approx(h_tool)]
    m = aepo_rollout_budget(0.5, h_tool, k=K, beta=0.5)
    assert stats.independent - stats.fallback_independent == m  # p_branch > 1: no branch, the rest fill in
    assert len(episodes) == K and stats.branches == 0


def test_the_consecutive_branch_count_is_per_round_not_per_decision():
    state = BranchPenaltyState(entropy_init=1.0, threshold=0.5, penalty=0.05)
    # two decisions in one round: both see l = 0 (0.52 would fail with l = 1: 0.52 * 0.95 = 0.494)
    assert state.decide(1.0, u=0.6) and state.decide(1.0, u=0.52)
    assert state.consecutive == 0
    state.end_round()
    assert state.consecutive == 1
    assert not state.decide(1.0, u=0.52)  # next round: l = 1
    state.end_round()  # a round without a branch resets the count
    assert state.consecutive == 0 and state.decide(1.0, u=0.52)


def test_branching_rounds_in_the_rollout(tok):
    # p_branch 0: every tool-call decision branches while slots are free; the count follows rounds
    episodes, stats, _ = play(tok, "paper", p_branch=0.0)
    assert len(episodes) == K and stats.branches + stats.independent == K
    assert stats.branches >= 1 and stats.branch_decisions >= stats.branches
