"""ERC's settings bounds and logged clip fractions, with inputs where every boundary and ratio matters."""

from __future__ import annotations

import pytest
import torch

from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks import ERCConfig, ERCHook, LossContext, entropy_ratio, entropy_ratio_mask


def test_zero_bands_are_allowed_and_each_bad_bound_is_refused_alone():
    assert ERCConfig(beta_low=0.0, beta_high=0.0).beta_low == 0.0
    assert ERCConfig(beta_low=0.99).beta_low == 0.99
    for bad in ({"beta_low": -0.01}, {"beta_high": -0.01}, {"beta_low": 1.0}):
        with pytest.raises(LossHookConfigError):
            ERCConfig(**bad)
    ones = torch.ones(2)
    assert entropy_ratio_mask(ones, ones, beta_low=0.0, beta_high=0.0).tolist() == [False, False]  # strict band
    for low, high in ((-0.01, 0.05), (0.05, -0.01)):
        with pytest.raises(LossHookConfigError):
            entropy_ratio_mask(ones, ones, beta_low=low, beta_high=high)


def test_clip_fractions_count_valid_tokens_on_each_side_of_the_band():
    # rho = 0.8 (low, on the boundary of beta_low=0.2), 0.7 (low), 1.0 (kept), 1.3 (high, on the boundary),
    # 1.5 (high), and a padded token with rho 0.1 that must not count.
    entropy = torch.tensor([[0.8, 0.7, 1.0, 1.3, 1.5, 0.1]])
    old = torch.ones_like(entropy)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    hook = ERCHook(beta_low=0.2, beta_high=0.3)
    ctx = LossContext(
        logps=torch.zeros_like(entropy), old_logps=torch.zeros_like(entropy), advantages=torch.ones(1), mask=mask,
        entropy=entropy, old_entropy=old,
    )
    token_loss = torch.arange(6.0).reshape(1, 6).requires_grad_()
    out = hook.transform_token_loss(ctx, token_loss * 1.0)
    out.sum().backward()
    # Only the kept token and the padded one (never masked by ERC) keep their gradient; values are unchanged.
    assert token_loss.grad.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]]
    assert out.tolist() == token_loss.tolist()
    metrics = hook.metrics()
    assert metrics["erc/clip_fraction"] == pytest.approx(4 / 5)
    assert metrics["erc/clip_low_fraction"] == pytest.approx(2 / 5)
    assert metrics["erc/clip_high_fraction"] == pytest.approx(2 / 5)


def test_entropy_ratio_values_carry_no_gradient():
    h = torch.tensor([2.0, 0.5, 0.0], requires_grad=True)
    old = torch.tensor([1.0, 2.0, 0.0], requires_grad=True)
    rho = entropy_ratio(h, old)
    torch.testing.assert_close(rho, torch.tensor([2.0, 0.25, 1.0]))
    assert not rho.requires_grad  # the band decides which tokens keep a gradient; it is not itself differentiated


def test_clip_fractions_with_a_single_model_token():
    # one valid token, clipped high, beside padding whose ratio is far out of the band: every fraction is over 1 token
    entropy = torch.tensor([[1.5, 0.1, 0.1]])
    ctx = LossContext(
        logps=torch.zeros(1, 3), old_logps=torch.zeros(1, 3), advantages=torch.ones(1, 3),
        mask=torch.tensor([[1.0, 0.0, 0.0]]), entropy=entropy, old_entropy=torch.ones(1, 3),
    )
    hook = ERCHook()
    hook.transform_token_loss(ctx, torch.ones(1, 3))
    assert hook.metrics() == {"erc/clip_fraction": 1.0, "erc/clip_low_fraction": 0.0, "erc/clip_high_fraction": 1.0}
