"""EPO, ERC, AEPO and the schedules against hand-computed values (including gradients), plus CPU integration."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trl_plugins.aepo import (
    AEPOHook,
    BranchPenaltyState,
    aepo_branch_probability,
    aepo_entropy_advantages,
    aepo_policy_loss,
    aepo_rollout_budget,
)
from trl_plugins.entropy import logps_and_entropy
from trl_plugins.hooks import (
    EntropyHistory,
    EPOConfig,
    EPOHook,
    ERCHook,
    LossContext,
    LossHookConfigError,
    build_hooks,
    compose_loss,
    entropy_metrics,
    entropy_ratio_mask,
    epo_entropy_loss,
    epo_smoothing_penalty,
    erc_token_loss,
    ppo_clip_token_loss,
    turn_token_mean,
)
from trl_plugins.hooks.schedules import (
    ScalingInterSchedule,
    epo_phase_weight,
    released_epo_weight,
    scaling_inter_horizon,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------ schedules


def test_scaling_inter_horizon_at_its_boundaries():
    h = [10, 20, 30]
    assert [scaling_inter_horizon(s, h, 100) for s in (0, 1, 100, 101, 200, 201, 300, 301, 10**6)] == [
        10, 10, 10, 20, 20, 30, 30, 30, 30,
    ]  # fmt: skip
    assert scaling_inter_horizon(1, [6], 1) == 6
    # After resuming from a checkpoint at global_step 150 the next step (151) is in phase 2.
    resumed_global_step = 150
    assert ScalingInterSchedule([10, 20, 30], 100)(resumed_global_step + 1) == 20


@pytest.mark.parametrize("args", [(1, [], 10), (1, [10, 0], 10), (1, [10], 0), (-1, [10], 10)])
def test_scaling_inter_horizon_rejects_bad_input(args):
    with pytest.raises(ValueError):
        scaling_inter_horizon(*args)


def test_epo_phase_weight_at_its_boundaries():
    assert epo_phase_weight(0, 100, gamma=3.0) == 2.0
    assert epo_phase_weight(50, 100, gamma=3.0) == pytest.approx(1 + math.exp(-3.0))
    assert epo_phase_weight(50, 101, gamma=3.0) == pytest.approx(1 + math.exp(-3.0))  # k_mid = floor(101/2)
    assert epo_phase_weight(100, 100, gamma=3.0) == pytest.approx(1 + math.exp(-6.0))
    assert epo_phase_weight(0, 1) == 2.0 and epo_phase_weight(1, 1) == pytest.approx(1 + math.exp(-3.0))
    ws = [epo_phase_weight(k, 20) for k in range(21)]
    assert all(a > b for a, b in zip(ws, ws[1:], strict=False)) and ws[-1] > 1.0
    with pytest.raises(ValueError):
        epo_phase_weight(0, 0)


def test_released_weight_decays_as_in_the_released_code():
    assert released_epo_weight(0, 150) == 1.0
    assert released_epo_weight(75, 150) == pytest.approx(1 - 0.2 * (1 - math.exp(-2.0)))
    assert released_epo_weight(150, 150) == pytest.approx(0.8 * math.exp(-3.0))


# ------------------------------------------------------------------------------------------------ EPO

# Two trajectories. Row 0: turn 0 = two tokens, an environment observation (masked), turn 1 = one token.
# Row 1: one turn of four tokens, then padding.
MASK = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.float64)
TURNS = torch.tensor([[0, 0, -1, -1, 1, -1], [0, 0, 0, 0, -1, -1]])
# Per-token weight of each entropy value in the multi-turn mean: 1/B * 1/T_j * 1/|turn|.
WEIGHTS = torch.tensor([[1 / 8, 1 / 8, 0, 0, 1 / 4, 0], [1 / 8, 1 / 8, 1 / 8, 1 / 8, 0, 0]], dtype=torch.float64)


def test_turn_token_mean_weights_every_turn_equally():
    h = torch.tensor([[1.0, 3.0, 100.0, 100.0, 4.0, 100.0], [1.0, 1.0, 1.0, 1.0, 100.0, 100.0]], dtype=torch.float64)
    h.requires_grad_()
    value = turn_token_mean(h, MASK, TURNS)
    assert float(value.detach()) == pytest.approx(((2.0 + 4.0) / 2 + 1.0) / 2)
    (g,) = torch.autograd.grad(value, [h])
    torch.testing.assert_close(g, WEIGHTS)
    # Without turn ids each row is one turn: token-mean per row, then mean over rows.
    assert float(turn_token_mean(h, MASK, None).detach()) == pytest.approx(((1 + 3 + 4) / 3 + 1.0) / 2)


def test_epo_hinge_values_and_slopes():
    h = torch.tensor([0.2, 0.5, 1.0, 2.0, 3.5], requires_grad=True)
    p = epo_smoothing_penalty(h, 1.0, kappa_low=0.5, kappa_high=2.0)
    torch.testing.assert_close(p.detach(), torch.tensor([0.3, 0.0, 0.0, 0.0, 1.5]))
    (g,) = torch.autograd.grad(p.sum(), [h])
    torch.testing.assert_close(g, torch.tensor([-1.0, 0.0, 0.0, 0.0, 1.0]))
    # Paper defaults (kappa_l = 0): no lower penalty at all.
    assert float(epo_smoothing_penalty(torch.tensor(0.0), 1.0).sum()) == 0.0
    with pytest.raises(LossHookConfigError):
        epo_smoothing_penalty(h, 1.0, kappa_low=3.0, kappa_high=2.0)


def test_epo_loss_value_and_gradient_by_hand():
    h = torch.tensor([[0.2, 1.0, 9.0, 9.0, 3.0, 9.0], [1.0, 1.0, 1.0, 1.0, 9.0, 9.0]], dtype=torch.float64)
    h.requires_grad_()
    lam, alpha, ref, step, total = 0.01, 0.1, 1.0, 3, 10
    loss, stats = epo_entropy_loss(
        h, MASK, TURNS, ref, step, total, coef=lam, alpha=alpha, kappa_low=0.5, kappa_high=2.0, gamma=3.0
    )
    beta = 1 + math.exp(-3.0 * step / 5)
    pen = torch.tensor([[0.3, 0.0, 0, 0, 1.0, 0], [0.0, 0.0, 0.0, 0.0, 0, 0]], dtype=torch.float64)
    l_h = float((WEIGHTS * h.detach()).sum())
    l_smooth = alpha * float((WEIGHTS * pen).sum())
    assert float(loss) == pytest.approx(-lam * (l_h - beta * l_smooth))
    assert stats["beta"] == pytest.approx(beta)
    (g,) = torch.autograd.grad(loss, [h])
    slope = torch.tensor([[-1.0, 0, 0, 0, 1.0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(g, -lam * WEIGHTS * (1 - beta * alpha * slope))


def test_epo_has_no_smoothing_at_step_zero():
    h = torch.tensor([[0.0, 50.0]], requires_grad=True)
    loss, stats = epo_entropy_loss(h, torch.ones(1, 2), None, None, 0, 10, coef=1.0)
    assert stats["smooth"] == 0.0 and float(loss) == pytest.approx(-25.0)


def test_entropy_history_is_the_mean_over_all_past_steps():
    hist = EntropyHistory()
    assert hist.reference() is None
    for v in [4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        hist.push(v)
    assert hist.reference() == pytest.approx(14.0 / 11)  # not a sliding window over recent steps
    hist.push(float("nan"))
    assert hist.count == 11


def _ctx(entropy, mask, step=0, total=10, turn_ids=None, **kw):
    n = entropy.shape
    return LossContext(
        logps=kw.pop("logps", torch.zeros(n, requires_grad=True)),
        old_logps=kw.pop("old_logps", torch.zeros(n)),
        advantages=kw.pop("advantages", torch.ones(n)),
        mask=mask,
        entropy=entropy,
        turn_ids=turn_ids,
        step=step,
        total_steps=total,
        **kw,
    )


def test_epo_hook_history_checkpoint_and_metrics():
    hook = EPOHook(EPOConfig(coef=1.0, alpha=0.1))
    # Step 0, two micro-batches: 3 tokens of entropy 1 and 1 token of entropy 5 -> token-mean 2.
    hook.extra_loss(_ctx(torch.ones(1, 3), torch.ones(1, 3), step=0))
    hook.extra_loss(_ctx(torch.tensor([[5.0, 7.0]]), torch.tensor([[1.0, 0.0]]), step=0))
    m = hook.metrics()
    assert m["epo/beta"] == 2.0 and math.isnan(m["epo/reference"]) and m["epo/smooth"] == 0.0
    hook.end_step(0)
    assert hook.history.reference() == pytest.approx(2.0)
    hook.extra_loss(_ctx(torch.full((1, 2), 4.0), torch.ones(1, 2), step=1))
    hook.end_step(1)
    assert hook.history.reference() == pytest.approx(3.0)

    resumed = EPOHook(EPOConfig(coef=1.0, alpha=0.1))
    resumed.load_state_dict(hook.state_dict())
    h = torch.tensor([[0.5, 7.0]])
    a = hook.extra_loss(_ctx(h, torch.ones(1, 2), step=2))
    b = resumed.extra_loss(_ctx(h, torch.ones(1, 2), step=2))
    assert float(a) == float(b) and resumed.metrics()["epo/reference"] == pytest.approx(3.0)
    assert float(a) == pytest.approx(-(3.75 - epo_phase_weight(2, 10) * 0.1 * (7.0 - 6.0) / 2))


def test_epo_released_mode_is_opt_in_and_gradient_free():
    assert EPOConfig().mode == "paper"
    with pytest.raises(LossHookConfigError):
        EPOConfig(mode="window")  # type: ignore[arg-type]
    hook = EPOHook(mode="released", coef=1.0, alpha=1.0, released_max_step=2)  # gate open from turn 1
    turns = torch.tensor([[0, 0, 1, 1]])
    hook.extra_loss(_ctx(torch.tensor([[1.0, 1.0, 2.0, 2.0]]), torch.ones(1, 4), turn_ids=turns))
    hook.end_step(0)
    assert hook.turn_history[0].reference() == 1.0 and hook.turn_history[1].reference() == 2.0
    h = torch.tensor([[1.0, 1.5, 2.0, 3.0]], requires_grad=True)  # tokens 1 and 3 leave the 0.8..1.2 corridor
    loss = hook.extra_loss(_ctx(h, torch.ones(1, 4), step=0, total=10, turn_ids=turns))
    (g,) = torch.autograd.grad(loss, [h])
    torch.testing.assert_close(g, torch.full((1, 4), -0.25))  # only the plain entropy bonus has a gradient
    assert float(loss) == pytest.approx(-(7.5 / 4 - 1.0 * 0.1 * 2 / 4))


# ------------------------------------------------------------------------------------------------ ERC


def test_entropy_ratio_mask_is_strict():
    old = torch.ones(6)
    h = torch.tensor([1.0, 0.96, 1.049, 0.95, 1.05, 2.0])
    torch.testing.assert_close(entropy_ratio_mask(h, old), torch.tensor([True, True, True, False, False, False]))
    assert bool(entropy_ratio_mask(torch.zeros(1), torch.zeros(1)))  # rho = 1 when both entropies are 0


def test_erc_masked_tokens_keep_loss_lose_gradient_and_still_count():
    logps = torch.tensor([[0.1, -0.2, 0.3, 0.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 0.5, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    entropy = torch.tensor([[1.0, 1.2, 0.99, 5.0]])
    old_entropy = torch.ones(1, 4)

    def run(hooks):
        ctx = LossContext(logps=logps, old_logps=torch.zeros(1, 4), advantages=adv, mask=mask,
                          entropy=entropy, old_entropy=old_entropy)  # fmt: skip
        loss = compose_loss(ctx, hooks).loss
        return loss, torch.autograd.grad(loss, [logps])[0]

    hook = ERCHook()
    plain_loss, plain_grad = run([])
    erc_loss, erc_grad = run([hook])
    assert float(erc_loss) == pytest.approx(float(plain_loss))  # same value, same normaliser (3 tokens)
    assert erc_grad[0, 1] == 0.0 and plain_grad[0, 1] != 0.0
    torch.testing.assert_close(erc_grad[0, [0, 2]], plain_grad[0, [0, 2]])
    m = hook.metrics()
    assert m["erc/clip_fraction"] == pytest.approx(1 / 3) and m["erc/clip_high_fraction"] == pytest.approx(1 / 3)

    x = torch.tensor([2.0, 3.0], requires_grad=True)
    out = erc_token_loss(x**2, torch.tensor([False, True]))
    out.sum().backward()
    assert out.tolist() == [4.0, 9.0] and x.grad.tolist() == [0.0, 6.0]


def test_erc_needs_old_entropy():
    ctx = _ctx(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(LossHookConfigError, match="old_entropy"):
        compose_loss(ctx, [ERCHook()])


# ------------------------------------------------------------------------------------------------ AEPO


def test_aepo_entropy_advantages_by_hand():
    h = torch.tensor([[0.0, 1.0, 2.0, 100.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = aepo_entropy_advantages(torch.full((1, 4), 2.0), h, mask, coef=0.2)
    torch.testing.assert_close(out, torch.tensor([[1.6, 2.0, 2.4, 2.0]]))  # mean 1, unbiased std 1
    assert not out.requires_grad  # stop-gradient on the entropy
    same = aepo_entropy_advantages(torch.ones(1, 3), torch.full((1, 3), 0.7), torch.ones(1, 3))
    torch.testing.assert_close(same, torch.ones(1, 3))  # std 0 -> 1, H_hat 0
    one = aepo_entropy_advantages(torch.ones(1, 2), torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(one, torch.ones(1, 2))


def test_aepo_clip_passes_the_gradient_where_ppo_gives_zero():
    #            A>0 r>1+e   A>0 inside  A>0 r<1-e  A<0 r<1-e  A<0 r>1+e  A<0 r>dual
    delta = torch.tensor([0.5, math.log(1.1), math.log(0.5), math.log(0.5), math.log(1.5), math.log(4.0)])
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    lp_a = delta.clone().requires_grad_()
    lp_p = delta.clone().requires_grad_()
    a = aepo_policy_loss(lp_a, torch.zeros(6), adv, torch.ones(6), 0.2, 0.2, 3.0)
    p = ppo_clip_token_loss(lp_p, torch.zeros(6), adv, 0.2, 0.2, 3.0)
    torch.testing.assert_close(a.detach(), p.detach())  # identical loss values everywhere
    torch.testing.assert_close(a.detach(), torch.tensor([-1.2, -1.1, -0.5, 0.8, 1.5, 3.0]))
    (ga,) = torch.autograd.grad(a.sum(), [lp_a])
    (gp,) = torch.autograd.grad(p.sum(), [lp_p])
    # d/dlogp: -A r unclipped, 0 where clipped -- except AEPO's preserved -(1+eps_h) A at the first token.
    torch.testing.assert_close(gp, torch.tensor([0.0, -1.1, -0.5, 0.0, 1.5, 0.0]))
    torch.testing.assert_close(ga, torch.tensor([-1.2, -1.1, -0.5, 0.0, 1.5, 0.0]))
    masked = aepo_policy_loss(lp_a, torch.zeros(6), adv, torch.zeros(6))
    assert torch.all(masked == 0)


def test_aepo_hook_reports_preserved_fraction():
    logps = torch.tensor([[0.5, 0.0, 0.5, 0.0]], requires_grad=True)
    ctx = _ctx(torch.ones(1, 4), torch.tensor([[1.0, 1.0, 1.0, 0.0]]), logps=logps,
               advantages=torch.tensor([[1.0, 1.0, -1.0, 1.0]]))  # fmt: skip
    hook = AEPOHook(coef=0.0)
    loss = compose_loss(ctx, [hook]).loss
    loss.backward()
    assert logps.grad[0, 0] != 0
    assert hook.metrics()["aepo/preserved_grad_fraction"] == pytest.approx(1 / 3)


def test_aepo_rollout_budget_boundaries():
    assert aepo_rollout_budget(1.0, 1.0, k=12, beta=0.5) == 7  # floor(12 * 0.5) + 1
    assert aepo_rollout_budget(100.0, 0.0, k=12) == 12  # floor(12) + 1 clipped to k
    assert aepo_rollout_budget(0.0, 100.0, k=12) == 1
    assert aepo_rollout_budget(2.0, 0.0, k=12, beta=0.5) == math.floor(12 / (1 + math.exp(-1.0))) + 1
    assert aepo_rollout_budget(5.0, 0.0, k=1) == 1
    with pytest.raises(LossHookConfigError):
        aepo_rollout_budget(0.0, 0.0, k=0)


def test_aepo_branch_probability_and_penalty():
    assert aepo_branch_probability(2.0, 1.0, 0, u=0.5) == pytest.approx(0.7)
    assert aepo_branch_probability(2.0, 1.0, 2, u=0.5) == pytest.approx(0.63)
    assert aepo_branch_probability(2.0, 1.0, 20, u=0.99) == 0.0  # 1 - 0.05 * 20 = 0
    assert aepo_branch_probability(50.0, 1.0, 0, u=0.0) == 1.0
    assert aepo_branch_probability(-50.0, 1.0, 0, u=0.9) == 0.0
    state = BranchPenaltyState(entropy_init=1.0)
    decisions = []
    for u in (0.6, 0.52, 0.52, 0.1, 0.52):  # one decision per round
        decisions.append(state.decide(entropy_now=1.0, u=u))
        state.end_round()
    # 0.6 -> branch (l=1); 0.52*0.95=0.494 -> no (l=0); 0.52 -> branch; 0.1 -> no; 0.52 -> branch
    assert decisions == [True, False, True, False, True]
    assert (state.branches, state.decisions, state.consecutive) == (3, 5, 1)


# ------------------------------------------------------------------------------------------------ composition


def test_build_hooks_and_errors():
    hooks = build_hooks(["epo", {"name": "erc", "beta_low": 0.1}, AEPOHook()])
    assert [h.name for h in hooks] == ["epo", "erc", "aepo"] and hooks[1].config.beta_low == 0.1
    assert [h.name for h in build_hooks(["epo", "erc"], {"epo": {"alpha": 0.05}})] == ["epo", "erc"]
    with pytest.raises(LossHookConfigError, match="unknown"):
        build_hooks(["entropy-magic"])
    with pytest.raises(LossHookConfigError, match="twice"):
        build_hooks(["erc", "erc"])
    with pytest.raises(LossHookConfigError, match="bad parameters"):
        build_hooks([{"name": "epo", "kappa": 1}])
    with pytest.raises(LossHookConfigError):
        build_hooks([{"name": "erc", "beta_low": -1}])
    with pytest.raises(LossHookConfigError, match="not enabled"):
        build_hooks(["epo"], {"erc": {}})


def test_entropy_metrics_per_turn():
    m = entropy_metrics(torch.tensor([[1.0, 3.0, 9.0, 5.0]]), torch.tensor([[1, 1, 0, 1]]), TURNS[:1, :4].clone())
    assert m == {"entropy/mean": 3.0, "entropy/turn_0": 2.0}


# ------------------------------------------------------------------------------------------------ integration


def tiny_lm(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(cfg)


def tiny_batch(batch: int = 4, length: int = 25, seed: int = 0):
    """Prompt (4 tokens), turn 0 (6 model tokens), observation (4 env tokens), turn 1 (6), padding."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 64, (batch, length), generator=g)
    turn_ids = torch.full((batch, length - 1), -1)  # over target positions 1..L-1
    turn_ids[:, 3:9] = 0
    turn_ids[:, 13:19] = 1
    turn_ids[1, 16:19] = -1  # a shorter second turn
    mask = (turn_ids >= 0).float()
    return input_ids, mask, turn_ids


def score(model, input_ids, mask):
    hidden = model.model(input_ids=input_ids).last_hidden_state[:, :-1]
    return logps_and_entropy(hidden, input_ids[:, 1:], model.lm_head.weight, mask=mask, chunk_size=32)


def train(hook_spec, steps: int = 2, iterations: int = 3, lr: float = 3e-2):
    model = tiny_lm()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hooks = build_hooks(hook_spec)
    input_ids, mask, turn_ids = tiny_batch()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5]).unsqueeze(1).expand_as(mask)
    before = [p.detach().clone() for p in model.parameters()]
    log = []
    for step in range(steps):
        with torch.no_grad():  # the old policy's log-probs and entropies, in one pass
            old_lp, old_h = score(model, input_ids, mask)
        for _ in range(iterations):
            lp, h = score(model, input_ids, mask)
            ctx = LossContext(logps=lp, old_logps=old_lp, advantages=adv.clone(), mask=mask, entropy=h,
                              old_entropy=old_h, turn_ids=turn_ids, step=step, total_steps=steps)  # fmt: skip
            loss = compose_loss(ctx, hooks).loss
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            metrics = {}
            for hook in hooks:
                metrics.update(hook.metrics())
            log.append(metrics)
        for hook in hooks:
            hook.end_step(step)
    moved = any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    return hooks, log, moved


@pytest.mark.parametrize("spec", [[], ["epo"], ["erc"], ["aepo"], ["epo", "erc"], ["aepo", "erc", "epo"]])
def test_hooks_train_a_tiny_model(spec):
    hooks, log, moved = train(spec)
    assert moved
    names = [h.name for h in hooks]
    if "erc" in names:
        assert log[0]["erc/clip_fraction"] == 0.0  # first iteration is on-policy: rho == 1 exactly
        assert max(m["erc/clip_fraction"] for m in log[1:]) > 0.0
    if "epo" in names:
        epo = hooks[names.index("epo")]
        assert epo.history.count == 2 and log[0]["epo/beta"] == 2.0
        assert not math.isnan(log[-1]["epo/reference"])
    if "aepo" in names:
        assert all("aepo/preserved_grad_fraction" in m for m in log)
