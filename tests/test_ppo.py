"""PPO pieces against hand-computed values, and a tiny-model PPO run on CPU (value head and separate critic)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trl_plugins.entropy import logps_and_entropy
from trl_plugins.hooks import LossContext, LossHookConfigError, build_hooks, compose_loss
from trl_plugins.ppo import (
    CriticConfig,
    CriticModel,
    ValueHead,
    broadcast_turns,
    clipped_value_loss,
    compute_advantages,
    gae_advantages,
    masked_whiten,
    ppo_clip_fraction,
    token_rewards_from_turns,
    turn_values,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path / "cache"))


def test_turn_rewards_sit_on_each_turns_last_model_token():
    turn_ids = torch.tensor([[0, 0, -1, -1, 1, 1, -1], [0, 0, 0, -1, -1, -1, -1]])
    mask = (turn_ids >= 0).float()
    r = token_rewards_from_turns(torch.tensor([[0.5, 1.0], [2.0, 7.0]]), turn_ids, mask)
    expected = torch.tensor([[0, 0.5, 0, 0, 0, 1.0, 0], [0, 0, 2.0, 0, 0, 0, 0]])  # row 1 has no turn 1
    torch.testing.assert_close(r, expected)


def test_token_gae_skips_environment_tokens_by_hand():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.2, 9.0, 0.4, 0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # Over the valid tokens r = [0, 1, 0, 2], V = [0.5, 0.2, 0.4, 0.1]:
    a3 = 2 - 0.1
    a2 = (0 + 0.9 * 0.1 - 0.4) + 0.72 * a3
    a1 = (1 + 0.9 * 0.4 - 0.2) + 0.72 * a2
    a0 = (0 + 0.9 * 0.2 - 0.5) + 0.72 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, 0.0, a2, a3]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.2, 0.0, a2 + 0.4, a3 + 0.1]]))
    # gamma = lam = 1: advantage = return-to-go minus value.
    adv1, _ = gae_advantages(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(adv1, torch.tensor([[3 - 0.5, 3 - 0.2, 0.0, 2 - 0.4, 2 - 0.1]]))
    # Bootstrap of a truncated episode.
    adv_b, _ = gae_advantages(rewards, values, mask, 1.0, 1.0, last_values=torch.tensor([1.0]))
    torch.testing.assert_close(adv_b - adv1, torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]]))


def test_turn_level_gae_by_hand():
    turn_ids = torch.tensor([[0, 0, -1, 1, 1]])
    mask = (turn_ids >= 0).float()
    values = torch.tensor([[0.3, 9.0, 9.0, 0.6, 9.0]])
    torch.testing.assert_close(turn_values(values, turn_ids, mask, 2), torch.tensor([[0.3, 0.6]]))
    adv, ret = compute_advantages(values, torch.tensor([[0.5, 1.0]]), turn_ids, mask,
                                  CriticConfig(level="turn", whiten=False))  # fmt: skip
    # A_1 = 1.0 - 0.6 = 0.4; A_0 = 0.5 + 0.6 - 0.3 + 0.4 = 1.2; returns 1.5 and 1.0.
    torch.testing.assert_close(adv, torch.tensor([[1.2, 1.2, 0.0, 0.4, 0.4]]))
    torch.testing.assert_close(ret, torch.tensor([[1.5, 1.5, 0.0, 1.0, 1.0]]))
    torch.testing.assert_close(broadcast_turns(torch.tensor([[1.0, 2.0]]), turn_ids, mask),
                               torch.tensor([[1.0, 1.0, 0.0, 2.0, 2.0]]))  # fmt: skip


def test_token_level_advantages_with_whitening():
    turn_ids = torch.tensor([[0, 0, 1], [0, 0, 0]])
    mask = torch.ones(2, 3)
    adv, ret = compute_advantages(torch.zeros(2, 3), torch.tensor([[0.0, 1.0], [3.0, 0.0]]), turn_ids, mask)
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]))
    assert float(adv.mean()) == pytest.approx(0.0, abs=1e-6) and float(adv.std()) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(masked_whiten(torch.tensor([5.0]), torch.tensor([1.0])), torch.tensor([0.0]))


def test_clipped_value_loss_value_and_gradient():
    v = torch.tensor([1.0, 1.0, 7.0], requires_grad=True)
    loss, frac = clipped_value_loss(v, torch.zeros(3), torch.tensor([0.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]),
                                    clip=0.5)  # fmt: skip
    # Token 0: unclipped error 1 is larger; token 1: clipped error (0.5 - 2)^2 = 2.25 wins (no gradient).
    assert float(loss.detach()) == pytest.approx(0.5 * (1.0 + 2.25) / 2) and frac == 0.5
    (g,) = torch.autograd.grad(loss, [v])
    torch.testing.assert_close(g, torch.tensor([0.5, 0.0, 0.0]))
    loss_u, _ = clipped_value_loss(v, torch.zeros(3), torch.zeros(3), torch.ones(3), clip=None)
    assert float(loss_u.detach()) == pytest.approx(0.5 * (1 + 1 + 49) / 3)


def test_ppo_clip_fraction_counts_zero_gradient_tokens():
    lp = torch.log(torch.tensor([1.5, 1.1, 0.5, 0.5, 3.0]))
    adv = torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0])
    assert ppo_clip_fraction(lp, torch.zeros(5), adv, torch.tensor([1.0, 1, 1, 1, 0])) == pytest.approx(0.5)


def test_bad_config_raises():
    with pytest.raises(LossHookConfigError):
        CriticConfig(level="episode")  # type: ignore[arg-type]
    with pytest.raises(LossHookConfigError):
        CriticConfig(gamma=1.5)


def tiny_lm(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(cfg)


def _batch():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 64, (4, 21), generator=g)
    turn_ids = torch.full((4, 20), -1)
    turn_ids[:, 2:8] = 0
    turn_ids[:, 12:18] = 1
    mask = (turn_ids >= 0).float()
    turn_rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.5, 1.0], [0.0, -1.0]])
    return input_ids, mask, turn_ids, turn_rewards


@pytest.mark.parametrize("level", ["token", "turn"])
def test_ppo_with_value_head_and_hooks_trains_a_tiny_model(level):
    policy = tiny_lm(0)
    head = ValueHead(policy.config.hidden_size)  # on the policy's last hidden state, as AgentPPOTrainer puts it
    opt = torch.optim.Adam([*policy.parameters(), *head.parameters()], lr=1e-2)
    cfg = CriticConfig(level=level)
    hooks = build_hooks(["epo", "erc"])  # the hooks run unchanged on PPO advantages
    input_ids, mask, turn_ids, turn_rewards = _batch()

    def forward():
        # logits_to_keep=1: the LM head runs through logps_and_entropy only, never over all positions.
        out = policy(input_ids, logits_to_keep=1, output_hidden_states=True)
        hidden = out.hidden_states[-1][:, :-1]
        lp, h = logps_and_entropy(hidden, input_ids[:, 1:], policy.lm_head.weight, mask=mask)
        return lp, h, head(hidden)

    value_losses, clip_fracs = [], []
    for step in range(3):
        with torch.no_grad():
            old_lp, old_h, old_v = forward()
        adv, ret = compute_advantages(old_v, turn_rewards, turn_ids, mask, cfg)
        for _ in range(3):
            lp, h, v = forward()
            ctx = LossContext(logps=lp, old_logps=old_lp, advantages=adv, mask=mask, entropy=h, old_entropy=old_h,
                              turn_ids=turn_ids, step=step, total_steps=3)  # fmt: skip
            pg_loss = compose_loss(ctx, hooks).loss
            v_loss, _ = clipped_value_loss(v, old_v, ret, mask, cfg.value_clip)
            loss = pg_loss + cfg.vf_coef * v_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            value_losses.append(float(v_loss.detach()))
            clip_fracs.append(ppo_clip_fraction(lp.detach(), old_lp, adv, mask))
        for hook in hooks:
            hook.end_step(step)
    assert value_losses[-1] < value_losses[0]
    assert clip_fracs[0] == 0.0 and all(0.0 <= c <= 1.0 for c in clip_fracs)
    assert hooks[0].history.count == 3


def test_separate_critic_learns_returns():
    critic = CriticModel.from_causal_lm(tiny_lm(1))
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    input_ids, mask, turn_ids, turn_rewards = _batch()
    with torch.no_grad():
        old_v = critic(input_ids)[:, :-1]
    _, ret = compute_advantages(old_v, turn_rewards, turn_ids, mask, CriticConfig(critic="separate"))
    losses = []
    for _ in range(10):
        v_loss, _ = clipped_value_loss(critic(input_ids)[:, :-1], old_v, ret, mask, clip=None)
        opt.zero_grad()
        v_loss.backward()
        opt.step()
        losses.append(float(v_loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
