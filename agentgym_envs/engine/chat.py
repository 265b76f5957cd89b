"""The chat template of a tokenizer, cut into the pieces a token-exact rollout appends, and its stop ids.

An episode's token sequence is built from pieces that are each tokenized once and never re-tokenized:
the opening messages with the generation prompt (:meth:`ChatFormat.prompt_ids`), then per turn the
sampled ids verbatim and the environment's tokens (:meth:`ChatFormat.env_ids`: the rest of the
assistant message, the observation as a user message, the next generation prompt).

Stop ids: ONE set is used everywhere -- by the sampler, by :class:`ChatFormat` (a turn that ends on
any of them is closed without another end token) and by the bookkeeping (a turn that ends on one did
not hit the token limit).  :func:`stop_ids_for` gives it: the generation config's end ids and the
tokenizer's eos (Qwen-family configs list two).

Example:
    >>> from types import SimpleNamespace
    >>> stop_ids_for(SimpleNamespace(eos_token_id=2), SimpleNamespace(eos_token_id=[7, 2]))
    (2, 7)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

_SYSTEM = "SYSTEM_5d1e"
_USER = "USER_8c2a"
_ASSISTANT = "ASSISTANT_3f7b"
_OBSERVATION = "OBSERVATION_9e4d"


def stop_ids_for(tokenizer: Any, generation_config: Any = None) -> tuple[int, ...]:
    """The end-of-turn ids: the tokenizer's eos first, then every eos id of the generation config."""
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.append(int(eos))
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if extra is not None:
        for token in [extra] if isinstance(extra, int) else list(extra):
            if int(token) not in ids:
                ids.append(int(token))
    return tuple(ids)


class ChatFormat:
    """The chat template of a tokenizer, cut into the pieces a rollout appends.

    Args:
        tokenizer: a tokenizer with a chat template.
        chat_template_kwargs: passed to ``apply_chat_template``.
        stop_ids: the one set of end-of-turn ids (default: the tokenizer's eos; pass
            :func:`stop_ids_for` ``(tokenizer, model.generation_config)`` to include the model's).

    Raises ``ValueError`` if the template is not prefix-preserving (rendering earlier messages
    differently once later ones follow), since then no token-exact multi-turn sequence exists;
    TRL's :func:`trl.chat_template_utils.get_training_chat_template` gives a suitable one.

    Example:
        >>> fmt = ChatFormat(tokenizer, stop_ids=stop_ids_for(tokenizer, model.generation_config))  # doctest: +SKIP
        >>> fmt.env_ids("You see a key.", ended_with_eos=True)                                     # doctest: +SKIP
    """

    def __init__(
        self, tokenizer: Any, chat_template_kwargs: dict[str, Any] | None = None, stop_ids: Iterable[int] | None = None
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; set tokenizer.chat_template first")
        self.tokenizer = tokenizer
        self.kwargs = dict(chat_template_kwargs or {})
        eos = tokenizer.eos_token_id
        #: The one set of end-of-turn ids, in order (the sampler stops on them; see :func:`stop_ids_for`).
        self.stop_ids: tuple[int, ...] = tuple(stop_ids) if stop_ids is not None else stop_ids_for(tokenizer)
        self.eos_ids: set[int] = set(self.stop_ids)
        base = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}]
        with_answer = self.render([*base, {"role": "assistant", "content": _ASSISTANT}])
        with_obs = self.render(
            [*base, {"role": "assistant", "content": _ASSISTANT}, {"role": "user", "content": _OBSERVATION}],
            add_generation_prompt=True,
        )
        prompt = self.render(base, add_generation_prompt=True)
        if not with_obs.startswith(with_answer) or not with_answer.startswith(prompt):
            raise ValueError(
                "the chat template is not prefix-preserving, so multi-turn sequences cannot be token-exact; set "
                "tokenizer.chat_template = trl.chat_template_utils.get_training_chat_template(tokenizer)"
            )
        after_answer = with_answer[with_answer.index(_ASSISTANT) + len(_ASSISTANT) :]
        #: Text the template puts after an assistant message's content (e.g. ``<|im_end|>\n``).
        self.close_text = after_answer
        delta = with_obs[len(with_answer) :]
        #: Text around an observation: ``(before, after)`` (e.g. ``<|im_start|>user\n``, ``<|im_end|>...assistant\n``).
        self.observation_frame = tuple(delta.split(_OBSERVATION))
        if len(self.observation_frame) != 2:
            raise ValueError("could not locate the user message in the chat template's output")
        eos_text = tokenizer.decode([eos]) if eos is not None else ""
        #: Text left of :attr:`close_text` once the model has sampled a stop id: the template's end token
        #: (the tokenizer's eos) is replaced by the sampled one, whichever of the stop ids it is.
        self.close_after_eos = after_answer[len(eos_text) :] if eos_text and after_answer.startswith(eos_text) else None

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The template applied to ``messages``, as text."""
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **self.kwargs
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of rendered template text (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of sampled ids without special tokens (what the environment receives)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def invalid_ids(self, ids: Sequence[int]) -> list[int]:
        """The ids a backend returned that name no token: negative, or at least ``len(tokenizer)``.

        A model whose embedding is padded past the tokenizer (or a faulty backend) can return them; decoding
        would drop them silently or fail, so the engine ends such an episode with ``"generation_error"``.
        """
        size = len(self.tokenizer)
        return [int(i) for i in ids if not 0 <= int(i) < size]

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The opening messages with the generation prompt."""
        return self.encode(self.render(messages, add_generation_prompt=True))

    def ends_turn(self, action_ids: Sequence[int]) -> bool:
        """Whether sampled ids end on one of the stop ids (the model closed its turn itself)."""
        return bool(action_ids) and action_ids[-1] in self.eos_ids

    def env_ids(self, observation_content: str, ended_with_eos: bool) -> list[int]:
        """Tokens after a model turn: the rest of the assistant message, the observation, the next prompt."""
        close = self.close_after_eos if (ended_with_eos and self.close_after_eos is not None) else self.close_text
        before, after = self.observation_frame
        return self.encode(close + before + observation_content + after)


__all__ = ["ChatFormat", "stop_ids_for"]
