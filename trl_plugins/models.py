"""Models for training without downloads: SmolLM2 (from :mod:`agentgym_envs.models`) and tiny random models.

The SmolLM2 lookup lives in the environments package (the leaderboard's ``smollm2`` policy needs it
too); it is re-exported here for the trainer.

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> path = smollm2_dir()                                    # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained(path)      # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained(path)         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from agentgym_envs.models import (
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    load_smollm2,
    smollm2_dir,
    smollm2_gguf,
    smollm2_tokenizer,
)

__all__ = [
    "CHATML_TEMPLATE",
    "SMOLLM2_GGUF",
    "SMOLLM2_NAME",
    "load_smollm2",
    "smollm2_dir",
    "smollm2_gguf",
    "smollm2_tokenizer",
    "tiny_model",
    "tiny_tokenizer",
]


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
