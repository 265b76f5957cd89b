"""Advantage estimators against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trl_plugins.advantages import (
    discounted_returns,
    dr_grpo_advantages,
    gigpo_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    turn_advantages,
)


def close(a, b, tol=1e-4):
    return all(abs(x - y) < tol for x, y in zip(list(a), list(b), strict=True))


def test_grpo_hand_computed():
    # group A: rewards 1, 0, 0 -> mean 1/3, unbiased std sqrt(1/3)
    adv = grpo_advantages([1.0, 0.0, 0.0, 2.0, 4.0], ["A", "A", "A", "B", "B"])
    s = math.sqrt(1 / 3)
    assert close(adv[:3], [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s])
    # group B: mean 3, std sqrt(2)
    assert close(adv[3:], [-1 / math.sqrt(2), 1 / math.sqrt(2)])


def test_grpo_degenerate_groups():
    assert grpo_advantages([5.0], [0]).tolist() == [0.0]  # lone rollout: no baseline
    assert grpo_advantages([1.0, 1.0], [0, 0]).tolist() == [0.0, 0.0]  # equal rewards: zero, not NaN


def test_dr_grpo_and_rloo():
    assert close(dr_grpo_advantages([1.0, 0.0, 0.0, 3.0], [0, 0, 0, 0]), [0.0, -1.0, -1.0, 2.0])
    # RLOO: 3 - mean(0, 0) = 3 ; 0 - mean(3, 0) = -1.5
    assert close(rloo_advantages([3.0, 0.0, 0.0], [1, 1, 1]), [3.0, -1.5, -1.5])
    assert close(rloo_advantages([2.0, 4.0, 1.0, 1.0], [0, 0, 1, 1]), [-2.0, 2.0, 0.0, 0.0])


def test_reinforce_pp_batch_normalized():
    adv = reinforce_pp_advantages([1.0, 2.0, 3.0])
    assert close(adv, [-1.0, 0.0, 1.0])  # mean 2, unbiased std 1


def test_discounted_returns():
    assert close(discounted_returns([1.0, 0.0, 2.0], 0.5), [1.5, 1.0, 2.0])


def test_gigpo_hand_computed():
    # Two episodes of one task; both start in state s0, then reach different states.
    adv = gigpo_advantages(
        episode_returns=[1.0, 0.0],
        group_ids=[0, 0],
        step_rewards=[[0.0, 1.0], [0.0, 0.0]],
        step_keys=[["s0", "s1"], ["s0", "s2"]],
        gamma=0.5,
    )
    episode = 1 / math.sqrt(2)  # GRPO of (1, 0)
    # step group s0: returns 0.5 (ep 0) and 0 (ep 1) -> +-1/sqrt(2); s1, s2 are singletons -> 0
    assert close(adv[0], [episode + episode, episode])
    assert close(adv[1], [-episode - episode, -episode])


def test_gigpo_groups_are_per_task():
    # Same observation key in two different task groups must not be pooled.
    adv = gigpo_advantages([1.0, 0.0], ["t1", "t2"], [[1.0], [0.0]], [["s"], ["s"]], omega=1.0)
    assert [a.tolist() for a in adv] == [[0.0], [0.0]]


def test_turn_advantages_dispatch():
    per_turn = turn_advantages("grpo", [1.0, 0.0], [0, 0], [[0.0, 1.0], [0.0]])
    assert close(per_turn[0], [1 / math.sqrt(2)] * 2) and close(per_turn[1], [-1 / math.sqrt(2)])
    rpp = turn_advantages("reinforce_pp", [1.0, 0.0], [0, 0], [[0.0, 1.0], [0.0]], gamma=1.0)
    # returns-to-go 1, 1, 0 -> mean 2/3, std sqrt(1/3)
    s = math.sqrt(1 / 3)
    assert close(torch.cat(rpp), [(1 / 3) / s, (1 / 3) / s, (-2 / 3) / s])
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        turn_advantages("ppo", [1.0], [0], [[1.0]])
    with pytest.raises(ValueError, match="step_keys"):
        turn_advantages("gigpo", [1.0], [0], [[1.0]])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="group ids"):
        grpo_advantages([1.0, 2.0], [0])
