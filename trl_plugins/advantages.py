"""Advantage estimators for multi-turn RL, as pure functions.

Every function takes plain Python sequences (or 1-D tensors) and returns a float32
:class:`torch.Tensor`, so they can be called outside the trainer.  ``group_ids`` marks
which rollouts are of the same task (a GRPO group); any hashable works.

===================================  ===========================================================
estimator                            advantage of rollout ``i`` in group ``g``
===================================  ===========================================================
:func:`grpo_advantages`              ``(R_i - mean_g R) / (std_g R + eps)``, unbiased std
:func:`dr_grpo_advantages`           ``R_i - mean_g R`` (no std; the loss uses a constant length)
:func:`rloo_advantages`              ``R_i - mean_{j != i in g} R_j``
:func:`reinforce_pp_advantages`      ``(R_i - mean R) / (std R + eps)`` over the whole batch
:func:`gigpo_advantages`             per turn: episode-level GRPO + ``omega`` * step-level GRPO over
                                     the turns of the group whose observation is identical
===================================  ===========================================================

A group (or step group) of one rollout has no baseline: its advantage is 0.

Example:
    >>> grpo_advantages([1.0, 0.0, 1.0, 1.0], group_ids=[0, 0, 1, 1]).double().round(decimals=4).tolist()
    [0.7071, -0.7071, 0.0, 0.0]
    >>> rloo_advantages([1.0, 0.0, 0.5], group_ids=["a", "a", "a"]).tolist()
    [0.75, -0.75, 0.0]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch

ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "gigpo")


def _as_tensor(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


def _groups(group_ids: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, gid in enumerate(group_ids):
        members[gid].append(index)
    return members


def _check(rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> None:
    if len(group_ids) != rewards.numel():
        raise ValueError(f"got {rewards.numel()} rewards but {len(group_ids)} group ids")


def grpo_advantages(
    rewards: Sequence[float] | torch.Tensor,
    group_ids: Sequence[Hashable],
    eps: float = 1e-6,
    scale: bool = True,
) -> torch.Tensor:
    """GRPO: reward minus the group mean, divided by the group's unbiased std (``scale=False``: no division).

    Example:
        >>> grpo_advantages([2.0, 0.0], [7, 7]).double().round(decimals=4).tolist()
        [0.7071, -0.7071]
    """
    r = _as_tensor(rewards)
    _check(r, group_ids)
    out = torch.zeros_like(r)
    for members in _groups(group_ids).values():
        if len(members) < 2:
            continue  # no baseline for a lone rollout
        idx = torch.tensor(members)
        g = r[idx]
        adv = g - g.mean()
        if scale:
            adv = adv / (g.std(unbiased=True) + eps)
        out[idx] = adv
    return out.float()


def dr_grpo_advantages(rewards: Sequence[float] | torch.Tensor, group_ids: Sequence[Hashable]) -> torch.Tensor:
    """Dr.GRPO: reward minus the group mean, no std normalization.

    Example:
        >>> dr_grpo_advantages([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0]).tolist()
        [0.5, -0.5, -0.5, 0.5]
    """
    return grpo_advantages(rewards, group_ids, scale=False)


def rloo_advantages(rewards: Sequence[float] | torch.Tensor, group_ids: Sequence[Hashable]) -> torch.Tensor:
    """RLOO: reward minus the mean of the *other* rollouts of the group.

    Example:
        >>> rloo_advantages([3.0, 0.0, 0.0], [1, 1, 1]).tolist()
        [3.0, -1.5, -1.5]
    """
    r = _as_tensor(rewards)
    _check(r, group_ids)
    out = torch.zeros_like(r)
    for members in _groups(group_ids).values():
        k = len(members)
        if k < 2:
            continue
        idx = torch.tensor(members)
        g = r[idx]
        out[idx] = g - (g.sum() - g) / (k - 1)
    return out.float()


def reinforce_pp_advantages(
    returns: Sequence[float] | torch.Tensor,
    group_ids: Sequence[Hashable] | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """REINFORCE++: return minus the batch mean, divided by the batch's unbiased std.

    ``group_ids`` is accepted for a uniform signature and ignored: the baseline is global.

    Example:
        >>> reinforce_pp_advantages([1.0, 0.0, 0.0, 1.0]).double().round(decimals=4).tolist()
        [0.866, -0.866, -0.866, 0.866]
    """
    r = _as_tensor(returns)
    if r.numel() < 2:
        return torch.zeros_like(r).float()
    return ((r - r.mean()) / (r.std(unbiased=True) + eps)).float()


def discounted_returns(step_rewards: Sequence[float], gamma: float) -> list[float]:
    """Return-to-go of each turn: ``G_t = sum_{s >= t} gamma^(s-t) r_s``.

    Example:
        >>> discounted_returns([0.0, 0.0, 1.0], 0.5)
        [0.25, 0.5, 1.0]
    """
    out = [0.0] * len(step_rewards)
    running = 0.0
    for t in range(len(step_rewards) - 1, -1, -1):
        running = float(step_rewards[t]) + gamma * running
        out[t] = running
    return out


def gigpo_advantages(
    episode_returns: Sequence[float] | torch.Tensor,
    group_ids: Sequence[Hashable],
    step_rewards: Sequence[Sequence[float]],
    step_keys: Sequence[Sequence[Hashable]],
    gamma: float = 0.95,
    omega: float = 1.0,
    eps: float = 1e-6,
    scale: bool = True,
) -> list[torch.Tensor]:
    """GiGPO (verl-agent): one advantage per turn, ``A = A^episode + omega * A^step``.

    ``A^episode`` is :func:`grpo_advantages` of the episode returns.  ``A^step`` groups the
    turns of the same task group whose state key (e.g. the observation the turn acted on)
    is identical, and GRPO-normalizes their discounted returns-to-go within each such group.

    Args:
        episode_returns: total return of each episode.
        group_ids: task group of each episode.
        step_rewards: per episode, the reward of each turn.
        step_keys: per episode, the state key of each turn (same length as its rewards).
        gamma: discount of the step-level returns.
        omega: weight of the step-level term.

    Returns:
        Per episode, a tensor of one advantage per turn.

    Example:
        >>> adv = gigpo_advantages([1.0, 0.0], [0, 0], [[0.0, 1.0], [0.0, 0.0]], [["s0", "s1"], ["s0", "s2"]], gamma=1.0)
        >>> [a.double().round(decimals=4).tolist() for a in adv]
        [[1.4142, 0.7071], [-1.4142, -0.7071]]
    """
    if not (len(step_rewards) == len(step_keys) == len(group_ids)):
        raise ValueError("episode_returns, group_ids, step_rewards and step_keys must have one entry per episode")
    for i, (rew, keys) in enumerate(zip(step_rewards, step_keys, strict=True)):
        if len(rew) != len(keys):
            raise ValueError(f"episode {i}: {len(rew)} step rewards but {len(keys)} step keys")
    episode_adv = grpo_advantages(episode_returns, group_ids, eps=eps, scale=scale)
    returns = [discounted_returns(rew, gamma) for rew in step_rewards]
    flat_returns: list[float] = []
    flat_keys: list[tuple[Hashable, Hashable]] = []
    for i, (ret, keys) in enumerate(zip(returns, step_keys, strict=True)):
        flat_returns.extend(ret)
        flat_keys.extend((group_ids[i], k) for k in keys)
    step_adv = grpo_advantages(flat_returns, flat_keys, eps=eps, scale=scale) if flat_returns else torch.zeros(0)
    out: list[torch.Tensor] = []
    offset = 0
    for i, ret in enumerate(returns):
        n = len(ret)
        out.append((episode_adv[i] + omega * step_adv[offset : offset + n]).float())
        offset += n
    return out


def turn_advantages(
    estimator: str,
    episode_returns: Sequence[float],
    group_ids: Sequence[Hashable],
    step_rewards: Sequence[Sequence[float]],
    step_keys: Sequence[Sequence[Hashable]] | None = None,
    gamma: float = 1.0,
    omega: float = 1.0,
    scale: bool = True,
) -> list[torch.Tensor]:
    """Dispatch by name and return one advantage per turn of each episode (what the trainer uses).

    Sequence-level estimators (``grpo``, ``dr_grpo``, ``rloo``) give every turn of an episode
    the episode's advantage.  ``reinforce_pp`` normalizes each turn's discounted return-to-go
    over all turns of the batch (the reward of a turn is placed on its final token, so a turn
    sees only the rewards from itself onwards).  ``gigpo`` is :func:`gigpo_advantages`.

    Example:
        >>> [a.tolist() for a in turn_advantages("rloo", [1.0, 0.0], [0, 0], [[0.0, 1.0], [0.0]])]
        [[1.0, 1.0], [-1.0]]
    """
    lengths = [len(r) for r in step_rewards]
    if estimator in ("grpo", "dr_grpo", "rloo"):
        if estimator == "grpo":
            ep = grpo_advantages(episode_returns, group_ids, scale=scale)
        elif estimator == "dr_grpo":
            ep = dr_grpo_advantages(episode_returns, group_ids)
        else:
            ep = rloo_advantages(episode_returns, group_ids)
        return [ep[i].repeat(n) for i, n in enumerate(lengths)]
    if estimator == "reinforce_pp":
        flat = [g for rew in step_rewards for g in discounted_returns(rew, gamma)]
        adv = reinforce_pp_advantages(flat)
        return list(torch.split(adv, lengths))
    if estimator == "gigpo":
        if step_keys is None:
            raise ValueError("gigpo needs step_keys (the state each turn acted on)")
        return gigpo_advantages(episode_returns, group_ids, step_rewards, step_keys, gamma=gamma, omega=omega, scale=scale)
    raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
