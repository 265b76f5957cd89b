"""Hook state in trainer checkpoints: one ``loss_hooks.pt`` per checkpoint folder, keyed by hook name.

The trainer saves it beside TRL's optimizer state and restores it on ``resume_from_checkpoint``, so a hook's running
statistics (EPO's entropy history) continue where they stopped.

Example:
    >>> import tempfile
    >>> from trl_plugins.hooks import EPOHook
    >>> hook = EPOHook(); hook.history.push(0.5)
    >>> folder = tempfile.mkdtemp(); save_hooks_state([hook], folder)
    >>> restored = EPOHook(); load_hooks_state([restored], folder); restored.history.reference()
    0.5
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from trl_plugins.hooks.base import LossHook

__all__ = ["HOOKS_STATE_FILE", "load_hooks_state", "save_hooks_state"]

#: The file, inside a checkpoint folder, that holds every hook's ``state_dict``.
HOOKS_STATE_FILE = "loss_hooks.pt"


def save_hooks_state(hooks: Sequence[LossHook], folder: str | os.PathLike[str]) -> None:
    """Write ``{hook.name: hook.state_dict()}`` to ``folder/loss_hooks.pt`` (nothing without hooks)."""
    if hooks:
        torch.save({h.name: h.state_dict() for h in hooks}, os.path.join(folder, HOOKS_STATE_FILE))


def load_hooks_state(hooks: Sequence[LossHook], folder: str | os.PathLike[str]) -> None:
    """Restore each hook's state from ``folder/loss_hooks.pt``, if the file is there and names the hook."""
    path = os.path.join(folder, HOOKS_STATE_FILE)
    if not hooks or not os.path.exists(path):
        return
    state = torch.load(path, weights_only=False)
    for hook in hooks:
        if hook.name in state:
            hook.load_state_dict(state[hook.name])
