"""Step schedules used by the loss hooks and the trainer: ScalingInter-RL horizons and EPO's phase weight.

Both are pure functions of the step number, so they are automatically correct after resuming from a checkpoint
as long as the caller passes the restored step (``trainer.state.global_step``).

Example:
    >>> scaling_inter_horizon(step=101, horizons=[10, 20, 30], interval=100)
    20
    >>> epo_phase_weight(step=0, total_steps=100)
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["scaling_inter_horizon", "epo_phase_weight", "released_epo_weight", "ScalingInterSchedule"]


def scaling_inter_horizon(step: int, horizons: Sequence[int], interval: int) -> int:
    """Maximum number of interaction turns at training step ``step`` (ScalingInter-RL, AgentGym-RL).

    Horizons switch every ``interval`` steps: ``horizons[0]`` for steps 1..S, ``horizons[1]`` for S+1..2S, ...,
    the last one from then on.  ``step`` is 1-based (the step being trained; pass ``state.global_step + 1`` from a
    HF/TRL trainer); step 0 (before training) is treated as step 1.

    Args:
        step: 1-based training step (>= 0).
        horizons: non-empty list of positive turn limits, e.g. ``[10, 20, 30]``.
        interval: S, number of steps per phase (>= 1).

    Example:
        >>> [scaling_inter_horizon(s, [6, 13, 20], 100) for s in (1, 100, 101, 200, 201, 10_000)]
        [6, 6, 13, 13, 20, 20]
    """
    if not horizons:
        raise ValueError("horizons must not be empty")
    if any(int(h) < 1 for h in horizons):
        raise ValueError(f"horizons must be positive, got {list(horizons)}")
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    phase = (max(step, 1) - 1) // interval
    return int(horizons[min(phase, len(horizons) - 1)])


@dataclass
class ScalingInterSchedule:
    """ScalingInter-RL as a config object: ``schedule(step)`` is the turn limit at 1-based ``step``.

    Defaults are AgentGym-RL's ScienceWorld/TextCraft setting.

    Example:
        >>> ScalingInterSchedule(horizons=[8, 12, 15], interval=80)(81)
        12
    """

    horizons: list[int] = field(default_factory=lambda: [10, 20, 30])
    interval: int = 100

    def __post_init__(self) -> None:
        scaling_inter_horizon(1, self.horizons, self.interval)  # validates

    def __call__(self, step: int) -> int:
        return scaling_inter_horizon(step, self.horizons, self.interval)


def epo_phase_weight(step: int, total_steps: int, gamma: float = 3.0) -> float:
    """EPO's adaptive phase weight ``beta_k = 1 + exp(-gamma * k / k_mid)``, ``k_mid = floor(K / 2)``.

    ``beta_0 = 2``; at ``k = k_mid`` it is ``1 + e^-gamma``; it tends to 1.  ``step`` is the 0-based RL step k
    and ``total_steps`` the planned number K.  With ``K = 1`` (``k_mid = 0``) we use ``k_mid = 1`` to stay defined.

    Example:
        >>> round(epo_phase_weight(50, 100, gamma=3.0), 6) == round(1 + math.exp(-3.0), 6)
        True
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    k_mid = max(total_steps // 2, 1)
    return 1.0 + math.exp(-gamma * step / k_mid)


def released_epo_weight(step: int, total_steps: int, gamma: float = 3.0, slow: float = 2.0) -> float:
    """The decaying smoothing weight of the authors' released EPO code (opt-in ``mode="released"`` only).

    First half: ``1 - 0.2 * (1 - exp(-slow * k / half))`` (1.0 -> ~0.83); second half:
    ``0.8 * exp(-gamma * (k - half) / (K - half))`` (0.8 -> ~0.04).  This is *not* the paper's beta_k.

    Example:
        >>> released_epo_weight(0, 100)
        1.0
    """
    if total_steps <= 0:
        return 1.0
    k = min(max(step, 0), total_steps)
    half = total_steps // 2
    if k <= half:
        return 1.0 if half == 0 else 1.0 - 0.2 * (1.0 - math.exp(-slow * k / half))
    rest = total_steps - half
    return 0.8 * math.exp(-gamma * (k - half) / rest)
