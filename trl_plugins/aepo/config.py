"""AEPO's settings: :class:`AEPOConfig` (all of them: the loss half and, in :attr:`AEPOConfig.branching`, the rollout
half) and :class:`AEPOBranchConfig` (the branching rollout's).

A trainer config holds one :class:`AEPOConfig` in its ``aepo`` field; from YAML or the command line it is a mapping
(JSON text on the command line), turned into the dataclass by :meth:`AEPOConfig.from_value`.

Example:
    >>> cfg = AEPOConfig.from_value('{"coef": 0.1, "branching": {"p_branch": 0.05}}')
    >>> cfg.coef, cfg.branching.p_branch
    (0.1, 0.05)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trl_plugins.errors import LossHookConfigError

__all__ = ["AEPOBranchConfig", "AEPOConfig"]

BRANCHING_VARIANTS = ("paper", "released")


@dataclass(frozen=True)
class AEPOBranchConfig:
    """AEPO's dynamic entropy-balanced rollout (arXiv 2510.14545); see :func:`trl_plugins.aepo.run_branching_episodes`.

    ``k`` of the paper is the group size (the number of ``tasks`` sharing a group key).

    Attributes:
        beta: temperature of the budget ``m = clip(floor(k * sigmoid(beta * (H_root - H_tool))) + 1, 1, k)``.
        w: weight of ``H_now - H_init`` in the branching probability.
        p_branch: branch when the probability reaches it.
        penalty: consecutive-branch penalty per consecutive branching round (0.05 in the paper).
        entropy_tokens: the entropy of a turn is the mean over its first ``entropy_tokens`` sampled tokens.
        seed: seed of the ``U(0, 1)`` draws (``None``: not reproducible; the trainer passes its own generator).
        variant: ``"paper"`` (default): ``H_tool`` is the mean entropy of the probe's tool-call steps (its turns after
            an observation), and a round in which a prompt does not branch resets its consecutive count.
            ``"released"`` (opt-in, the authors' ARPO/AEPO rollout code): ``H_tool`` averages every generation
            round of the probe, its first one included, and the consecutive counts are only updated (incremented
            or reset) in rounds in which some prompt of the batch branched.

    Example:
        >>> AEPOBranchConfig(p_branch=0.2).w
        0.2
    """

    beta: float = 0.5
    w: float = 0.2
    p_branch: float = 0.5
    penalty: float = 0.05
    entropy_tokens: int = 10
    seed: int | None = None
    variant: str = "paper"

    def __post_init__(self) -> None:
        if self.variant not in BRANCHING_VARIANTS:
            raise LossHookConfigError(f"AEPO branching variant must be 'paper' or 'released', not {self.variant!r}")
        if self.entropy_tokens < 1:
            raise LossHookConfigError(f"entropy_tokens must be >= 1, got {self.entropy_tokens}")
        if self.penalty < 0:
            raise LossHookConfigError(f"penalty must be >= 0, got {self.penalty}")


@dataclass
class AEPOConfig:
    """All of AEPO's settings: the parameters of :class:`~trl_plugins.aepo.AEPOHook` and the branching rollout.

    Attributes:
        coef: c of the entropy-aware advantage (paper 0.2).
        eps_low, eps_high: clip range (the spec gives none; PPO's 0.2 on both sides).
        dual_clip: dual-clip constant for negative advantages (3); None disables it.
        use_old_entropy: standardise the sampling-time entropy (``ctx.old_entropy``) instead of the current one.
        branching: the dynamic entropy-balanced rollout (:class:`AEPOBranchConfig`, or a mapping of its fields);
            ``None`` (default): every episode is played independently.  The hook does not read it; the trainer's
            rollout does.

    Example:
        >>> AEPOConfig(coef=0.1, branching={"p_branch": 0.05}).branching
        AEPOBranchConfig(beta=0.5, w=0.2, p_branch=0.05, penalty=0.05, entropy_tokens=10, seed=None, variant='paper')
    """

    coef: float = 0.2
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = 3.0
    use_old_entropy: bool = False
    branching: AEPOBranchConfig | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.eps_low < 1 or self.eps_high < 0:
            raise LossHookConfigError(f"AEPO needs 0 <= eps_low < 1 and eps_high >= 0, got {self}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise LossHookConfigError(f"dual_clip must be > 1, got {self.dual_clip}")
        if isinstance(self.branching, Mapping):
            self.branching = _build(AEPOBranchConfig, self.branching, "aepo.branching")
        elif self.branching is not None and not isinstance(self.branching, AEPOBranchConfig):
            raise LossHookConfigError(
                f"aepo.branching must be an AEPOBranchConfig, a mapping or None, not {type(self.branching).__name__}"
            )

    def hook_params(self) -> dict[str, Any]:
        """The loss half as keyword arguments of :class:`~trl_plugins.aepo.AEPOHook` (everything but ``branching``).

        Example:
            >>> AEPOConfig(coef=0.3).hook_params()["coef"]
            0.3
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "branching"}

    @classmethod
    def from_value(cls, value: AEPOConfig | Mapping[str, Any] | str | None) -> AEPOConfig:
        """An :class:`AEPOConfig` from what a config file or the command line gives: itself, a mapping, JSON text
        or ``None``/empty (the defaults).

        Raises:
            LossHookConfigError: text that is not a JSON object, an unknown field or a bad value.

        Example:
            >>> AEPOConfig.from_value({"branching": {"variant": "released"}}).branching.variant
            'released'
        """
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text else {}
            except json.JSONDecodeError as exc:
                raise LossHookConfigError(
                    f'aepo must be a JSON object, e.g. \'{{"branching": {{"p_branch": 0.05}}}}\': {exc} in {text!r}'
                ) from exc
        if not isinstance(value, Mapping):
            raise LossHookConfigError(f"aepo must be a mapping of AEPOConfig fields, not {type(value).__name__}")
        return _build(cls, value, "aepo")


def _build(config_class: type, values: Mapping[str, Any], where: str) -> Any:
    """``config_class(**values)`` with a one-line error naming an unknown field."""
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LossHookConfigError(f"unknown {where} settings {unknown}; known: {sorted(known)}")
    return config_class(**values)
