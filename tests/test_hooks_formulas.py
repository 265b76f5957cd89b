"""Hook tests whose inputs separate the formulas: long histories, several rows, non-zero coefficients, and the
released-EPO turn gating (the issue's mutants -- a 20-step sliding window, per-row AEPO standardisation, an AEPO
coefficient that is never used -- must each fail one of these)."""

from __future__ import annotations

import pytest
import torch

from trl_plugins.aepo import AEPOHook, aepo_entropy_advantages
from trl_plugins.hooks import (
    EntropyHistory,
    EPOHook,
    LossContext,
    compose_loss,
    epo_smoothing_penalty,
)
from trl_plugins.hooks.reductions import masked_mean
from trl_plugins.hooks.schedules import epo_phase_weight, released_epo_weight


def batch(rows: int = 3, tokens: int = 5, seed: int = 0, **extra) -> LossContext:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, tokens)
    mask[1, 3:] = 0
    mask[2, 0] = 0
    turns = torch.tensor([[0, 0, 1, 1, 2]] * rows)
    return LossContext(
        logps=(-torch.rand(rows, tokens, generator=g)).requires_grad_(),
        old_logps=-torch.rand(rows, tokens, generator=g),
        advantages=torch.randn(rows, tokens, generator=g),
        mask=mask,
        entropy=(torch.rand(rows, tokens, generator=g) * 3).requires_grad_(),
        turn_ids=torch.where(mask.bool(), turns, -1),
        **extra,
    )


def test_epo_reference_is_the_mean_over_all_30_past_steps():
    # 30 RL steps (longer than any 20-step window), entropies rising: the reference is the all-step mean
    means = [0.1 * k + 0.05 * (k % 3) for k in range(30)]
    history = EntropyHistory()
    for m in means:
        history.push(m)
    assert history.reference() == pytest.approx(sum(means) / 30)
    assert history.reference() != pytest.approx(sum(means[-20:]) / 20)

    # through the hook: each step's token-mean entropy enters once, and step 30's loss uses their mean
    hook = EPOHook(coef=0.5, alpha=0.3, kappa_low=0.9, kappa_high=1.1)
    pushed = []
    for k in range(30):
        ctx = batch(seed=k, step=k, total_steps=40)
        ctx.entropy = (ctx.entropy * (1 + k / 10)).detach().requires_grad_()
        hook.extra_loss(ctx)
        pushed.append(float(masked_mean(ctx.entropy.detach(), ctx.mask)))
        hook.end_step(k)
    ref = sum(pushed) / 30
    assert hook.history.reference() == pytest.approx(ref, rel=1e-6)
    ctx = batch(seed=99, step=30, total_steps=40)
    loss = hook.extra_loss(ctx)
    h, mask = ctx.entropy.detach(), ctx.mask
    pen = epo_smoothing_penalty(h, ref, 0.9, 1.1)

    def turn_mean(v):  # by hand: rows' means of their turns' token means
        rows = []
        for r in range(v.shape[0]):
            turns = [v[r][(ctx.turn_ids[r] == t) & mask[r].bool()].mean() for t in range(3)]
            rows.append(sum(float(x) for x in turns if not torch.isnan(x)) / sum(not torch.isnan(x) for x in turns))
        return sum(rows) / len(rows)

    beta = epo_phase_weight(30, 40, 3.0)
    expected = -0.5 * (turn_mean(h) - beta * 0.3 * turn_mean(pen))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_aepo_standardises_over_the_whole_batch_not_per_row():
    ctx = batch(rows=3)
    # rows with very different entropy levels: per-row standardisation would centre each row on 0
    ctx.entropy = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.1], [2.0, 2.5, 3.0, 9.0, 9.0], [9.0, 1.0, 1.2, 1.1, 1.3]])
    out = aepo_entropy_advantages(ctx.advantages, ctx.entropy, ctx.mask, coef=0.4)
    valid = ctx.mask.bool()
    vals = ctx.entropy[valid]
    h_hat = (ctx.entropy - vals.mean()) / vals.std(unbiased=True)
    expected = torch.where(valid, ctx.advantages * (1 + 0.4 * h_hat), ctx.advantages)
    torch.testing.assert_close(out, expected)
    # row 0 (low entropy) is scaled down everywhere, which per-row standardisation cannot give
    scale = (out / ctx.advantages)[0]
    assert (scale < 1).all()


def test_aepo_hook_with_a_nonzero_coefficient_changes_loss_and_gradient_by_the_formula():
    from trl_plugins.aepo import aepo_policy_loss
    from trl_plugins.hooks.compose import reduce_token_loss

    results = {}
    for coef in (0.0, 0.7):
        ctx = batch(rows=3, seed=3)
        terms = compose_loss(ctx, [AEPOHook(coef=coef, eps_high=0.1)], loss_type="bnpo")
        terms.loss.backward()
        results[coef] = (float(terms.loss), ctx.logps.grad.clone())
        # by hand: entropy-aware advantages (batch-standardised), then the gradient-preserving clip
        ref = batch(rows=3, seed=3)
        adv = aepo_entropy_advantages(ref.advantages, ref.entropy, ref.mask, coef)
        by_hand = reduce_token_loss(aepo_policy_loss(ref.logps, ref.old_logps, adv, ref.mask, 0.2, 0.1, 3.0), ref.mask)
        by_hand.backward()
        assert float(terms.loss) == pytest.approx(float(by_hand), rel=1e-6)
        torch.testing.assert_close(ctx.logps.grad, ref.logps.grad)
    assert results[0.0][0] != pytest.approx(results[0.7][0], rel=1e-3)
    assert not torch.allclose(results[0.0][1], results[0.7][1])


def released_hook(max_step: int = 4) -> EPOHook:
    hook = EPOHook(coef=1.0, alpha=1.0, mode="released", released_max_step=max_step)
    # history per turn index: turn 0 -> 1.0, turn 1 -> 2.0, turn 2 -> 1.0, turn 3 -> 2.0
    ctx = LossContext(
        logps=torch.zeros(1, 4), old_logps=torch.zeros(1, 4), advantages=torch.zeros(1, 4), mask=torch.ones(1, 4),
        entropy=torch.tensor([[1.0, 2.0, 1.0, 2.0]]), turn_ids=torch.tensor([[0, 1, 2, 3]]),
    )
    hook.extra_loss(ctx)
    hook.end_step(0)
    return hook


def released_batch(turns, entropy=3.0, step=1) -> LossContext:
    n = len(turns)
    return LossContext(
        logps=torch.zeros(1, n), old_logps=torch.zeros(1, n), advantages=torch.zeros(1, n), mask=torch.ones(1, n),
        entropy=torch.full((1, n), entropy, requires_grad=True), turn_ids=torch.tensor([turns]), step=step,
        total_steps=10,
    )


def test_released_epo_gates_the_smoothing_term_on_turn_max_step_half():
    # every token is outside its turn's corridor (3.0 vs refs 1 and 2), but no turn reaches max_step // 2 = 2:
    # the released code applies no smoothing, the loss is the entropy bonus alone: -1.0 * 3.0
    hook = released_hook(max_step=4)
    assert float(hook.extra_loss(released_batch([0, 0, 1, 1]))) == pytest.approx(-3.0, abs=1e-6)
    # one token of turn 2 opens the gate for the whole micro-batch: every out-of-corridor token pays 0.1 * weight
    loss = hook.extra_loss(released_batch([0, 1, 1, 2]))
    weight = released_epo_weight(1, 10, 3.0)
    assert float(loss) == pytest.approx(-(3.0 - weight * 0.1), abs=1e-6)
    # without a trainer the gate uses the released default max_step = 50 (threshold 25)
    hook = EPOHook(coef=1.0, alpha=1.0, mode="released")
    assert hook.config.released_max_step is None


def test_released_epo_evaluation_passes_do_not_feed_the_turn_history():
    hook = released_hook()
    before = {t: (h.total, h.count) for t, h in hook.turn_history.items()}
    ctx = released_batch([0, 1, 2, 3], entropy=7.0)
    ctx.training = False
    hook.extra_loss(ctx)
    hook.end_step(1)
    assert {t: (h.total, h.count) for t, h in hook.turn_history.items()} == before
    assert hook.history.count == 1
