"""The loss-hook interface (trl_plugins.hooks.base) and the contract every hook keeps with the trainer.

The trainer computes the full-vocabulary entropy (with gradient) only when a hook declares ``needs_entropy`` and
keeps the sampling-time entropy only when one declares ``needs_old_entropy``; a wrong flag either crashes training
or pays for an entropy pass nobody reads.  So each hook's flags must match what it actually reads.
"""

from __future__ import annotations

import functools
import gc
import math
import re
import weakref

import pytest
import torch

from trl_plugins.aepo import AEPOHook
from trl_plugins.hooks import (
    EPOHook,
    ERCHook,
    LossContext,
    LossHook,
    LossHookConfigError,
    MetricAccumulator,
    compose_loss,
)


class PlainHook(LossHook):
    """A custom hook that reads neither entropy: the base class's defaults apply."""

    name = "plain"


# (factory, the hook's name in its error messages)
HOOKS = [
    (PlainHook, "plain"), (EPOHook, "EPO"), (ERCHook, "ERC"), (AEPOHook, "AEPO"),
    (functools.partial(AEPOHook, use_old_entropy=True), "AEPO"),  # reads the stored entropy only
]


def full_context(**missing: None) -> LossContext:
    g = torch.Generator().manual_seed(0)
    fields = {
        "logps": (-torch.rand(2, 4, generator=g)).requires_grad_(),
        "old_logps": -torch.rand(2, 4, generator=g),
        "advantages": torch.tensor([[1.0], [-0.5]]).expand(2, 4).clone(),
        "mask": torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]),
        "entropy": (torch.rand(2, 4, generator=g) + 0.5).requires_grad_(),
        "old_entropy": torch.rand(2, 4, generator=g) + 0.5,
        "turn_ids": torch.tensor([[0, 0, 1, -1], [0, 0, -1, -1]]),
    }
    fields.update(missing)
    return LossContext(**fields)


@pytest.mark.parametrize(("make", "label"), HOOKS, ids=["plain", "EPO", "ERC", "AEPO", "AEPO-old-entropy"])
def test_declared_entropy_needs_are_exactly_what_the_hook_reads(make, label):
    loss = compose_loss(full_context(), [make()]).loss
    assert torch.isfinite(loss)
    for field, flag in (("entropy", "needs_entropy"), ("old_entropy", "needs_old_entropy")):
        hook = make()
        ctx = full_context(**{field: None})
        if getattr(hook, flag):
            message = f"the {label} hook needs LossContext.{field}, which the trainer did not provide"
            with pytest.raises(LossHookConfigError, match=f"^{re.escape(message)}$"):
                compose_loss(ctx, [hook])
        else:
            loss = compose_loss(ctx, [hook]).loss  # the trainer would not provide it: the hook must not need it
            assert torch.isfinite(loss)


def test_a_context_with_only_the_required_tensors_is_a_training_batch_at_step_0_of_a_one_step_run():
    def minimal(entropy: torch.Tensor, **kw) -> LossContext:
        n = entropy.shape
        return LossContext(logps=torch.zeros(n), old_logps=torch.zeros(n), advantages=torch.zeros(n),
                           mask=torch.ones(n), entropy=entropy, **kw)  # fmt: skip

    hook = EPOHook()
    hook.extra_loss(minimal(torch.tensor([[1.0, 3.0]])))
    assert hook.metrics()["epo/beta"] == 2.0  # beta_0: step 0
    hook.end_step(0)
    assert hook.history.reference() == 2.0  # a training pass feeds the history
    # released mode at step 1 of a one-step run: past the half (0), the weight is 0.8 * exp(-gamma * (1 - 0) / 1)
    released = EPOHook(mode="released")
    released.extra_loss(minimal(torch.tensor([[1.0, 3.0]]), step=1))
    assert released.metrics()["epo/beta"] == pytest.approx(0.8 * math.exp(-3.0))


def test_metric_accumulator_means_and_keeps_no_graph():
    acc = MetricAccumulator()
    x = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    alive = weakref.ref(x)
    acc.add("loss", (x * 2).sum())  # a metric handed over with its graph (14.0)
    acc.add("loss", 4.0)
    acc.add("frac", torch.tensor(0.25))
    del x
    gc.collect()
    assert alive() is None  # the accumulator holds values until pop, not the graph
    assert acc.pop() == {"loss": 9.0, "frac": 0.25}
    assert acc.pop() == {}
