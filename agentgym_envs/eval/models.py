"""Deprecated: the SmolLM2 lookup moved to :mod:`agentgym_envs.models` (it is not evaluation code).

This alias re-exports it for code that imports the old path, and warns once.

Example:
    >>> from agentgym_envs.models import smollm2_dir   # the new path
"""

from __future__ import annotations

import warnings

from agentgym_envs.models import (
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    load_smollm2,
    smollm2_dir,
    smollm2_gguf,
    smollm2_tokenizer,
)

warnings.warn(
    "agentgym_envs.eval.models moved to agentgym_envs.models; import it from there",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["SMOLLM2_GGUF", "SMOLLM2_NAME", "load_smollm2", "smollm2_dir", "smollm2_gguf", "smollm2_tokenizer"]
