"""The loss reduction against TRL's formulas, recomputed here entry by entry in plain Python.

``trl_plugins.hooks.reductions`` (masked means, whitening, EPO's turn-token mean, PPO's clip regions and surrogate,
token- and sequence-level importance weights, every TRL ``loss_type``'s per-token loss, the k3 KL) and
``trl_plugins.hooks.compose`` (the hook builder, every ``loss_type``'s reduction, the documented order of
``compose_loss``).  The reference is TRL 1.16's ``GRPOTrainer._compute_loss`` and ``get_gamma_weights``, written
out again below as loops over rows and tokens.  The inputs separate the formulas: rows of different lengths (one
of a single token, one empty), masked tokens holding large or non-finite values, more rows than turns and more
tokens than rows, ratios on both sides of the clip band and exactly on its edges, advantages of both signs, zero and
between 0 and 1, non-zero coefficients.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from trl import GRPOConfig

from trl_plugins.aepo import AEPOHook
from trl_plugins.hooks import (
    LOSS_TYPES,
    UNSCALED_LOSS_TYPES,
    EPOHook,
    ERCHook,
    LossContext,
    LossHook,
    LossHookConfigError,
    build_hooks,
    compose_loss,
    reduce_token_loss,
)
from trl_plugins.hooks.reductions import (
    clip_regions,
    clipped_surrogate,
    entropy_metrics,
    importance_log_weights,
    masked_mean,
    masked_whiten,
    per_token_kl,
    policy_token_loss,
    ppo_clip_token_loss,
    turn_token_mean,
)

#: TRL's GRPOConfig defaults (the fields, without building a config).
TRL = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
CLIP_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
INF = math.inf


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(a, b, tol: float = 1e-6) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), t64(b), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------- reference (TRL, in loops)


def ref_reduce(loss, mask, loss_type, normalizer=None, max_length=None) -> float:
    """TRL's reduction of ``loss_type`` over the masked tokens (masked entries are never read)."""
    rows = [[v for v, k in zip(r, m, strict=True) if k] for r, m in zip(loss, mask, strict=True)]
    total, count = sum(sum(r) for r in rows), sum(len(r) for r in rows)
    if loss_type in ("grpo", "sapo"):
        return sum(sum(r) / max(len(r), 1) for r in rows) / len(rows)
    if loss_type == "bnpo":
        return total / max(count, 1)
    if loss_type in ("dapo", "cispo", "vespo"):
        return total / (max(count, 1) if normalizer is None else normalizer)
    if loss_type == "luspo":
        return sum(sum(r) for r in rows) / len(rows)
    assert loss_type == "dr_grpo"
    return total / (len(loss) * (len(loss[0]) if max_length is None else max_length))


def ref_vespo_phi(log_ratio_row, mask_row, adv, k_pos, lam_pos, k_neg, lam_neg, sampling_row=None) -> float:
    """VESPO's gamma weight of one token: ``exp(lam + k log w - lam w)``, ``w`` the sequence's clamped ratio."""
    log_w = sum(min(max(v, -20.0), 20.0) for v, k in zip(log_ratio_row, mask_row, strict=True) if k)
    if sampling_row is not None:
        log_w += sum(min(max(math.log(s), math.log(1e-8)), 20.0) for s in sampling_row)
    log_w = min(max(log_w, math.log(1e-8)), 20.0)
    k, lam = (k_pos, lam_pos) if adv >= 0 else (k_neg, lam_neg)
    return math.exp(lam + k * log_w - lam * math.exp(log_w))


def ref_token_loss(loss_type, lp, old, adv, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=None, delta=None,
                   level="token", sapo=(1.0, 1.05), vespo=(2.0, 3.0, 3.0, 2.0), sampling=None):  # fmt: skip
    """TRL's per-token policy loss and importance weight, entry by entry: ``(loss rows, weight rows)``."""
    out, weights = [], []
    for i, (lp_r, old_r, a_r, m_r) in enumerate(zip(lp, old, adv, mask, strict=True)):
        log_r = [x - y for x, y in zip(lp_r, old_r, strict=True)]
        if level == "sequence":
            n = sum(1 for k in m_r if k)
            seq = sum(v for v, k in zip(log_r, m_r, strict=True) if k) / max(n, 1)
            log_w = [seq] * len(log_r)
        else:
            log_w = log_r
        row, w_row = [], []
        for j, (x, a) in enumerate(zip(lp_r, a_r, strict=True)):
            r = math.exp(log_w[j])
            w_row.append(r)
            if loss_type in CLIP_TYPES:
                c = min(max(r, 1 - eps_low), 1 + eps_high)
                u = r if delta is None else min(r, delta)
                v = max(-a * u, -a * c)
                if dual_clip is not None and a < 0:
                    v = min(v, -dual_clip * a)
            elif loss_type == "cispo":
                v = -min(r, eps_high) * a * x
            elif loss_type == "sapo":
                tau = sapo[0] if a > 0 else sapo[1]
                v = -(1 / (1 + math.exp(-tau * (r - 1)))) * 4 / tau * a
            else:
                phi = ref_vespo_phi(log_r, m_r, a, *vespo, None if sampling is None else sampling[i])
                v = -phi * a * x
            row.append(v)
        out.append(row)
        weights.append(w_row)
    return out, weights


def ref_kl(ref, lp) -> list[list[float]]:
    return [[math.exp(r - x) - (r - x) - 1 for r, x in zip(rr, lr, strict=True)] for rr, lr in zip(ref, lp, strict=True)]


# ---------------------------------------------------------------------------------- inputs

# Four rows of six tokens: an environment token inside row 0, one valid token in row 1, a masked prefix in row 2,
# row 3 empty.  Masked entries hold values that would show up in any sum.
MASK = [[1, 1, 0, 1, 1, 1], [0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
TOKEN_LOSS = [
    [0.5, -1.25, INF, 2.0, 0.75, -0.5],
    [99.0, 3.0, 99.0, 99.0, 99.0, 99.0],
    [INF, 99.0, -0.5, 1.5, 2.5, -2.0],
    [99.0, 99.0, 99.0, 99.0, 99.0, 99.0],
]
LOGPS = [
    [-0.3, -1.2, -5.0, -0.7, -2.1, -0.9],
    [-4.0, -0.4, -3.0, -1.0, -1.0, -1.0],
    [-2.0, -1.0, -0.2, -1.6, -0.8, -1.3],
    [-1.0, -1.0, -1.0, -1.0, -1.0, -1.0],
]
# ratios: 1.5 (above the band), 0.5 (below it), 1.28 and 0.8 (on its edges for eps 0.2 / 0.28), near 1, ...
LOG_RATIO = [
    [math.log(1.5), math.log(0.5), 3.0, math.log(1.1), math.log(0.7), math.log(2.5)],
    [0.0, math.log(1.6), -2.0, 0.0, 0.0, 0.0],
    [0.1, 0.2, math.log(0.8), math.log(1.28), math.log(0.6), math.log(3.0)],
    [0.3, -0.3, 0.1, 0.0, 0.2, 0.4],
]
OLD_LOGPS = [[x - r for x, r in zip(lr, rr, strict=True)] for lr, rr in zip(LOGPS, LOG_RATIO, strict=True)]
ADVANTAGES = [
    [1.0, -1.5, 2.0, 0.5, -0.75, -2.0],
    [0.3, 0.5, 1.0, 1.0, 1.0, 1.0],
    [-1.0, 0.25, -0.5, 1.25, 0.0, -1.0],
    [1.0, 1.0, -1.0, -1.0, 1.0, 1.0],
]
REF_LOGPS = [[x + 0.1 * ((i * 6 + j) % 7 - 3) for j, x in enumerate(row)] for i, row in enumerate(LOGPS)]


def context(advantages=ADVANTAGES, ref: bool = True) -> LossContext:
    return LossContext(
        logps=t64(LOGPS).requires_grad_(),
        old_logps=t64(OLD_LOGPS),
        advantages=t64(advantages),
        mask=t64(MASK),
        ref_logps=t64(REF_LOGPS) if ref else None,
    )


# ---------------------------------------------------------------------------------- masked mean and whitening


def test_masked_mean_reads_only_masked_values_and_sums_processes():
    values, mask = t64(TOKEN_LOSS), t64(MASK)
    valid = [v for r, m in zip(TOKEN_LOSS, MASK, strict=True) for v, k in zip(r, m, strict=True) if k]
    assert float(masked_mean(values, mask)) == pytest.approx(sum(valid) / len(valid))
    # one valid token: its value, not half of it
    assert float(masked_mean(t64([[5.0, 7.0, 1.0]]), t64([[0, 1, 0]]))) == 7.0
    # an empty mask gives 0, finite, still on the graph
    x = t64([[INF, 2.0]]).requires_grad_()
    empty = masked_mean(x, torch.zeros(1, 2))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    # across processes: another process holds total 10 over 3 tokens -> (sum + 10) / (n + 3)
    other = t64([10.0, 3.0])
    assert float(masked_mean(values, mask, all_reduce=lambda s: s + other)) == pytest.approx(
        (sum(valid) + 10.0) / (len(valid) + 3)
    )


def test_masked_whiten_standardises_with_the_unbiased_std():
    x, mask = t64([2.0, 4.0, 9.0, 100.0, 7.0]), t64([1, 1, 1, 0, 1])
    vals = [2.0, 4.0, 9.0, 7.0]
    mean = sum(vals) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / 3 + 1e-8)
    expected = [(v - mean) / std if k else 0.0 for v, k in zip(x.tolist(), mask.tolist(), strict=True)]
    close(masked_whiten(x, mask), expected)
    shifted = [e + mean if k else 0.0 for e, k in zip(expected, mask.tolist(), strict=True)]
    close(masked_whiten(x, mask, shift_mean=False), shifted)
    # two values are whitened as well (unbiased std of [1, 3] is sqrt(2))
    close(masked_whiten(t64([1.0, 3.0, 50.0]), t64([1, 1, 0])), [-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0], 1e-6)
    # constant values give zeros, not NaN (the variance floor)
    close(masked_whiten(t64([3.0, 3.0, 3.0, 8.0]), t64([1, 1, 1, 0])), [0.0, 0.0, 0.0, 0.0])


def test_masked_whiten_of_one_value_only_centres():
    x, mask = t64([5.0, 9.0]), t64([1, 0])
    close(masked_whiten(x, mask), [0.0, 0.0])
    close(masked_whiten(x, mask, shift_mean=False), [5.0, 0.0])
    close(masked_whiten(x, torch.zeros(2)), [0.0, 0.0])


# ---------------------------------------------------------------------------------- EPO's turn-token mean

TURN_VALUES = [
    [1.0, 3.0, INF, 4.0, 2.0, 6.0, 100.0],
    [2.0, 4.0, 9.0, 100.0, 100.0, 100.0, 100.0],
    [100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0],
    [5.0, 7.0, 100.0, 8.0, 1.0, 3.0, 2.0],
]
TURN_MASK = [[1, 1, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0], [0] * 7, [1, 1, 0, 1, 1, 1, 1]]
# row 0: turns 0 (2 tokens), 1 (1 token), 2 (2 tokens); row 1: one turn; row 2: nothing; row 3: turns 0 and 2 only,
# a masked token tagged with turn 5 (ignored).
TURN_IDS = [[0, 0, 5, 1, 2, 2, -1], [0, 0, 0, -1, -1, -1, -1], [-1] * 7, [0, 0, 5, 2, 2, 2, 2]]


def ref_turn_token_mean(values, mask, turn_ids) -> float:
    row_means = []
    for v_r, m_r, t_r in zip(values, mask, turn_ids, strict=True):
        turns: dict[int, list[float]] = {}
        for v, k, t in zip(v_r, m_r, t_r, strict=True):
            if k:
                turns.setdefault(max(t, 0), []).append(v)
        if turns:
            row_means.append(sum(sum(x) / len(x) for x in turns.values()) / len(turns))
    return sum(row_means) / len(row_means) if row_means else 0.0


def test_turn_token_mean_by_hand_with_uneven_rows_and_turns():
    values = t64(TURN_VALUES).requires_grad_()
    out = turn_token_mean(values, t64(TURN_MASK), torch.tensor(TURN_IDS))
    expected = ref_turn_token_mean(TURN_VALUES, TURN_MASK, TURN_IDS)
    assert expected == pytest.approx(((2 + 4 + 4) / 3 + 5.0 + (6 + 3.5) / 2) / 3)
    assert float(out.detach()) == pytest.approx(expected)
    (grad,) = torch.autograd.grad(out, values)
    # weight of a token: 1/rows * 1/turns of its row * 1/tokens of its turn
    weights = [
        [1 / 18, 1 / 18, 0, 1 / 9, 1 / 18, 1 / 18, 0],
        [1 / 9, 1 / 9, 1 / 9, 0, 0, 0, 0],
        [0] * 7,
        [1 / 12, 1 / 12, 0, 1 / 24, 1 / 24, 1 / 24, 1 / 24],
    ]
    close(grad, weights)
    # without turn ids every row is one turn
    no_turns = [[0 if k else -1 for k in row] for row in TURN_MASK]
    assert float(turn_token_mean(values, t64(TURN_MASK)).detach()) == pytest.approx(
        ref_turn_token_mean(TURN_VALUES, TURN_MASK, no_turns)
    )


def test_turn_token_mean_of_one_row_one_sequence_and_nothing():
    # one row with valid tokens among two: its mean, not half of it
    assert float(turn_token_mean(t64([[1.0, 2.0, 6.0], [9.0, 9.0, 9.0]]), t64([[1, 1, 1], [0, 0, 0]]))) == 3.0
    # a single trajectory as a 1-D tensor, with and without turns
    v, m = t64([1.0, 1.0, 1.0, 4.0, 50.0]), t64([1, 1, 1, 1, 0])
    assert float(turn_token_mean(v, m, torch.tensor([0, 0, 0, 1, 1]))) == pytest.approx(2.5)
    assert float(turn_token_mean(v, m)) == pytest.approx(7 / 4)
    # nothing valid: 0, on the graph
    x = t64([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).requires_grad_()
    empty = turn_token_mean(x, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    with pytest.raises(LossHookConfigError, match="differ"):
        turn_token_mean(torch.ones(2, 3), torch.ones(3, 2))


def test_entropy_metrics_per_turn_below_max_turns():
    h = t64([[1.0, 3.0, 6.0, 2.0, 4.0, 9.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 1]])
    turns = torch.tensor([[0, 0, 1, 10, 11, 1, 11]])
    mean = (1 + 3 + 6 + 2 + 4 + 7) / 6
    assert entropy_metrics(h, mask, turns) == pytest.approx(
        {"entropy/mean": mean, "entropy/turn_0": 2.0, "entropy/turn_1": 6.0}
    )
    assert entropy_metrics(h, mask, turns, max_turns=11) == pytest.approx(
        {"entropy/mean": mean, "entropy/turn_0": 2.0, "entropy/turn_1": 6.0, "entropy/turn_10": 2.0}
    )
    assert entropy_metrics(h, mask, turns, max_turns=None) == pytest.approx(
        {"entropy/mean": mean, "entropy/turn_0": 2.0, "entropy/turn_1": 6.0, "entropy/turn_10": 2.0,
         "entropy/turn_11": 5.5}
    )  # fmt: skip
    assert entropy_metrics(h, mask) == pytest.approx({"entropy/mean": mean})


# ---------------------------------------------------------------------------------- PPO's clip


def test_clip_regions_are_trls_clip_metrics_at_the_band_edges():
    # (ratio, advantage, low clipped, high clipped) with eps_low = 0.25, eps_high = 0.5: the band is [0.75, 1.5]
    cases = [
        (0.5, -1.0, True, False), (0.75, -1.0, False, False), (0.5, 0.0, False, False), (0.5, 0.5, False, False),
        (0.5, 1.0, False, False), (1.0, -1.0, False, False), (1.0, 1.0, False, False), (1.5, 1.0, False, False),
        (2.0, 1.0, False, True), (2.0, 0.5, False, True), (2.0, 0.0, False, False), (2.0, -1.0, False, False),
    ]  # fmt: skip
    ratio, adv = t64([c[0] for c in cases]), t64([c[1] for c in cases])
    low, high = clip_regions(ratio, adv, 0.25, 0.5)
    assert low.tolist() == [c[2] for c in cases]
    assert high.tolist() == [c[3] for c in cases]
    # defaults: TRL's epsilon (0.2) on both sides
    ratio, adv = t64([0.7, 0.9, 1.1, 1.3]), t64([-1.0, -1.0, 1.0, 1.0])
    low, high = clip_regions(ratio, adv)
    assert low.tolist() == [True, False, False, False] and high.tolist() == [False, False, False, True]
    trl_low, trl_high = clip_regions(ratio, adv, TRL["epsilon"], TRL["epsilon"])
    assert torch.equal(low, trl_low) and torch.equal(high, trl_high)


def test_clipped_surrogate_and_dual_clip_by_hand():
    r = [0.5, 0.9, 1.5, 2.0, 0.5, 1.5, 4.0, 2.0, 1.0, 3.0]
    a = [1.0, -2.0, 0.5, -0.5, -1.5, 2.0, -1.0, 0.0, 3.0, -0.25]
    ratio = t64(r).requires_grad_()
    clipped = ratio.clamp(0.8, 1.2)
    c = [min(max(x, 0.8), 1.2) for x in r]
    plain = [max(-ai * ri, -ai * ci) for ri, ai, ci in zip(r, a, c, strict=True)]
    close(clipped_surrogate(ratio, clipped, t64(a)), plain)
    dual = clipped_surrogate(ratio, clipped, t64(a), dual_clip=2.5)
    close(dual, [min(p, -2.5 * ai) if ai < 0 else p for p, ai in zip(plain, a, strict=True)])
    assert float(dual[6].detach()) == 2.5 and float(dual[2].detach()) == pytest.approx(-0.6)  # dual clip active / positive A untouched
    (g,) = torch.autograd.grad(dual.sum(), ratio)  # no gradient where a clip is active
    close(g, [-1.0, 2.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, -3.0, 0.0])


def test_ppo_clip_token_loss_defaults_delta_and_dual_clip():
    lp, old, adv = t64(LOGPS), t64(OLD_LOGPS), t64(ADVANTAGES)
    all_valid = [[1] * 6] * 4
    eps = TRL["epsilon"]  # the defaults: TRL's epsilon on both sides
    expected, _ = ref_token_loss("grpo", LOGPS, OLD_LOGPS, ADVANTAGES, all_valid, eps_low=eps, eps_high=eps)
    close(ppo_clip_token_loss(lp, old, adv), expected)
    expected, _ = ref_token_loss("grpo", LOGPS, OLD_LOGPS, ADVANTAGES, all_valid, eps_low=0.25, eps_high=0.3,
                                 delta=1.4, dual_clip=2.2)  # fmt: skip
    close(ppo_clip_token_loss(lp, old, adv, 0.25, 0.3, dual_clip=2.2, delta=1.4), expected)
    assert float(ppo_clip_token_loss(lp, old, adv, 0.25, 0.3, delta=1.4)[0, 5]) == pytest.approx(2.0 * 1.4)


# ---------------------------------------------------------------------------------- importance weights and losses


def test_importance_log_weights_per_token_and_per_sequence():
    lp, old, mask = t64(LOGPS), t64(OLD_LOGPS), t64(MASK)
    close(importance_log_weights(lp, old, mask), LOG_RATIO)
    seq = importance_log_weights(lp, old, mask, "sequence")
    assert seq.shape == (4, 1)
    expected = []
    for lr, m in zip(LOG_RATIO, MASK, strict=True):
        valid = [v for v, k in zip(lr, m, strict=True) if k]
        expected.append([sum(valid) / max(len(valid), 1)])
    assert expected[1] == [math.log(1.6)] and expected[3] == [0.0]
    close(seq, expected)
    with pytest.raises(LossHookConfigError, match="importance_sampling_level"):
        importance_log_weights(lp, old, mask, "tokens")


SETTINGS = {
    "grpo": {}, "bnpo": {"eps_low": 0.25, "eps_high": 0.28}, "dr_grpo": {"eps_high": 0.28, "delta": 1.4},
    "dapo": {"eps_low": 0.3, "dual_clip": 2.2}, "luspo": {"eps_high": 0.28, "level": "sequence"},
    "cispo": {"eps_high": 1.3}, "sapo": {"sapo": (0.9, 1.3)}, "vespo": {"vespo": (1.5, 2.5, 2.0, 1.2)},
}  # fmt: skip


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_token_loss_is_trls_per_token_loss(loss_type):
    kw = SETTINGS[loss_type]
    expected, weights = ref_token_loss(loss_type, LOGPS, OLD_LOGPS, ADVANTAGES, MASK, **kw)
    ours = {"sapo": "sapo_temperatures"}
    kwargs = {ours.get(k, k): v for k, v in kw.items()}
    lp = t64(LOGPS).requires_grad_()
    loss, w = policy_token_loss(loss_type, lp, t64(OLD_LOGPS), t64(ADVANTAGES), t64(MASK), **kwargs)
    assert loss.shape == (4, 6)
    close(loss, expected)
    close(w.expand(4, 6), weights)
    assert w.shape == ((4, 1) if kw.get("level") == "sequence" else (4, 6))
    if loss_type in ("cispo", "vespo"):  # the weight carries no gradient: d loss / d logp = loss / logp
        (g,) = torch.autograd.grad(loss.sum(), lp)
        close(g, [[v / x for v, x in zip(vr, xr, strict=True)] for vr, xr in zip(expected, LOGPS, strict=True)])


def test_policy_token_loss_at_sequence_level_is_gspo():
    # GSPO: one weight per row (the token mean of the log ratio over valid tokens), PPO's clip on it
    expected, weights = ref_token_loss("grpo", LOGPS, OLD_LOGPS, ADVANTAGES, MASK, level="sequence", eps_high=0.28)
    loss, w = policy_token_loss("grpo", t64(LOGPS), t64(OLD_LOGPS), t64(ADVANTAGES), t64(MASK), level="sequence",
                                eps_high=0.28)  # fmt: skip
    close(loss, expected)
    close(w, [[row[0]] for row in weights])


def test_policy_token_loss_defaults_are_trls():
    lp, old, adv, mask = t64(LOGPS), t64(OLD_LOGPS), t64(ADVANTAGES), t64(MASK)
    for loss_type in LOSS_TYPES:
        loss, w = policy_token_loss(loss_type, lp, old, adv, mask)
        expected, weights = ref_token_loss(
            loss_type, LOGPS, OLD_LOGPS, ADVANTAGES, MASK, eps_low=TRL["epsilon"], eps_high=TRL["epsilon"],
            level=TRL["importance_sampling_level"], sapo=(TRL["sapo_temperature_pos"], TRL["sapo_temperature_neg"]),
            vespo=(TRL["vespo_k_pos"], TRL["vespo_lambda_pos"], TRL["vespo_k_neg"], TRL["vespo_lambda_neg"]),
        )  # fmt: skip
        close(loss, expected)
        close(w, weights)
    with pytest.raises(LossHookConfigError, match="unknown loss_type"):
        policy_token_loss("ppo", lp, old, adv, mask)


def test_vespo_weight_folds_in_the_sampling_ratio():
    sampling = [[1.3 if k else 1.0 for k in row] for row in MASK]
    sampling[2][3] = 0.6
    expected, _ = ref_token_loss("vespo", LOGPS, OLD_LOGPS, ADVANTAGES, MASK, sampling=sampling)
    loss, _ = policy_token_loss("vespo", t64(LOGPS), t64(OLD_LOGPS), t64(ADVANTAGES), t64(MASK),
                                sampling_ratio=t64(sampling))  # fmt: skip
    close(loss, expected)
    without, _ = ref_token_loss("vespo", LOGPS, OLD_LOGPS, ADVANTAGES, MASK)
    assert expected[0][0] != pytest.approx(without[0][0], rel=1e-3)


def test_per_token_kl_is_the_k3_estimator():
    kl = per_token_kl(t64(REF_LOGPS), t64(LOGPS))
    close(kl, ref_kl(REF_LOGPS, LOGPS))
    assert bool((kl >= 0).all()) and float(kl[0, 2]) > 0.0
    assert float(per_token_kl(t64([-0.7]), t64([-0.7]))) == 0.0


# ---------------------------------------------------------------------------------- reduction of every loss_type


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_reduce_token_loss_is_trls_reduction(loss_type):
    tl, mask = t64(TOKEN_LOSS), t64(MASK)
    close(reduce_token_loss(tl, mask, loss_type), ref_reduce(TOKEN_LOSS, MASK, loss_type))
    close(reduce_token_loss(tl, mask, loss_type, normalizer=7.5, max_length=12),
          ref_reduce(TOKEN_LOSS, MASK, loss_type, normalizer=7.5, max_length=12))  # fmt: skip


def test_reduce_token_loss_defaults_and_single_tokens():
    tl, mask = t64(TOKEN_LOSS), t64(MASK)
    close(reduce_token_loss(tl, mask), ref_reduce(TOKEN_LOSS, MASK, "bnpo"))  # the default is bnpo
    one = [[INF, 4.0, 99.0]], [[0, 1, 0]]
    for loss_type in ("bnpo", "dapo", "grpo"):  # one valid token: its value
        assert float(reduce_token_loss(t64(one[0]), t64(one[1]), loss_type)) == 4.0
    normalizer = torch.tensor(20.0, dtype=torch.float64)
    close(reduce_token_loss(tl, mask, "dapo", normalizer=normalizer), ref_reduce(TOKEN_LOSS, MASK, "dapo", 20.0))
    with pytest.raises(LossHookConfigError, match="loss_type"):
        reduce_token_loss(tl, mask, "ppo")


def test_the_unscaled_loss_types_are_those_whose_normaliser_spans_the_window():
    tl, mask = t64(TOKEN_LOSS), t64(MASK)
    for loss_type in LOSS_TYPES:
        plain = float(reduce_token_loss(tl, mask, loss_type))
        given = float(reduce_token_loss(tl, mask, loss_type, normalizer=7.5))
        if loss_type in UNSCALED_LOSS_TYPES:
            assert given == pytest.approx(ref_reduce(TOKEN_LOSS, MASK, "dapo", normalizer=7.5)) and given != plain
        else:
            assert given == plain


# ---------------------------------------------------------------------------------- compose_loss


class ScaleAdvantages(LossHook):
    name = "scale"

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def transform_advantages(self, ctx):
        return ctx.advantages * self.factor


class FixedPolicyLoss(LossHook):
    """Replaces the policy loss by ``scale * logps`` (or declines, with ``scale=None``)."""

    name = "fixed"

    def __init__(self, scale: float | None) -> None:
        self.scale = scale

    def policy_loss(self, ctx):
        return None if self.scale is None else self.scale * ctx.logps


class ZeroTokenLoss(LossHook):
    name = "zero"

    def transform_token_loss(self, ctx, token_loss):
        return token_loss * 0.0


class ConstantExtra(LossHook):
    name = "extra"

    def __init__(self, value: float | None) -> None:
        self.value = value

    def extra_loss(self, ctx):
        return None if self.value is None else torch.tensor(self.value, dtype=torch.float64)


def expected_compose(loss_type, advantages=ADVANTAGES, *, kl_coef=0.0, bias=False, sampling=None, normalizer=None,
                     max_length=None, **kw) -> float:  # fmt: skip
    tl, w = ref_token_loss(loss_type, LOGPS, OLD_LOGPS, advantages, MASK, sampling=sampling, **kw)
    if sampling is not None and loss_type != "vespo":
        tl = [[v * s for v, s in zip(r, sr, strict=True)] for r, sr in zip(tl, sampling, strict=True)]
    if kl_coef:
        kl = ref_kl(REF_LOGPS, LOGPS)
        tl = [[v + kl_coef * k * (wi if bias else 1.0) for v, k, wi in zip(r, kr, wr, strict=True)]
              for r, kr, wr in zip(tl, kl, w, strict=True)]  # fmt: skip
    return ref_reduce(tl, MASK, loss_type, normalizer, max_length)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_compose_loss_without_hooks_is_trls_loss(loss_type):
    for bias in (False, True):
        ctx = context()
        terms = compose_loss(ctx, [], loss_type=loss_type, eps_low=0.25, eps_high=1.3 if loss_type == "cispo" else 0.28,
                             kl_coef=0.07, kl_bias_correction=bias, normalizer=9.0, max_length=10)  # fmt: skip
        expected = expected_compose(loss_type, kl_coef=0.07, bias=bias, normalizer=9.0, max_length=10, eps_low=0.25,
                                    eps_high=1.3 if loss_type == "cispo" else 0.28)  # fmt: skip
        assert float(terms.loss) == pytest.approx(expected, rel=1e-6)
        assert float(terms.policy_loss) == float(terms.loss) and float(terms.extra_loss) == 0.0
        close(terms.ratio, [[math.exp(x) for x in row] for row in LOG_RATIO])


def test_compose_loss_defaults():
    # no settings: bnpo of PPO's clip at TRL's epsilon, no KL (no reference log-probs needed), token-level weights
    terms = compose_loss(context(ref=False), [])
    eps = TRL["epsilon"]
    assert float(terms.loss) == pytest.approx(expected_compose("bnpo", eps_low=eps, eps_high=eps), rel=1e-6)
    # the KL term without bias correction unless asked
    terms = compose_loss(context(), [], kl_coef=0.07)
    assert float(terms.loss) == pytest.approx(expected_compose("bnpo", kl_coef=0.07, eps_low=eps, eps_high=eps))
    # SAPO's temperatures and VESPO's gamma parameters default to TRL's
    for loss_type in ("sapo", "vespo"):
        terms = compose_loss(context(ref=False), [], loss_type=loss_type)
        expected = expected_compose(loss_type, sapo=(TRL["sapo_temperature_pos"], TRL["sapo_temperature_neg"]),
                                    vespo=(TRL["vespo_k_pos"], TRL["vespo_lambda_pos"], TRL["vespo_k_neg"],
                                           TRL["vespo_lambda_neg"]))  # fmt: skip
        assert float(terms.loss) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(LossHookConfigError, match="loss_type"):
        compose_loss(context(), [], loss_type="ppo")
    with pytest.raises(LossHookConfigError, match="ref_logps"):
        compose_loss(context(ref=False), [], kl_coef=0.1)


def test_compose_loss_applies_the_hooks_in_the_documented_order():
    hooks = [ScaleAdvantages(2.0), FixedPolicyLoss(None), FixedPolicyLoss(0.5), FixedPolicyLoss(-3.0),
             ConstantExtra(0.25), ConstantExtra(None), ConstantExtra(-0.1)]  # fmt: skip
    ctx = context()
    terms = compose_loss(ctx, hooks, loss_type="grpo")
    # advantages transformed; the first hook's policy loss; the extras summed and added
    close(ctx.advantages, [[2 * a for a in row] for row in ADVANTAGES])
    close(terms.token_loss, [[0.5 * x for x in row] for row in LOGPS])
    policy = ref_reduce([[0.5 * x for x in row] for row in LOGPS], MASK, "grpo")
    assert float(terms.policy_loss) == pytest.approx(policy)
    assert float(terms.extra_loss) == pytest.approx(0.15)
    assert float(terms.loss) == pytest.approx(policy + 0.15)
    # a hook declining the policy loss after one that gave it changes nothing
    terms = compose_loss(context(), [FixedPolicyLoss(0.5), FixedPolicyLoss(None)], loss_type="grpo")
    close(terms.token_loss, [[0.5 * x for x in row] for row in LOGPS])
    # without a policy-loss hook, the default loss of the transformed advantages
    doubled = [[2 * a for a in row] for row in ADVANTAGES]
    terms = compose_loss(context(), [ScaleAdvantages(2.0), FixedPolicyLoss(None)], loss_type="dapo")
    assert float(terms.loss) == pytest.approx(expected_compose("dapo", doubled), rel=1e-6)
    again = compose_loss(context(), [ScaleAdvantages(2.0)], loss_type="dapo")
    assert float(again.loss) == pytest.approx(float(terms.loss)) and torch.equal(again.token_loss, terms.token_loss)


def test_compose_loss_adds_the_kl_after_the_hooks_and_scales_by_the_sampling_ratio_first():
    sampling = [[0.5 + 0.1 * ((i + 2 * j) % 6) if k else 1.0 for j, k in enumerate(row)] for i, row in enumerate(MASK)]
    for loss_type in ("dapo", "sapo", "vespo"):
        terms = compose_loss(context(), [], loss_type=loss_type, sampling_ratio=t64(sampling), kl_coef=0.07,
                             kl_bias_correction=True)  # fmt: skip
        expected = expected_compose(loss_type, sampling=sampling, kl_coef=0.07, bias=True)
        assert float(terms.loss) == pytest.approx(expected, rel=1e-6)
    # a hook zeroing the token loss cannot mask the KL term
    terms = compose_loss(context(), [ZeroTokenLoss()], loss_type="bnpo", kl_coef=0.07)
    assert float(terms.loss) == pytest.approx(ref_reduce([[0.07 * k for k in r] for r in ref_kl(REF_LOGPS, LOGPS)],
                                                         MASK, "bnpo"))  # fmt: skip


# ---------------------------------------------------------------------------------- build_hooks


def test_build_hooks_names_params_instances_and_errors():
    aepo = AEPOHook(coef=0.4)
    params = {"epo": {"coef": 0.02}, "ERC": {"beta_low": 0.1}}
    hooks = build_hooks([aepo, "EPO", {"name": "erc", "beta_high": 0.3}], params)
    assert [type(h) for h in hooks] == [AEPOHook, EPOHook, ERCHook] and hooks[0] is aepo
    assert hooks[1].config.coef == 0.02 and (hooks[2].config.beta_low, hooks[2].config.beta_high) == (0.1, 0.3)
    assert [h.config.coef for h in build_hooks(["aepo", "epo"])] == [AEPOHook().config.coef, EPOHook().config.coef]
    assert build_hooks(None) == [] and build_hooks([], None) == []
    assert [h.name for h in build_hooks(["erc", "aepo"], {"aepo": {"coef": 0.1}})] == ["erc", "aepo"]
    for bad, match in [
        (([3],), "unknown"), (([{"beta_low": 0.1}],), "unknown"), ((["entropy-magic"],), "unknown"),
        ((["epo", "EPO"],), "twice"), (([{"name": "erc", "kappa": 1}],), "bad parameters"),
        ((["epo"], {"erc": {}}), "not enabled"),
    ]:  # fmt: skip
        with pytest.raises(LossHookConfigError, match=match):
            build_hooks(*bad)
