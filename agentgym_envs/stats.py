"""Interval statistics shared by the leaderboard and the trainer's held-out evaluation.

Example:
    >>> from agentgym_envs.stats import wilson_interval
    >>> [round(x, 2) for x in wilson_interval(0, 100)]
    [0.0, 0.04]
"""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate.

    Example:
        >>> [round(x, 3) for x in wilson_interval(5, 10)]
        [0.237, 0.763]
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
