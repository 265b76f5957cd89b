"""AEPO (arXiv 2510.14545) against the spec's formulas (../shared/specs/algorithms.md), computed independently here:
the entropy-aware advantage with its default c, the entropy-balanced clip with default eps and dual clip on every
region, the rollout budget and branching probability with the paper's defaults, the settings' bounds one at a time,
the hook's declared inputs, and its clip-fraction metrics with padding and non-zero old log-probs."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
import torch

from trl_plugins.aepo import (
    AEPOBranchConfig,
    AEPOConfig,
    AEPOHook,
    BranchPenaltyState,
    aepo_branch_probability,
    aepo_entropy_advantages,
    aepo_policy_loss,
    aepo_rollout_budget,
)
from trl_plugins.hooks import (
    LossContext,
    LossHookConfigError,
    build_hooks,
)

# ------------------------------------------------------------------------------------------------ spec by hand


def spec_advantages(adv: list[list[float]], h: list[list[float]], mask: list[list[int]], c: float) -> torch.Tensor:
    """A * (1 + c * H_hat), H_hat standardised over the valid tokens of the whole batch (unbiased std, 0 -> 1)."""
    vals = [x for hr, mr in zip(h, mask, strict=True) for x, m in zip(hr, mr, strict=True) if m]
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    std = std or 1.0
    out = [
        [a * (1 + c * (x - mean) / std) if m else a for a, x, m in zip(ar, hr, mr, strict=True)]
        for ar, hr, mr in zip(adv, h, mask, strict=True)
    ]
    return torch.tensor(out)


def spec_token(a: float, r: float, eps_l: float = 0.2, eps_h: float = 0.2, dual: float | None = 3.0):
    """(loss, d loss / d log pi) of one token: max(-A r, -A clip(r, 1-eps_l, 1+eps_h)), dual clip min(., -c A) for
    A < 0; the gradient is -(1+eps_h) A where A > 0 and r > 1+eps_h (AEPO), -A r where the unclipped term is taken,
    else 0."""
    unclipped, clipped = -a * r, -a * min(max(r, 1 - eps_l), 1 + eps_h)
    value = max(unclipped, clipped)
    grad = -a * r if unclipped >= clipped else 0.0
    if a > 0 and r > 1 + eps_h:
        grad = -(1 + eps_h) * a
    if dual is not None and a < 0 and -dual * a < value:
        value, grad = -dual * a, 0.0
    return value, grad


def trainer_ctx(hook: AEPOHook, **tensors: torch.Tensor) -> LossContext:
    """A LossContext as the trainer builds it: (old) entropies only where the hook declares that it needs them."""
    entropy = tensors.pop("entropy")
    old_entropy = tensors.pop("old_entropy", entropy * 0.5)
    return LossContext(
        **tensors,
        entropy=entropy if hook.needs_entropy else None,
        old_entropy=old_entropy if hook.needs_old_entropy else None,
    )


# ------------------------------------------------------------------------------------------------ advantages

ADV = [[1.5, -0.5, 2.0, 0.8], [-1.2, 0.3, 0.7, 4.0]]
H = [[0.3, 1.1, 0.6, 7.0], [0.9, 1.4, 0.2, 9.0]]  # valid std < 1 (0.45), far from 1
MASK = [[1, 1, 1, 0], [1, 1, 1, 0]]


def test_entropy_advantages_default_coefficient_is_the_papers():
    out = aepo_entropy_advantages(torch.tensor(ADV), torch.tensor(H), torch.tensor(MASK, dtype=torch.float32))
    torch.testing.assert_close(out, spec_advantages(ADV, H, MASK, c=0.2))
    assert out[0, 3] == 0.8 and out[1, 3] == 4.0  # padding keeps its advantage


def test_entropy_advantages_with_two_valid_tokens_use_the_unbiased_std():
    adv, h, mask = [[2.0, -1.0, 3.0]], [[0.2, 1.0, 9.0]], [[1, 1, 0]]  # mean 0.6, unbiased std 0.566 (biased 0.4)
    out = aepo_entropy_advantages(torch.tensor(adv), torch.tensor(h), torch.tensor(mask, dtype=torch.float32), 0.5)
    torch.testing.assert_close(out, spec_advantages(adv, h, mask, c=0.5))
    assert out[0, 0] == pytest.approx(2.0 * (1 - 0.5 / math.sqrt(2)))


def test_entropy_advantages_constant_entropy_and_no_valid_token_leave_advantages():
    adv = torch.tensor([[1.5, -2.0], [0.5, 3.0]])
    flat = aepo_entropy_advantages(adv, torch.full((2, 2), 0.75), torch.tensor([[1.0, 1.0], [1.0, 0.0]]), 0.4)
    torch.testing.assert_close(flat, adv)  # std 0 is replaced by 1: H_hat = 0, no NaN
    none = aepo_entropy_advantages(adv, torch.tensor([[0.1, 2.0], [5.0, 1.0]]), torch.zeros(2, 2), 0.4)
    torch.testing.assert_close(none, adv)
    # one valid token: its entropy is the mean (H_hat = 0) and the std is undefined (-> 1)
    single = aepo_entropy_advantages(adv, torch.tensor([[0.1, 2.0], [5.0, 1.0]]), torch.tensor([[0, 0], [1, 0]]), 0.4)
    torch.testing.assert_close(single, adv)


# ------------------------------------------------------------------------------------------------ clip

#        A>0 r>1+e  A>0 inside  A<0 inside  A<0 r<1-e  A<0 r>dual  A<0 1+e<r<dual  A>0 r<1-e  A>0 r>1+e (masked)
A_TOK = [1.5, 0.7, -0.8, -2.0, -1.0, -0.5, 2.0, 3.0]
R_TOK = [1.6, 1.1, 1.1, 0.5, 5.0, 2.0, 0.6, 1.9]
OLD = [-0.5, 0.3, -1.2, 0.4, -0.1, -0.7, 0.2, -0.3]


def test_policy_loss_defaults_follow_the_spec_on_every_region():
    old = torch.tensor(OLD)
    logp = (old + torch.tensor(R_TOK).log()).requires_grad_()
    mask = torch.tensor([1.0] * 7 + [0.0])
    loss = aepo_policy_loss(logp, old, torch.tensor(A_TOK), mask)  # eps 0.2 / 0.2, dual clip 3
    (grad,) = torch.autograd.grad(loss.sum(), [logp])
    by_spec = [spec_token(a, r) for a, r in zip(A_TOK, R_TOK, strict=True)]
    expected_loss = torch.tensor([v for v, _ in by_spec[:7]] + [0.0])
    expected_grad = torch.tensor([g for _, g in by_spec[:7]] + [0.0])
    torch.testing.assert_close(loss.detach(), expected_loss)
    torch.testing.assert_close(grad, expected_grad)
    assert expected_loss[0] == pytest.approx(-1.8) and expected_grad[0] == pytest.approx(-1.8)  # preserved gradient
    assert expected_loss[4] == pytest.approx(3.0) and expected_loss[3] == pytest.approx(1.6)


def test_policy_loss_with_other_eps_and_no_dual_clip():
    old = torch.tensor(OLD)
    logp = (old + torch.tensor(R_TOK).log()).requires_grad_()
    loss = aepo_policy_loss(logp, old, torch.tensor(A_TOK), torch.ones(8), eps_low=0.3, eps_high=0.5, dual_clip=None)
    (grad,) = torch.autograd.grad(loss.sum(), [logp])
    by_spec = [spec_token(a, r, 0.3, 0.5, None) for a, r in zip(A_TOK, R_TOK, strict=True)]
    torch.testing.assert_close(loss.detach(), torch.tensor([v for v, _ in by_spec]))
    torch.testing.assert_close(grad, torch.tensor([g for _, g in by_spec]))


# ------------------------------------------------------------------------------------------------ rollout half


def test_rollout_budget_defaults_are_k_12_and_beta_half():
    assert aepo_rollout_budget(1.0, 1.0) == 7  # floor(12 * 0.5) + 1
    assert aepo_rollout_budget(0.0, 100.0) == 1 and aepo_rollout_budget(100.0, 0.0) == 12  # clip(., 1, k)
    assert aepo_rollout_budget(2.0, 0.0) == math.floor(12 / (1 + math.exp(-0.5 * 2.0))) + 1 == 9
    assert aepo_rollout_budget(0.0, 3.0) == math.floor(12 / (1 + math.exp(1.5))) + 1 == 3


def test_rollout_budget_for_a_group_of_one_and_of_none():
    assert aepo_rollout_budget(5.0, 0.0, k=1) == 1 and aepo_rollout_budget(0.0, 5.0, k=1) == 1
    with pytest.raises(LossHookConfigError, match="k must be >= 1"):
        aepo_rollout_budget(1.0, 1.0, k=0)


def test_branch_probability_defaults_are_w_and_penalty_of_the_paper():
    # (u + 0.2 (H_now - H_init)) * max(0, 1 - 0.05 l), clipped to [0, 1]
    assert aepo_branch_probability(1.7, 1.2, consecutive_branches=0, u=0.3) == pytest.approx(0.3 + 0.2 * 0.5)
    assert aepo_branch_probability(1.7, 1.2, consecutive_branches=3, u=0.3) == pytest.approx(0.4 * 0.85)
    assert aepo_branch_probability(0.2, 1.2, consecutive_branches=1, u=0.6, w=0.5, penalty=0.1) == pytest.approx(0.09)
    with pytest.raises(LossHookConfigError):
        aepo_branch_probability(1.0, 1.0, consecutive_branches=-1, u=0.5)


def test_branch_state_defaults_are_the_papers():
    # a new prompt has l = 0: p = 0.5 exactly reaches p_branch 0.5 (0.5 * 0.95 would not)
    assert BranchPenaltyState(entropy_init=1.0).decide(entropy_now=1.0, u=0.5)
    # w = 0.2: 0.35 + 0.2 * 0.5 = 0.45 < 0.5 -> no branch
    state = BranchPenaltyState(entropy_init=1.0)
    assert not state.decide(entropy_now=1.5, u=0.35)
    state.end_round()  # a first round without a branch leaves the count at 0
    assert state.consecutive == 0 and state.decide(entropy_now=1.0, u=0.5)
    assert state.decide(entropy_now=1.5, u=0.42)  # 0.52, still l = 0 within the round
    state.end_round()
    assert (state.consecutive, state.branches, state.decisions) == (1, 2, 3)
    assert not state.decide(entropy_now=1.5, u=0.42)  # 0.52 * (1 - 0.05) = 0.494
    assert state.decide(entropy_now=1.0, u=0.6)  # 0.6 * 0.95 = 0.57


def test_branch_config_defaults_are_the_specs_and_the_docs():
    c = AEPOBranchConfig()
    assert (c.beta, c.w, c.p_branch, c.penalty) == (0.5, 0.2, 0.5, 0.05)  # spec: beta, w, p_branch, 0.05 * l
    assert (c.entropy_tokens, c.seed, c.variant) == (10, None, "paper")  # docs/trainer.md


def test_branch_config_bounds_one_at_a_time():
    assert AEPOBranchConfig(entropy_tokens=1).entropy_tokens == 1
    assert AEPOBranchConfig(penalty=0.0).penalty == 0.0
    assert AEPOBranchConfig(variant="released").variant == "released"
    for bad in ({"entropy_tokens": 0}, {"penalty": -0.01}, {"variant": "Paper"}):
        with pytest.raises(LossHookConfigError):
            AEPOBranchConfig(**bad)
    # validated once: the settings cannot be changed into invalid ones afterwards
    with pytest.raises(dataclasses.FrozenInstanceError):
        AEPOBranchConfig().entropy_tokens = 0  # type: ignore[misc]


def test_trainer_config_takes_all_of_aepo_in_one_field_from_the_command_line_and_a_run_file(tmp_path):
    from trl import TrlParser

    from trl_plugins.config import AgentGRPOConfig, RunSpec
    from trl_plugins.errors import TrainerConfigError

    argv = ["--output_dir", str(tmp_path), "--loss_hooks", "aepo", "--aepo", '{"coef": 0.1, "branching": {"w": 0.3}}']
    (cli,) = TrlParser((AgentGRPOConfig,)).parse_args_and_config(argv)
    assert cli.aepo == AEPOConfig(coef=0.1, branching=AEPOBranchConfig(w=0.3))
    (hook,) = build_hooks(cli.loss_hooks, cli.hook_settings())
    assert hook.config == AEPOConfig(coef=0.1)  # the hook takes the loss half
    run = RunSpec.from_dict({"model": "tiny", "trainer": {"output_dir": str(tmp_path), "aepo": {"branching": {}}}})
    assert run.trainer.aepo.branching == AEPOBranchConfig()
    assert AgentGRPOConfig(output_dir=str(tmp_path)).aepo.branching is None  # off unless asked for
    for bad in ('{"branching": {"p_brnch": 1}}', '{"coef": ', "[1]"):
        with pytest.raises(TrainerConfigError, match="aepo"):
            AgentGRPOConfig(output_dir=str(tmp_path), aepo=bad)


# ------------------------------------------------------------------------------------------------ hook


def test_hook_is_built_by_name_with_its_parameters():
    (hook,) = build_hooks(["aepo"], {"aepo": {"coef": 0.5, "dual_clip": None}})
    assert isinstance(hook, AEPOHook) and hook.config == AEPOConfig(coef=0.5, dual_clip=None)
    (inline,) = build_hooks([{"name": "aepo", "eps_high": 0.28}])
    assert inline.config.eps_high == 0.28


def test_hook_config_bounds_one_at_a_time():
    for ok in ({"eps_low": 0.0}, {"eps_high": 0.0}, {"dual_clip": 2.0}, {"dual_clip": None}, {"eps_low": 0.99}):
        assert AEPOHook(**ok).config == AEPOConfig(**ok)
    for bad in ({"eps_low": 1.0}, {"eps_low": -0.1}, {"eps_high": -0.1}, {"dual_clip": 1.0}, {"dual_clip": 0.5}):
        with pytest.raises(LossHookConfigError):
            AEPOConfig(**bad)
        with pytest.raises(LossHookConfigError):
            AEPOHook(**bad)
    assert AEPOHook(AEPOConfig(coef=0.5), eps_high=0.3).config == AEPOConfig(coef=0.5, eps_high=0.3)


def hook_batch() -> dict[str, torch.Tensor]:
    adv = torch.tensor([A_TOK[:4], A_TOK[4:]])
    old = torch.tensor([OLD[:4], OLD[4:]])
    ratio = torch.tensor([R_TOK[:4], R_TOK[4:]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    h = torch.tensor([[0.4, 1.3, 0.9, 0.2], [1.1, 0.5, 0.7, 6.0]])
    old_h = torch.tensor([[1.0, 0.2, 0.6, 0.3], [0.8, 1.6, 0.1, 4.0]])
    return {"logps": (old + ratio.log()).requires_grad_(), "old_logps": old, "advantages": adv, "mask": mask,
            "entropy": h.requires_grad_(), "old_entropy": old_h.requires_grad_()}  # fmt: skip


def test_default_hook_reads_what_it_declares_and_follows_the_spec():
    hook = AEPOHook()
    t = hook_batch()
    ctx = trainer_ctx(hook, **t)
    ctx.advantages = hook.transform_advantages(ctx)
    loss = hook.policy_loss(ctx)
    grad, entropy_grad = torch.autograd.grad(loss.sum(), [t["logps"], t["entropy"]], allow_unused=True)
    assert entropy_grad is None  # sg(H_hat): no gradient reaches the entropy through the advantages
    mask = t["mask"].int().tolist()
    adv = spec_advantages(t["advantages"].tolist(), t["entropy"].tolist(), mask, c=0.2)  # current entropy, c = 0.2
    torch.testing.assert_close(ctx.advantages, adv)
    ratio = torch.exp(t["logps"].detach() - t["old_logps"])
    by_spec = [spec_token(float(a), float(r)) if m else (0.0, 0.0) for a, r, m in
               zip(adv.flatten(), ratio.flatten(), t["mask"].flatten(), strict=True)]  # fmt: skip
    torch.testing.assert_close(loss.detach().flatten(), torch.tensor([v for v, _ in by_spec]))
    torch.testing.assert_close(grad.flatten(), torch.tensor([g for _, g in by_spec]))


def test_hook_on_old_entropy_reads_what_it_declares():
    hook = AEPOHook(use_old_entropy=True, coef=0.6)
    t = hook_batch()
    out = hook.transform_advantages(trainer_ctx(hook, **t))
    expected = spec_advantages(t["advantages"].tolist(), t["old_entropy"].tolist(), t["mask"].int().tolist(), 0.6)
    assert not out.requires_grad  # sg on the old entropy too
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(("overrides", "missing"), [({}, "entropy"), ({"use_old_entropy": True}, "old_entropy")])
def test_hook_names_the_missing_input(overrides, missing):
    t = hook_batch()
    ctx = LossContext(logps=t["logps"], old_logps=t["old_logps"], advantages=t["advantages"], mask=t["mask"])
    with pytest.raises(LossHookConfigError, match=rf"the AEPO hook needs LossContext\.{missing},"):
        AEPOHook(**overrides).transform_advantages(ctx)


def test_hook_clip_fractions_count_valid_tokens_only():
    # row 0: preserved (A>0 r>1.2) | A=0 r>3 | A<0 r<0.8 (low) | A<0 r>3 (dual) | A=0.5 r>3 (preserved, not dual)
    # row 1: A<0 1.2<r<3 | A<0 0.8<r<1.2 | padding: preserved, low, dual -- none of them may count
    adv = torch.tensor([[1.5, 0.0, -2.0, -1.0, 0.5], [-0.5, -0.8, 3.0, -1.5, -1.0]])
    ratio = torch.tensor([[1.6, 4.0, 0.5, 5.0, 3.5], [2.0, 1.1, 1.9, 0.3, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
    old = torch.tensor([[-0.5, 0.3, -1.2, 0.4, -0.1], [-0.7, 0.2, -0.3, 0.1, -0.4]])
    ctx = LossContext(logps=(old + ratio.log()).requires_grad_(), old_logps=old, advantages=adv, mask=mask)
    hook = AEPOHook(coef=0.3)
    hook.policy_loss(ctx)
    assert hook.metrics() == pytest.approx(
        {"aepo/preserved_grad_fraction": 2 / 7, "aepo/clip_low_fraction": 1 / 7, "aepo/dual_clip_fraction": 1 / 7}
    )
    assert hook.metrics() == {}  # popped

    one = LossContext(logps=ctx.logps, old_logps=old, advantages=adv, mask=torch.zeros(2, 5))
    one.mask[0, 0] = 1.0  # a single valid token, preserved
    hook.policy_loss(one)
    assert hook.metrics()["aepo/preserved_grad_fraction"] == 1.0

    no_dual = AEPOHook(dual_clip=None)
    no_dual.policy_loss(ctx)
    assert set(no_dual.metrics()) == {"aepo/preserved_grad_fraction", "aepo/clip_low_fraction"}


def test_record_branching_logs_the_mean_counts_of_the_step():
    hook = AEPOHook()
    hook.record_branching(independent=3, branches=9)
    hook.record_branching(independent=5, branches=3)
    assert hook.metrics() == {"aepo/independent_rollouts": 4.0, "aepo/branches": 6.0}
