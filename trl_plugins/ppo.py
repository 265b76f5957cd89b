"""PPO's pieces: value head and critic, GAE at token or turn level, clipped value loss.

Pure functions over ``(batch, tokens)`` tensors plus two small modules (:class:`ValueHead`, put on the policy's
last hidden state, and :class:`CriticModel`, a separate critic); :class:`~trl_plugins.ppo_trainer.AgentPPOTrainer`
trains with them.  Environment observation tokens (``mask == 0``) are skipped everywhere: GAE bootstraps across them
from the next model token, and they never enter a loss or a statistic.

Reward placement follows the Practitioner's Guide (arXiv 2510.01132): each turn's reward sits on that turn's final
model token (:func:`token_rewards_from_turns`), with gamma = 1 by default.

Example:
    >>> import torch
    >>> mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])          # token 2 is an environment observation
    >>> turn_ids = torch.tensor([[0, 0, -1, 1]])
    >>> rewards = token_rewards_from_turns(torch.tensor([[0.0, 1.0]]), turn_ids, mask)
    >>> adv, ret = gae_advantages(rewards, torch.zeros(1, 4), mask, gamma=1.0, lam=1.0)
    >>> adv
    tensor([[1., 1., 0., 1.]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from trl_plugins.distributed import Ranks
from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks.reductions import clip_regions, masked_mean, masked_whiten

__all__ = [
    "CriticConfig",
    "ValueHead",
    "CriticModel",
    "token_rewards_from_turns",
    "gae_advantages",
    "turn_values",
    "broadcast_turns",
    "compute_advantages",
    "clipped_value_loss",
    "masked_whiten",
    "ppo_clip_fraction",
]


@dataclass
class CriticConfig:
    """PPO's critic-side settings: which critic, GAE over its values, its clipped value loss.

    Defaults: the Practitioner's Guide (gamma 1, clip 0.2; lam 1).  :class:`~trl_plugins.config.AgentPPOConfig`
    holds one in its ``ppo`` field (``ppo={"level": "turn"}`` from YAML or ``--ppo '{"level": "turn"}'``); the
    trainer's ``gamma`` is its discount.

    Attributes:
        level: ``"token"`` (GAE over model tokens) or ``"turn"`` (GAE over turns, broadcast to each turn's tokens).
        gamma, lam: discount and GAE lambda.
        value_clip: clip range of the value loss around the old values (None: unclipped).
        vf_coef: weight of the value loss when it is added to the policy loss (shared-backbone value head).
        whiten: whiten advantages over the valid tokens of the batch.
        critic: ``"head"`` (a :class:`ValueHead` on the policy's last hidden state) or ``"separate"``
            (a :class:`CriticModel` with its own backbone).

    Example:
        >>> CriticConfig(level="turn").lam
        1.0
    """

    level: Literal["token", "turn"] = "token"
    gamma: float = 1.0
    lam: float = 1.0
    value_clip: float | None = 0.2
    vf_coef: float = 0.5
    whiten: bool = True
    critic: Literal["head", "separate"] = "head"

    def __post_init__(self) -> None:
        if self.level not in ("token", "turn"):
            raise LossHookConfigError(f"PPO level must be 'token' or 'turn', not {self.level!r}")
        if self.critic not in ("head", "separate"):
            raise LossHookConfigError(f"PPO critic must be 'head' or 'separate', not {self.critic!r}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise LossHookConfigError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")


# ----------------------------------------------------------------------------------------------------------------
# Modules


class ValueHead(nn.Module):
    """A scalar value per position from hidden states: ``Linear(hidden, 1)`` (float32 output).

    Example:
        >>> ValueHead(8)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5])
    """

    def __init__(self, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1)
        # Small init: the critic starts near 0 instead of adding noise of the hidden states' scale.
        nn.init.normal_(self.summary.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.dropout(hidden).to(self.summary.weight.dtype)
        return self.summary(h).squeeze(-1).float()


def _hidden_size(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    for attr in ("hidden_size", "n_embd", "d_model"):
        if cfg is not None and hasattr(cfg, attr):
            return int(getattr(cfg, attr))
    raise LossHookConfigError(f"cannot find the hidden size of {type(model).__name__}")


class CriticModel(nn.Module):
    """A separate critic: a transformer backbone (any model returning hidden states) plus a value head.

    Example:
        >>> from transformers import LlamaConfig, LlamaModel
        >>> body = LlamaModel(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
        >>> CriticModel(body)(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3])
    """

    def __init__(self, backbone: nn.Module, value_head: ValueHead | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.value_head = value_head or ValueHead(_hidden_size(backbone))

    @classmethod
    def from_causal_lm(cls, model: nn.Module) -> CriticModel:
        """Use a causal LM's base model (``model.model`` for most HF decoders) as the critic's backbone."""
        return cls(getattr(model, getattr(model, "base_model_prefix", "model"), model))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
        hidden = getattr(out, "last_hidden_state", None)  # a base model's; a causal LM only has hidden_states
        return self.value_head(out.hidden_states[-1] if hidden is None else hidden)


# ----------------------------------------------------------------------------------------------------------------
# Rewards and advantages


def _last_token_of_each_turn(turn_ids: torch.Tensor, mask: torch.Tensor, n_turns: int) -> torch.Tensor:
    """(B, T) position of each turn's last model token, -1 where the turn has none."""
    batch, length = turn_ids.shape
    valid = mask.bool() & (turn_ids >= 0) & (turn_ids < n_turns)
    pos = torch.arange(length, device=turn_ids.device).expand(batch, length)
    flat = (torch.arange(batch, device=turn_ids.device).unsqueeze(1) * n_turns + turn_ids.clamp(0, n_turns - 1))
    out = torch.full((batch * n_turns,), -1, dtype=torch.long, device=turn_ids.device)
    out = out.scatter_reduce(0, flat[valid], pos[valid], reduce="amax")
    return out.view(batch, n_turns)


def token_rewards_from_turns(turn_rewards: torch.Tensor, turn_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each turn's reward on the final model token of that turn (Practitioner's Guide placement).

    ``turn_rewards`` is ``(batch, turns)`` (an episode-level reward: put it in the last turn).  Turns without any
    model token drop their reward.

    Example:
        >>> token_rewards_from_turns(torch.tensor([[0.5, 1.0]]), torch.tensor([[0, 0, 1, 1]]), torch.ones(1, 4))
        tensor([[0.0000, 0.5000, 0.0000, 1.0000]])
    """
    batch, n_turns = turn_rewards.shape
    last = _last_token_of_each_turn(turn_ids, mask, n_turns)
    rewards = torch.zeros(turn_ids.shape, dtype=turn_rewards.dtype, device=turn_rewards.device)
    rows = torch.arange(batch, device=turn_ids.device).unsqueeze(1).expand(batch, n_turns)
    has = last >= 0
    rewards[rows[has], last[has]] = turn_rewards[has]
    return rewards


@torch.no_grad()
def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    last_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation along the last axis, over positions where ``mask`` is 1 only.

    ``delta_t = r_t + gamma V_next - V_t``, ``A_t = delta_t + gamma lam A_next``, where "next" is the next *valid*
    position (masked positions are skipped, not treated as steps).  After the last valid position ``V_next`` is
    ``last_values`` (bootstrap for truncated episodes) or 0.  Works for tokens (``(B, L)``) and turns (``(B, T)``).

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``; both 0 where ``mask`` is 0.

    Example:
        >>> adv, ret = gae_advantages(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2))
        >>> adv, ret
        (tensor([[0.5000, 0.5000]]), tensor([[1., 1.]]))
    """
    if not (rewards.shape == values.shape == mask.shape):
        raise LossHookConfigError(f"shapes differ: {rewards.shape}, {values.shape}, {mask.shape}")
    valid = mask.bool()
    values = values.float()
    rewards = rewards.float()
    batch, length = values.shape
    next_v = torch.zeros(batch, device=values.device) if last_values is None else last_values.float()
    next_a = torch.zeros(batch, device=values.device)
    adv = torch.zeros_like(values)
    for t in range(length - 1, -1, -1):
        m = valid[:, t]
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        a = delta + gamma * lam * next_a
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_v = torch.where(m, values[:, t], next_v)
        next_a = torch.where(m, a, next_a)
    returns = torch.where(valid, adv + values, torch.zeros_like(adv))
    return adv, returns


def turn_values(values: torch.Tensor, turn_ids: torch.Tensor, mask: torch.Tensor, n_turns: int) -> torch.Tensor:
    """(B, T) value of each turn: the critic's value at the turn's first model token (the state the action starts in).

    Example:
        >>> turn_values(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]]), torch.ones(1, 3), 2)
        tensor([[1., 2.]])
    """
    batch, length = turn_ids.shape
    valid = mask.bool() & (turn_ids >= 0) & (turn_ids < n_turns)
    pos = torch.arange(length, device=turn_ids.device).expand(batch, length)
    flat = torch.arange(batch, device=turn_ids.device).unsqueeze(1) * n_turns + turn_ids.clamp(0, n_turns - 1)
    first = torch.full((batch * n_turns,), length, dtype=torch.long, device=turn_ids.device)
    first = first.scatter_reduce(0, flat[valid], pos[valid], reduce="amin").view(batch, n_turns)
    has = first < length
    gathered = values.gather(1, first.clamp(max=length - 1))
    return torch.where(has, gathered, torch.zeros_like(gathered))


def broadcast_turns(per_turn: torch.Tensor, turn_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spread a ``(B, T)`` per-turn tensor over the turn's tokens ``(B, L)`` (0 where ``mask`` is 0).

    Example:
        >>> broadcast_turns(torch.tensor([[5.0, 7.0]]), torch.tensor([[0, -1, 1]]), torch.tensor([[1, 0, 1]]))
        tensor([[5., 0., 7.]])
    """
    idx = turn_ids.long().clamp(0, per_turn.shape[1] - 1)
    out = per_turn.gather(1, idx)
    return torch.where(mask.bool() & (turn_ids >= 0), out, torch.zeros_like(out))


def _n_turns(turn_ids: torch.Tensor, mask: torch.Tensor) -> int:
    valid = mask.bool() & (turn_ids >= 0)
    return int(turn_ids[valid].max()) + 1 if valid.any() else 1


@torch.no_grad()
def compute_advantages(
    values: torch.Tensor,
    turn_rewards: torch.Tensor,
    turn_ids: torch.Tensor,
    mask: torch.Tensor,
    config: CriticConfig | None = None,
    ranks: Ranks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO advantages and value targets per token, at the configured level.

    * token level: rewards on each turn's last token, GAE over model tokens;
    * turn level: GAE over turns with :func:`turn_values`, advantages and returns broadcast to the turn's tokens.

    Advantages are whitened over valid tokens when ``config.whiten``: over every process's tokens with ``ranks``
    (GAE runs along each episode and needs no other process).

    Example:
        >>> adv, ret = compute_advantages(torch.zeros(1, 3), torch.tensor([[1.0]]), torch.zeros(1, 3, dtype=torch.long),
        ...                               torch.ones(1, 3), CriticConfig(whiten=False))
        >>> ret
        tensor([[1., 1., 1.]])
    """
    cfg = config or CriticConfig()
    if cfg.level == "token":
        rewards = token_rewards_from_turns(turn_rewards, turn_ids, mask)
        adv, ret = gae_advantages(rewards, values, mask, cfg.gamma, cfg.lam)
    else:
        n_turns = max(_n_turns(turn_ids, mask), turn_rewards.shape[1])
        rew = torch.zeros(turn_rewards.shape[0], n_turns, dtype=torch.float32, device=values.device)
        rew[:, : turn_rewards.shape[1]] = turn_rewards.float()
        tv = turn_values(values.float(), turn_ids, mask, n_turns)
        present = turn_values(torch.ones_like(values, dtype=torch.float32), turn_ids, mask, n_turns)
        t_adv, t_ret = gae_advantages(rew, tv, present, cfg.gamma, cfg.lam)
        adv, ret = broadcast_turns(t_adv, turn_ids, mask), broadcast_turns(t_ret, turn_ids, mask)
    if cfg.whiten:
        adv = masked_whiten(adv, mask, ranks=ranks)
    return adv, ret


# ----------------------------------------------------------------------------------------------------------------
# Losses and statistics


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
    ranks: Ranks | None = None,
) -> tuple[torch.Tensor, float]:
    """PPO's clipped value loss ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))`` over valid tokens.

    ``V_clip = V_old + clamp(V - V_old, -clip, clip)``.  Returns the loss and the fraction of tokens where the
    clipped term is the larger one (no gradient there).  With several processes (``ranks``) the mean is over every
    process's tokens: the loss is this process's share (:meth:`~trl_plugins.distributed.Ranks.mean_share`, whose
    average over the processes is the global mean) and the fraction is global.

    Example:
        >>> v = torch.tensor([1.0], requires_grad=True)
        >>> loss, frac = clipped_value_loss(v, torch.tensor([0.0]), torch.tensor([0.0]), torch.ones(1), clip=0.5)
        >>> float(loss.detach()), frac
        (0.5, 0.0)
    """
    ranks = ranks or Ranks()
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err_clip = (v_clip - returns) ** 2
        clipped = err_clip > err
        err = torch.maximum(err, err_clip)
    m = mask.to(err.dtype)
    loss = 0.5 * ranks.mean_share((torch.where(mask.bool(), err, torch.zeros_like(err)) * m).sum(), m.sum())
    frac = 0.0 if clip is None else float(masked_mean(clipped.float(), mask, ranks.sum))
    return loss, frac


@torch.no_grad()
def ppo_clip_fraction(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> float:
    """Fraction of valid tokens whose PPO ratio clip is active (their policy gradient is zero).

    Example:
        >>> ppo_clip_fraction(torch.tensor([0.5, 0.0]), torch.zeros(2), torch.ones(2), torch.ones(2))
        0.5
    """
    low, high = clip_regions(torch.exp(logps - old_logps), advantages, eps_low, eps_high)
    return float(masked_mean((low | high).float(), mask))
