"""Statistics over every process of a multi-process run (``accelerate launch``: DDP, FSDP, DeepSpeed).

With several processes each one plays and trains on its slice of the generation batch, while the papers define
group advantages, ``scale_rewards="batch"``, GiGPO's step groups, EPO's entropy history, AEPO's entropy
standardisation, ERC's clip fractions and the logged metrics over the **whole** batch.  :class:`Ranks` is the one
place the trainer and the hooks reach the other processes: it gathers what a statistic needs, and the statistic is
computed on the global batch, of which each process keeps its slice.

Means that enter the loss are computed as **shares** (:meth:`Ranks.mean_share`): this process's sum divided by the
global count over the number of processes.  DDP (and FSDP, DeepSpeed) average gradients over the processes, so the
averaged shares are exactly the global mean -- the loss and gradients of one process holding the whole batch.

Example:
    >>> import torch
    >>> ranks = Ranks()                      # one process: every collective is the identity
    >>> ranks.gather_objects(["a", "b"])
    (['a', 'b'], slice(0, 2, None))
    >>> float(ranks.mean_share(torch.tensor(6.0), torch.tensor(3.0)))
    2.0
    >>> rank_seed(42, 0), rank_seed(42, 1)
    (42, 43)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Ranks", "rank_seed"]


def rank_seed(seed: int, process_index: int) -> int:
    """The seed of one process's own random streams (its sampler, AEPO's branching draws): distinct per process and
    reproducible, ``seed + process_index`` as TRL's ``set_seed(seed, device_specific=True)``.

    Tasks keep their dataset seeds, which do not depend on the process: a group's episodes play the same task
    instance wherever TRL's sampler puts them.

    Example:
        >>> [rank_seed(7, r) for r in range(3)]
        [7, 8, 9]
    """
    return int(seed) + int(process_index)


class Ranks:
    """The processes of a run as the trainer's statistics see them: how many, which one this is, and the collectives.

    ``Ranks()`` is a single process (every collective is the identity, no ``torch.distributed`` needed);
    :meth:`from_accelerator` is the run's processes.  Every collective must be called by every process, in the same
    order (the trainer and the hooks call them once per batch, micro-batch or RL step, which every process has).

    Args:
        num_processes: how many processes train.
        process_index: this process's rank.
        accelerator: the ``accelerate.Accelerator`` whose processes these are (``None``: one process).

    Example:
        >>> import torch
        >>> Ranks().sum(torch.tensor([1.0, 2.0])).tolist()
        [1.0, 2.0]
    """

    def __init__(self, num_processes: int = 1, process_index: int = 0, accelerator: Any = None) -> None:
        if num_processes < 1 or not 0 <= process_index < num_processes:
            raise ValueError(f"process_index {process_index} is not a rank of {num_processes} processes")
        if num_processes > 1 and accelerator is None:
            raise ValueError("several processes need the accelerator that connects them")
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.accelerator = accelerator

    @classmethod
    def from_accelerator(cls, accelerator: Any) -> Ranks:
        """The processes of ``accelerator``'s run."""
        n = int(accelerator.num_processes)
        return cls(n, int(accelerator.process_index), accelerator if n > 1 else None)

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.num_processes > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (no gradient; every process gets the sum)."""
        tensor = tensor.detach()
        if not self.distributed:
            return tensor
        # NCCL reduces device tensors only; the result goes back where the caller keeps it.
        return self.accelerator.reduce(tensor.to(self.accelerator.device, copy=True), reduction="sum").to(tensor.device)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise maximum of ``tensor`` over the processes (no gradient)."""
        tensor = tensor.detach()
        if not self.distributed:
            return tensor
        return self.accelerator.gather(tensor.unsqueeze(0).to(self.accelerator.device)).amax(0).to(tensor.device)

    def mean_share(self, total: torch.Tensor, count: torch.Tensor | float) -> torch.Tensor:
        """This process's share of a mean over every process: ``total / (sum of count over processes / P)``.

        The average of the shares over the ``P`` processes (what data-parallel training does to gradients) is the
        mean over every process's items; with one process it is ``total / count``.  An empty global count gives 0.

        Example:
            >>> float(Ranks().mean_share(torch.tensor(3.0), torch.tensor(0.0)))
            3.0
        """
        count = torch.as_tensor(count, dtype=total.dtype, device=total.device).detach()
        if self.distributed:
            count = self.sum(count) / self.num_processes
            return total / count.clamp(min=1.0 / self.num_processes)
        return total / count.clamp(min=1.0)

    def gather_objects(self, items: Sequence[Any]) -> tuple[list[Any], slice]:
        """Every process's ``items`` (picklable) in rank order, and the slice of them that are this process's.

        Processes may hold different numbers of items (AEPO's rollouts, step-wise samples).

        Example:
            >>> Ranks().gather_objects([1, 2, 3])[1]
            slice(0, 3, None)
        """
        items = list(items)
        if not self.distributed:
            return items, slice(0, len(items))
        from accelerate.utils import gather_object

        per_rank = gather_object([items])
        start = sum(len(part) for part in per_rank[: self.process_index])
        return [item for part in per_rank for item in part], slice(start, start + len(items))
