"""The one loss pipeline: hooks applied in the documented order, reduced as TRL's ``loss_type`` says.

:func:`compose_loss` is what :class:`~trl_plugins.trainer.AgentGRPOTrainer` (and so the PPO trainer) calls per
micro-batch.  :func:`build_hooks` is the one builder of hook lists: a trainer config names hooks
(``loss_hooks=["epo", "erc"]``) and holds each hook's settings in its own field (``epo=EPOConfig(...)``), and hook
objects are passed as instances in the same list (the trainer's ``loss_hooks=`` argument is appended to it).

Example:
    >>> import torch
    >>> from trl_plugins.hooks.base import LossContext
    >>> ctx = LossContext(logps=torch.zeros(1, 2, requires_grad=True), old_logps=torch.zeros(1, 2),
    ...                   advantages=torch.ones(1, 2), mask=torch.tensor([[1.0, 0.0]]))
    >>> hooks = build_hooks(["epo"], {"epo": {"coef": 0.0}})
    >>> float(compose_loss(ctx, hooks, loss_type="grpo").loss.detach())  # EPO needs ctx.entropy
    Traceback (most recent call last):
    ...
    trl_plugins.errors.LossHookConfigError: the EPO hook needs LossContext.entropy, which the trainer did not provide
    >>> float(compose_loss(ctx, [], loss_type="grpo").loss.detach())
    -1.0
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import torch

from trl_plugins.distributed import Ranks
from trl_plugins.errors import LossHookConfigError
from trl_plugins.hooks.base import LossContext, LossHook
from trl_plugins.hooks.epo import EPOHook
from trl_plugins.hooks.erc import ERCHook
from trl_plugins.hooks.reductions import per_token_kl, policy_token_loss

__all__ = [
    "HOOKS",
    "LOSS_TYPES",
    "UNSCALED_LOSS_TYPES",
    "LossTerms",
    "build_hooks",
    "compose_loss",
    "reduce_token_loss",
]


class _HookRegistry(Mapping[str, type[LossHook]]):
    """Hook classes by the name used in configs; a hook of an algorithm's own package is imported on first lookup.

    AEPO lives in :mod:`trl_plugins.aepo`, which builds on this package (its hook subclasses :class:`LossHook`), so
    this package names it by its import path instead of importing it.

    Example:
        >>> HOOKS["aepo"].__module__, sorted(HOOKS)
        ('trl_plugins.aepo.loss', ['aepo', 'epo', 'erc'])
    """

    def __init__(self, classes: Mapping[str, type[LossHook]], homes: Mapping[str, str]) -> None:
        self._classes = dict(classes)
        self._homes = dict(homes)  # name -> "module:attribute"

    def __getitem__(self, name: str) -> type[LossHook]:
        if name not in self._classes and name in self._homes:
            module, attribute = self._homes[name].split(":")
            self._classes[name] = getattr(importlib.import_module(module), attribute)
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._classes), **dict.fromkeys(self._homes)})

    def __len__(self) -> int:
        return len(set(self._classes) | set(self._homes))


#: Hook classes by the name used in configs.
HOOKS = _HookRegistry({"epo": EPOHook, "erc": ERCHook}, {"aepo": "trl_plugins.aepo.loss:AEPOHook"})

#: TRL 1.16's ``loss_type`` values: per-token losses (:func:`~trl_plugins.hooks.reductions.policy_token_loss`) and
#: reductions (:func:`reduce_token_loss`).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "sapo", "cispo", "vespo")

#: Loss types whose normaliser already spans one gradient-accumulation window (the generation batch's token count
#: rescaled to it, as TRL): the trainer must NOT divide their policy loss by the accumulation steps again.
UNSCALED_LOSS_TYPES = ("dapo", "cispo", "vespo")


def build_hooks(
    hooks: Iterable[str | LossHook | Mapping[str, Any]] | None,
    params: Mapping[str, Any] | None = None,
) -> list[LossHook]:
    """The one builder of hook lists: names (with ``params[name]``), hook instances, in order.

    Args:
        hooks: hook names (``"epo"``, ``"erc"``, ``"aepo"``; see :data:`HOOKS`) or :class:`LossHook` instances.
            A ``{"name": "epo", **params}`` mapping is accepted as shorthand for a name plus its parameters.
        params: settings per hook name: the hook's config dataclass (``{"epo": EPOConfig(alpha=0.05)}``, what a
            trainer config holds in its ``epo`` field) or a mapping of its fields; naming a hook that is not listed
            is an error.

    Raises:
        LossHookConfigError: an unknown name, bad parameters, parameters for a hook that is not enabled, or a
            hook listed twice.

    Example:
        >>> [h.name for h in build_hooks(["epo", "erc"], {"erc": {"beta_low": 0.1}})]
        ['epo', 'erc']
    """
    params = {str(k).lower(): asdict(v) if is_dataclass(v) else dict(v) for k, v in (params or {}).items()}
    built: list[LossHook] = []
    for item in hooks or []:
        if isinstance(item, LossHook):
            built.append(item)
            continue
        inline: dict[str, Any] = {}
        if isinstance(item, Mapping):
            inline = dict(item)
            name = inline.pop("name", None)
        else:
            name = item
        if not isinstance(name, str) or name.lower() not in HOOKS:
            raise LossHookConfigError(f"unknown loss hook {name!r}; known: {sorted(HOOKS)}")
        key = name.lower()
        try:
            built.append(HOOKS[key](**{**params.get(key, {}), **inline}))
        except TypeError as exc:
            raise LossHookConfigError(f"bad parameters for loss hook {name!r}: {exc}") from exc
    names = [h.name for h in built]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise LossHookConfigError(f"parameters given for hooks that are not enabled: {unknown}")
    if len(set(names)) != len(names):
        raise LossHookConfigError(f"a loss hook is listed twice: {names}")
    return built


def reduce_token_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "bnpo",
    *,
    normalizer: float | torch.Tensor | None = None,
    max_length: int | None = None,
    ranks: Ranks | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar as TRL's ``loss_type`` does (tokens a hook masked still count).

    * ``"grpo"``, ``"sapo"``: mean over sequences of each sequence's token mean;
    * ``"bnpo"``: mean over the batch's valid tokens;
    * ``"dr_grpo"``: sum over ``rows * max_length`` (Dr.GRPO's constant length; default: the tensor's width);
    * ``"dapo"``, ``"cispo"``, ``"vespo"``: sum over ``normalizer``, the valid tokens of the generation batch rescaled to
      one accumulation window (default: this batch's count);
    * ``"luspo"``: mean over sequences of each sequence's token sum.

    This is the loss of one micro-batch before any division by the gradient-accumulation steps: TRL divides every
    type except :data:`UNSCALED_LOSS_TYPES` by them.

    With several processes (``ranks``) the means count the sequences (tokens) of every process's micro-batch, and
    this process's share is returned (:meth:`~trl_plugins.distributed.Ranks.mean_share`): averaged over the
    processes, as data-parallel training averages gradients, it is the loss of one process holding every
    micro-batch, also when processes hold different numbers of samples (step-wise samples, AEPO's rollouts).  With
    equal sample counts this is TRL's reduction.  ``normalizer`` (dapo, cispo, vespo) is global already.

    Example:
        >>> tl, m = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        >>> [float(reduce_token_loss(tl, m, t)) for t in LOSS_TYPES]
        [2.0, 2.0, 1.5, 2.0, 3.0, 2.0, 2.0, 2.0]
    """
    m = mask.to(token_loss.dtype)
    masked = torch.where(mask.bool(), token_loss, torch.zeros_like(token_loss)) * m
    share = (ranks or Ranks()).mean_share
    rows = torch.tensor(float(token_loss.size(0)), dtype=token_loss.dtype, device=token_loss.device)
    if loss_type in ("grpo", "sapo"):
        return share((masked.sum(-1) / m.sum(-1).clamp(min=1.0)).sum(), rows)
    if loss_type == "bnpo":
        return share(masked.sum(), m.sum())
    if loss_type in ("dapo", "cispo", "vespo"):
        if normalizer is None:
            return share(masked.sum(), m.sum())
        return masked.sum() / normalizer
    if loss_type == "luspo":
        return share(masked.sum(-1).sum(), rows)
    if loss_type == "dr_grpo":
        return share(masked.sum(), rows * (token_loss.size(-1) if max_length is None else max_length))
    raise LossHookConfigError(f"loss_type must be one of {LOSS_TYPES}, not {loss_type!r}")


@dataclass
class LossTerms:
    """What :func:`compose_loss` returns.

    Attributes:
        loss: ``policy_loss + extra_loss`` (one micro-batch, before any gradient-accumulation scaling).
        policy_loss: the reduced per-token loss (KL included) before the hooks' extra terms.
        extra_loss: the sum of the hooks' ``extra_loss`` terms (a 0-dim zero when none).
        token_loss: the per-token loss after the hooks (and the KL term), ``(batch, tokens)``.
        ratio: ``exp(logps - old_logps)`` per token (with grad), for clip statistics.

    A trainer that accumulates gradients over ``GA`` micro-batches scales the two parts differently, as TRL does:
    ``policy_loss / GA`` except for :data:`UNSCALED_LOSS_TYPES` (whose normaliser already spans the window), and
    ``extra_loss / GA`` always (a per-micro-batch mean, like TRL's entropy bonus).
    """

    loss: torch.Tensor
    policy_loss: torch.Tensor
    token_loss: torch.Tensor
    ratio: torch.Tensor
    extra_loss: torch.Tensor | None = None


def compose_loss(
    ctx: LossContext,
    hooks: Sequence[LossHook],
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    delta: float | None = None,
    kl_coef: float = 0.0,
    loss_type: str = "bnpo",
    normalizer: float | torch.Tensor | None = None,
    max_length: int | None = None,
    importance_sampling_level: str = "token",
    kl_bias_correction: bool = False,
    sapo_temperatures: tuple[float, float] = (1.0, 1.05),
    vespo: tuple[float, float, float, float] = (2.0, 3.0, 3.0, 2.0),
    sampling_ratio: torch.Tensor | None = None,
) -> LossTerms:
    """The loss of one micro-batch, in the order documented on :class:`~trl_plugins.hooks.base.LossHook`.

    1. each hook's ``transform_advantages`` (``ctx.advantages`` is updated); 2. the first hook's ``policy_loss``,
    else TRL's per-token loss of ``loss_type`` (:func:`~trl_plugins.hooks.reductions.policy_token_loss`: ``eps_low``,
    ``eps_high``, ``dual_clip``, ``delta``, ``importance_sampling_level``; GSPO is ``"sequence"``); 3. each hook's
    ``transform_token_loss``, then ``kl_coef`` times the k3 KL to ``ctx.ref_logps`` (after the hooks: they must not
    mask it), times the importance weights when ``kl_bias_correction`` (TRL's ``use_bias_correction_kl``);
    4. :func:`reduce_token_loss` for ``loss_type``; 5. each hook's ``extra_loss`` added.

    ``sampling_ratio`` (TRL's ``importance_sampling_ratio`` of vLLM generation, ``(batch, tokens)`` or
    ``(batch, 1)``, no grad) multiplies the per-token loss after step 3, before the KL term, as TRL does; for
    ``vespo`` it enters the gamma weight instead (TRL's ``get_gamma_weights``).

    Example:
        >>> ctx = LossContext(logps=torch.zeros(1, 2, requires_grad=True), old_logps=torch.zeros(1, 2),
        ...                   advantages=torch.ones(1, 2), mask=torch.ones(1, 2))
        >>> float(compose_loss(ctx, []).loss.detach())
        -1.0
    """
    for hook in hooks:
        ctx.advantages = hook.transform_advantages(ctx)
    if loss_type not in LOSS_TYPES:
        raise LossHookConfigError(f"loss_type must be one of {LOSS_TYPES}, not {loss_type!r}")
    default_loss, weights = policy_token_loss(
        loss_type, ctx.logps, ctx.old_logps, ctx.advantages, ctx.mask, level=importance_sampling_level,
        eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip, delta=delta, sapo_temperatures=sapo_temperatures,
        vespo=vespo, sampling_ratio=sampling_ratio if loss_type == "vespo" else None,
    )  # fmt: skip
    token_loss = None
    for hook in hooks:
        token_loss = hook.policy_loss(ctx)
        if token_loss is not None:
            break
    if token_loss is None:
        token_loss = default_loss
    for hook in hooks:
        token_loss = hook.transform_token_loss(ctx, token_loss)
    if sampling_ratio is not None and loss_type != "vespo":
        token_loss = token_loss * sampling_ratio
    if kl_coef != 0.0:
        if ctx.ref_logps is None:
            raise LossHookConfigError("kl_coef is set but LossContext.ref_logps is missing")
        kl = per_token_kl(ctx.ref_logps, ctx.logps)
        token_loss = token_loss + kl_coef * (kl * weights if kl_bias_correction else kl)
    policy_loss = reduce_token_loss(
        token_loss, ctx.mask, loss_type, normalizer=normalizer, max_length=max_length, ranks=ctx.ranks
    )
    extra_loss = torch.zeros((), dtype=policy_loss.dtype, device=policy_loss.device)
    for hook in hooks:
        extra = hook.extra_loss(ctx)
        if extra is not None:
            extra_loss = extra_loss + extra
    return LossTerms(
        loss=policy_loss + extra_loss,
        policy_loss=policy_loss,
        token_loss=token_loss,
        ratio=torch.exp(ctx.logps - ctx.old_logps),
        extra_loss=extra_loss,
    )

