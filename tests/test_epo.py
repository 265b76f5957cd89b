"""EPO (paper and released modes) with inputs that separate the formulas: a reference that is not 1, tokens on both
sides of and exactly on the corridor bounds, several rows and turns, steps past 0, the paper's default settings
(shared/specs/algorithms.md) checked against numbers computed here by hand."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch

from trl_plugins.hooks import EPOConfig, EPOHook, LossContext, LossHookConfigError, epo_entropy_loss
from trl_plugins.hooks import epo_smoothing_penalty as penalty

# Two trajectories. Row 0: turn 0 = two tokens, an environment observation (masked), turn 1 = one token, padding.
# Row 1: one turn of four tokens, then padding.  Masked positions hold 9.0, which must never count.
MASK = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.float64)
TURNS = torch.tensor([[0, 0, -1, -1, 1, -1], [0, 0, 0, 0, -1, -1]])
H = torch.tensor([[1.0, 4.2, 9.0, 9.0, 2.0, 9.0], [0.5, 3.5, 1.5, 4.5, 9.0, 9.0]], dtype=torch.float64)
# With H_ref = 1.5 and the paper's corridor (0 * 1.5, 2 * 1.5) = (0, 3): P = 1.2 (4.2), 0.5 (3.5), 1.5 (4.5), else 0.
REF, STEP, TOTAL = 1.5, 4, 10
L_H = ((1.0 + 4.2) / 2 + 2.0) / 2 / 2 + (0.5 + 3.5 + 1.5 + 4.5) / 4 / 2  # trajectory mean of turn means: 2.4
TURN_MEAN_P = (1.2 / 2 + 0.0) / 2 / 2 + (0.5 + 1.5) / 4 / 2  # the same averaging of P: 0.4
TOKEN_MEAN_P = (1.2 + 0.5 + 1.5) / 7  # the logged penalty: mean over the 7 model tokens


def paper_default_loss() -> float:
    """-lambda * (L_H - beta_k * alpha * P-average) with lambda = 0.001, alpha = 0.1, gamma = 3 (the paper's)."""
    beta = 1 + math.exp(-3.0 * STEP / (TOTAL // 2))
    return -0.001 * (L_H - beta * 0.1 * TURN_MEAN_P)


def test_smoothing_penalty_defaults_and_a_corridor_around_a_reference_other_than_one():
    # paper defaults kappa_l = 0, kappa_r = 2 around H_ref = 1.5: corridor (0, 3)
    h = torch.tensor([0.0, 1.0, 2.9, 3.0, 4.2])
    torch.testing.assert_close(penalty(h, 1.5), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.2]))
    # kappa = (0.5, 1.5) around H_ref = 2: corridor (1, 3)
    h = torch.tensor([0.25, 1.0, 2.0, 3.0, 3.5])
    torch.testing.assert_close(penalty(h, 2.0, 0.5, 1.5), torch.tensor([0.75, 0.0, 0.0, 0.0, 0.5]))
    # a corridor of width 0 is allowed: P = |H - H_ref|
    h = torch.tensor([0.5, 2.0, 3.25])
    torch.testing.assert_close(penalty(h, torch.tensor(2.0), 1.0, 1.0), torch.tensor([1.5, 0.0, 1.25]))


def test_entropy_loss_with_the_paper_defaults_by_hand():
    h = H.clone().requires_grad_()
    loss, stats = epo_entropy_loss(h, MASK, TURNS, REF, STEP, TOTAL)
    assert float(loss.detach()) == pytest.approx(paper_default_loss(), rel=1e-12)
    assert stats["beta"] == pytest.approx(1 + math.exp(-3.0 * 4 / 5))
    assert float(stats["entropy_term"]) == pytest.approx(L_H, rel=1e-12)
    assert float(stats["smooth"]) == pytest.approx(0.1 * TURN_MEAN_P, rel=1e-12)
    assert float(stats["penalty"]) == pytest.approx(TOKEN_MEAN_P, rel=1e-12)
    # the statistics are detached: logging them never keeps the graph alive or receives a gradient
    assert not any(v.requires_grad for v in (stats["entropy_term"], stats["smooth"], stats["penalty"]))
    assert loss.requires_grad


def test_hook_without_arguments_uses_the_paper_defaults_and_logs_every_part():
    hook = EPOHook()
    hook.load_state_dict({"history": {"total": 3.0, "count": 2}})  # two past steps: H_ref = 1.5
    ctx = LossContext(logps=torch.zeros(2, 6), old_logps=torch.zeros(2, 6), advantages=torch.zeros(2, 6), mask=MASK,
                      entropy=H.clone().requires_grad_(), turn_ids=TURNS, step=STEP, total_steps=TOTAL)  # fmt: skip
    loss = hook.extra_loss(ctx)
    assert float(loss.detach()) == pytest.approx(paper_default_loss(), rel=1e-12)
    m = hook.metrics()
    expected = {
        "epo/entropy_term": L_H,
        "epo/penalty": TOKEN_MEAN_P,
        "epo/smooth": 0.1 * TURN_MEAN_P,
        "epo/beta": 1 + math.exp(-3.0 * 4 / 5),
        "epo/reference": REF,
        "epo/loss": paper_default_loss(),
    }
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, rel=1e-6), k
    # the same hook built from a config keeps that config
    assert EPOHook(EPOConfig(alpha=0.05)).config.alpha == 0.05


def test_config_refuses_each_bad_setting_alone_and_accepts_the_edges():
    for bad in ({"kappa_low": 2.5}, {"released_low": 1.3}, {"coef": -1e-3}, {"alpha": -0.1}):
        with pytest.raises(LossHookConfigError):
            EPOConfig(**bad)
    edges = EPOConfig(coef=0.0, alpha=0.0, kappa_low=1.0, kappa_high=1.0, released_low=1.0, released_high=1.0)
    assert (edges.coef, edges.alpha, edges.kappa_low, edges.released_low) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(LossHookConfigError):
        penalty(torch.ones(2), 1.0, kappa_low=1.5, kappa_high=1.0)


def _ctx(entropy, mask=None, turns=None, **kw) -> LossContext:
    n = entropy.shape
    mask = torch.ones(n) if mask is None else mask
    return LossContext(logps=torch.zeros(n), old_logps=torch.zeros(n), advantages=torch.zeros(n), mask=mask,
                       entropy=entropy, turn_ids=None if turns is None else torch.tensor(turns), **kw)  # fmt: skip


def test_history_takes_a_step_with_a_single_model_token():
    hook = EPOHook()
    hook.extra_loss(_ctx(torch.tensor([[9.0, 2.5, 9.0]]), torch.tensor([[0.0, 1.0, 0.0]])))
    hook.end_step(0)
    assert (hook.history.count, hook.history.reference()) == (1, 2.5)


def test_hook_keeps_no_autograd_graph_alive_after_the_micro_batch():
    # The step's running entropy sum must hold values only: holding the graph would keep every micro-batch's
    # autograd graph (and the tensors it references) alive until end_step.
    x = torch.rand(1, 4, requires_grad=True)
    alive = weakref.ref(x)
    hook = EPOHook(coef=1.0)
    loss = hook.extra_loss(_ctx(x * 2.0, step=1, total_steps=4))
    loss.backward()
    expected = float(x.detach().mean()) * 2.0
    del x, loss
    gc.collect()
    assert alive() is None
    hook.end_step(1)
    assert hook.history.reference() == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------ released mode


def released_with_history(max_step: int = 5) -> EPOHook:
    """A released-mode hook after one step whose per-turn references are turn 0: 1.0, turn 1: 2.0, turn 2: 4.0."""
    hook = EPOHook(mode="released", coef=1.0, alpha=1.0, released_max_step=max_step)
    hook.extra_loss(_ctx(torch.tensor([[1.0, 2.0, 2.0, 4.0]]), turns=[[0, 1, 1, 2]]))
    hook.end_step(0)
    hook.metrics()
    return hook


def test_released_corridor_is_strict_relative_to_each_turns_reference_and_skips_unknown_turns():
    hook = released_with_history()
    assert {t: h.reference() for t, h in hook.turn_history.items()} == {0: 1.0, 1: 2.0, 2: 4.0}
    # turn 0 (ref 1): 0.8 and 1.2 sit exactly on the bounds -> outside; turn 1 (ref 2): 1.5 < 1.6 -> outside, 2.0 in;
    # turn 2 (ref 4): 4.0 in; turn 7 has no history -> never penalised (and its tokens open the gate: 7 >= 5 // 2).
    h = torch.tensor([[0.8, 1.2, 1.5, 2.0, 4.0, 50.0, 0.0]], requires_grad=True)
    loss = hook.extra_loss(_ctx(h, turns=[[0, 0, 1, 1, 2, 7, 7]], step=1, total_steps=10))
    weight = 1 - 0.2 * (1 - math.exp(-2.0 * 1 / 5))  # released weight, first half (k = 1 <= K // 2 = 5)
    l_h, l_pen = 59.5 / 7, 3 * 0.1 / 7
    assert float(loss.detach()) == pytest.approx(-(l_h - weight * l_pen), rel=1e-6)
    (g,) = torch.autograd.grad(loss, [h])
    torch.testing.assert_close(g, torch.full((1, 7), -1.0 / 7))  # the penalty is a constant
    m = hook.metrics()
    expected = {"epo/entropy_term": l_h, "epo/penalty": l_pen, "epo/beta": weight, "epo/gated": 1.0, "epo/loss": None}
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        if v is not None:
            assert m[k] == pytest.approx(v, rel=1e-6), k
    assert m["epo/loss"] == pytest.approx(float(loss.detach()), rel=1e-6)


def test_released_gate_with_an_odd_max_step_and_an_empty_micro_batch():
    hook = released_with_history(max_step=5)  # the released gate: turn >= 5 // 2 = 2
    # turn 0 (ref 1) and turn 2 (ref 4) both outside their corridors; turn 2 opens the gate
    loss = hook.extra_loss(_ctx(torch.tensor([[3.0, 3.0]]), turns=[[0, 2]], step=0, total_steps=10))
    assert float(loss) == pytest.approx(-(3.0 - 1.0 * 0.1), rel=1e-6)
    assert hook.metrics()["epo/gated"] == 1.0
    # a micro-batch without model tokens: no loss, and the gate is reported closed
    empty = _ctx(torch.tensor([[3.0, 3.0]]), torch.zeros(1, 2), turns=[[-1, -1]], step=0, total_steps=10)
    assert float(hook.extra_loss(empty)) == 0.0
    assert hook.metrics()["epo/gated"] == 0.0


def test_released_turn_history_survives_a_checkpoint():
    hook = released_with_history()
    hook.extra_loss(_ctx(torch.tensor([[3.0, 5.0, 7.0]]), turns=[[0, 3, 3]], step=1, total_steps=10))
    hook.end_step(1)
    resumed = EPOHook(mode="released", coef=1.0, alpha=1.0, released_max_step=5)
    resumed.load_state_dict(hook.state_dict())
    refs = {t: h.reference() for t, h in resumed.turn_history.items()}
    assert refs == {0: 2.0, 1: 2.0, 2: 4.0, 3: 6.0} == {t: h.reference() for t, h in hook.turn_history.items()}
    assert resumed.history.reference() == hook.history.reference() == pytest.approx((9.0 / 4 + 5.0) / 2)
    h = torch.tensor([[2.0, 9.0, 4.0]])
    batch = {"turns": [[0, 3, 2]], "step": 2, "total_steps": 10}
    assert float(resumed.extra_loss(_ctx(h, **batch))) == float(hook.extra_loss(_ctx(h, **batch)))
