"""Per-token log-probabilities and full-vocabulary entropy of a batch's completion tokens under a model.

The trainer scores every batch through :func:`token_logps_and_entropy`: the old and reference log-probs when a
batch is generated, the current policy's (with grad) in the loss.  On a plain ``*ForCausalLM`` the backbone's
hidden states go through :func:`trl_plugins.entropy.logps_and_entropy` (chunked over the vocabulary, only the masked-in
positions); distributed wrappers and LM heads with logit scaling or soft-capping use TRL's fused LM head instead
(same quantities, positions masked through the labels).

Example:
    >>> import torch
    >>> from accelerate import Accelerator
    >>> from trl_plugins.models import tiny_model, tiny_tokenizer
    >>> model = tiny_model(tiny_tokenizer())
    >>> ids, attn = torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.long)
    >>> logps, entropy = token_logps_and_entropy(model, ids, attn, 2, torch.ones(1, 2), accelerator=Accelerator())
    >>> logps.shape, bool((entropy > 0).all())
    (torch.Size([1, 2]), True)
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import is_peft_model

__all__ = ["dropout_active", "plain_head_model", "token_logps_and_entropy"]


def token_logps_and_entropy(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    mask: torch.Tensor,
    *,
    accelerator: Any,
    temperature: float = 1.0,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the last ``logits_to_keep`` tokens and their entropy, ``batch_size`` rows at a time.

    Positions come from the attention mask (as in ``generate``), so left padding does not shift them.  Only
    positions where ``mask`` is 1 are scored (others are 0), which skips the LM-head work on environment tokens.
    """
    batch_size = batch_size or input_ids.size(0)
    all_logps, all_entropy = [], []
    for start in range(0, input_ids.size(0), batch_size):
        rows = slice(start, start + batch_size)
        logps, entropy = _chunk_logps(
            model, input_ids[rows], attention_mask[rows], logits_to_keep, mask[rows], accelerator, temperature
        )
        all_logps.append(logps)
        all_entropy.append(entropy)
    return torch.cat(all_logps, 0), torch.cat(all_entropy, 0)


def _chunk_logps(model, input_ids, attention_mask, logits_to_keep, mask, accelerator, temperature):
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    targets = input_ids[:, -logits_to_keep:]
    head_model = plain_head_model(model, accelerator)
    if head_model is None:
        # TRL's fused LM head (distributed wrappers, logit scaling): same quantities, no masking of positions.
        labels = input_ids.clone()
        labels[:, :-logits_to_keep] = -100
        labels[:, -logits_to_keep:] = targets.masked_fill(mask == 0, -100)
        with accelerator.autocast():
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                labels=labels,
                fused_lm_head=True,
            )
        return out.log_probs[:, -logits_to_keep:], out.entropy[:, -logits_to_keep:]
    from trl_plugins.entropy import logps_and_entropy

    backbone = getattr(head_model, head_model.base_model_prefix)
    head = head_model.get_output_embeddings()
    with accelerator.autocast():
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
    hidden = hidden[:, -logits_to_keep - 1 : -1]
    return logps_and_entropy(
        hidden, targets, head.weight, head.bias, temperature=temperature, mask=mask, chunk_size=1024
    )


def plain_head_model(model: Any, accelerator: Any) -> Any:
    """The ``*ForCausalLM`` whose backbone and LM head can be called directly, or ``None``.

    ``None`` for a model wrapped by DDP/FSDP/DeepSpeed (go through the wrapper's forward) and for LM heads that scale
    or soft-cap their logits.
    """
    if model is not accelerator.unwrap_model(model):
        return None
    inner = model.get_base_model() if is_peft_model(model) else model
    text = inner.config.get_text_config()
    if any(
        getattr(text, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    ):
        return None
    if not hasattr(inner, getattr(inner, "base_model_prefix", "")) or inner.get_output_embeddings() is None:
        return None
    return inner


def dropout_active(model: Any) -> bool:
    """Whether a training-mode forward of ``model`` drops anything: a dropout module with ``p > 0`` (LoRA's
    included) or a ``*dropout`` probability above 0 in its config (attention dropout is applied functionally).

    Two forwards of such a model in training mode give different numbers, so no pass can stand in for another.

    Example:
        >>> from trl_plugins.models import tiny_model, tiny_tokenizer
        >>> dropout_active(tiny_model(tiny_tokenizer())), dropout_active(torch.nn.Dropout(0.1))
        (False, True)
    """
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
        config = getattr(module, "config", None)
        if config is None or id(config) in seen or not hasattr(config, "get_text_config"):
            continue
        seen.add(id(config))
        settings = vars(config.get_text_config())
        if any(k.endswith("dropout") and isinstance(v, float) and v > 0 for k, v in settings.items()):
            return True
    return False
