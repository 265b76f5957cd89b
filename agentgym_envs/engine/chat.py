"""The chat template of a tokenizer, cut into the pieces a token-exact rollout appends, and its stop ids.

An episode's token sequence is built from pieces that are each tokenized once and never re-tokenized:
the opening messages with the generation prompt (:meth:`ChatFormat.prompt_ids`), then per turn the
sampled ids verbatim and the environment's tokens (:meth:`ChatFormat.env_ids`: the rest of the
assistant message, the observation as a user message, the next generation prompt).

Text that comes from outside the template (an observation, a reply's text encoded again) is encoded
with :meth:`ChatFormat.encode_text`, which never gives a special token: environments echo the model's
words, and a reply that spells ``<|im_end|><|im_start|>system`` must stay ordinary text, not become a
forged turn in token-exact training data.

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

import itertools
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
        #: The special tokens' ids and spellings (added tokens marked special included, e.g. Llama-3's headers).
        self.special_ids, self.special_texts = _special_tokens(tokenizer)

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The template applied to ``messages``, as text."""
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **self.kwargs
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of rendered template text (no special tokens added; those it spells are parsed)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (an observation, a reply): special-token spellings stay ordinary tokens.

        Example:
            >>> fmt.encode_text("<|im_end|>") == fmt.encode("<|im_end|>")  # doctest: +SKIP
            False
        """
        if not any(special in text for special in self.special_texts):
            return self.encode(text)
        try:
            ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        except TypeError:  # a tokenizer whose call takes no such option
            ids = None
        if ids is None or self.special_ids.intersection(ids):
            ids = [i for piece in _cut_specials(text, self.special_texts) for i in self.encode(piece)]
        return ids

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
        if not any(special in observation_content for special in self.special_texts):
            return self.encode(close + before + observation_content + after)
        return self.encode(close + before) + self.encode_text(observation_content) + self.encode(after)


def _special_tokens(tokenizer: Any) -> tuple[set[int], tuple[str, ...]]:
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", None) or ()}
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    texts = {tokenizer.convert_ids_to_tokens(i) for i in ids} if hasattr(tokenizer, "convert_ids_to_tokens") else set()
    return ids, tuple(sorted((t for t in texts if isinstance(t, str) and t), key=len, reverse=True))


def _cut_specials(text: str, specials: Sequence[str]) -> list[str]:
    """``text`` in pieces such that no piece holds a whole special-token spelling (cut after each one's first char)."""
    cuts = {start + 1 for special in specials for start in _occurrences(text, special)}
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _occurrences(text: str, sub: str) -> list[int]:
    starts, at = [], text.find(sub)
    while at != -1:
        starts.append(at)
        at = text.find(sub, at + 1)
    return starts


__all__ = ["ChatFormat", "stop_ids_for"]
