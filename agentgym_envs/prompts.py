"""How an environment is shown to a language model, as chat messages.

The trainer, the SFT export and the leaderboard all render conversations with these
functions, so a model sees exactly the same prompts in training and in evaluation.

Example:
    >>> msgs = first_messages("Take the key.", "You are in a hall.", "Reply with one command.")
    >>> [m["role"] for m in msgs]
    ['system', 'user']
    >>> observation_message("You take the key.")["role"]
    'user'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent acting in a text environment. Read the task and each observation, "
    "then act to complete the task in as few steps as possible."
)


@dataclass(frozen=True)
class PromptConfig:
    """What goes into the prompt besides the observations.

    Example:
        >>> PromptConfig(system_prompt=None).system_prompt is None
        True
    """

    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    include_format_instructions: bool = True


def first_messages(
    instruction: str, observation: str, format_instructions: str, config: PromptConfig = PromptConfig()
) -> list[dict[str, str]]:
    """The messages that open an episode: system prompt, then task, format and first observation."""
    parts = [f"Task: {instruction.strip()}"] if instruction.strip() else []
    if config.include_format_instructions and format_instructions:
        parts.append(format_instructions.strip())
    parts.append(f"Observation:\n{observation.strip()}")
    messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    messages.append({"role": "user", "content": "\n\n".join(parts)})
    return messages


def observation_message(observation: str) -> dict[str, str]:
    """The message that carries an observation after the agent's action."""
    return {"role": "user", "content": f"Observation:\n{observation.strip()}"}


def episode_messages(env: Any, observation: str, config: PromptConfig = PromptConfig()) -> list[dict[str, str]]:
    """:func:`first_messages` for a reset :class:`~agentgym_envs.core.TextEnv` (or a wrapper of one)."""
    inner = env.unwrapped
    return first_messages(inner.instruction, observation, inner.parser.instructions(), config)
