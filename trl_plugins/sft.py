"""Warm start: expert trajectories of any family as a chat dataset for TRL's ``SFTTrainer``.

Each row is one expert episode in the ``messages`` format, rendered exactly as
:class:`~trl_plugins.trainer.AgentGRPOTrainer` renders its rollouts: the same opening
messages (:func:`agentgym_envs.prompts.episode_messages`), the expert's command written in the
environment's action format (:meth:`~agentgym_envs.parsing.ActionParser.format_command`) as the
assistant message, and each observation as :func:`~agentgym_envs.prompts.observation_message`.
The final observation (after the winning action) is left out, as in the trainer's sequences.

Example:
    >>> from trl import SFTConfig, SFTTrainer
    >>> data = expert_dataset("agentgym/TextWorld-w2-o3-q4-v0", episodes=60,
    ...                       env_kwargs={"seed_range": (30001, 30060)})              # doctest: +SKIP
    >>> SFTTrainer(model, args=SFTConfig(output_dir="runs/sft"), train_dataset=data,
    ...            processing_class=tokenizer).train()                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import gymnasium as gym

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.core import as_text_env
from agentgym_envs.errors import ExpertUnavailableError
from agentgym_envs.prompts import PromptConfig, episode_messages, observation_message
from agentgym_envs.registry import make_env


def expert_episode(env: gym.Env, task: Hashable, seed: int, prompt: PromptConfig | None = None) -> dict[str, Any]:
    """Play the family's expert on ``task`` and return the episode as a dataset row.

    Example:
        >>> row = expert_episode(env, task=30001, seed=0)   # doctest: +SKIP
        >>> row["messages"][-1]["role"]                     # doctest: +SKIP
        'assistant'
    """
    inner = as_text_env(env)
    obs, info = env.reset(seed=seed, options={"task": task})
    messages = episode_messages(env, obs, prompt or PromptConfig())
    total, won, turns = 0.0, False, 0
    done = False
    while not done:
        try:
            command = inner.expert_action()
        except ExpertUnavailableError:
            break
        if command is None:
            raise ExpertUnavailableError(f"the {inner.family!r} family has no expert")
        text = inner.parser.format_command(command)
        obs, reward, terminated, truncated, info = env.step(text)
        total += float(reward)
        turns += 1
        messages.append({"role": "assistant", "content": text})
        done = terminated or truncated
        won = bool(info.get("won"))
        if not done:
            messages.append(observation_message(obs))
    return {"messages": messages, "task_id": str(task), "seed": seed, "won": won, "return": total, "turns": turns}


def expert_dataset(
    env_id: str,
    episodes: int = 60,
    split: str = "train",
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    prompt: PromptConfig | None = None,
    successful_only: bool = True,
    tasks: Sequence[Hashable] | None = None,
) -> Any:
    """A ``datasets.Dataset`` of expert episodes (columns ``messages``, ``task_id``, ``seed``, ``won``, ``return``, ``turns``).

    Tasks are the first ``episodes`` tasks of the split (or ``tasks``); with ``successful_only``
    episodes the expert did not win are dropped.

    Example:
        >>> data = expert_dataset("agentgym/TextWorld-w2-o3-q4-v0", episodes=2,
        ...                       env_kwargs={"seed_range": (30001, 30002)})   # doctest: +SKIP
        >>> data.column_names[:1]                                          # doctest: +SKIP
        ['messages']
    """
    from datasets import Dataset

    kwargs = dict(env_kwargs or {})
    kwargs["split"] = split
    env = make_env(env_id, **kwargs)
    try:
        chosen = list(tasks) if tasks is not None else list(as_text_env(env).task_ids)[:episodes]
        rows = [expert_episode(env, task, seed + i, prompt) for i, task in enumerate(chosen)]
    finally:
        env.close()
    if successful_only:
        rows = [r for r in rows if r["won"]]
    if not rows:
        raise ExpertUnavailableError(f"the expert produced no {'winning ' if successful_only else ''}episode on {env_id}")
    return Dataset.from_list(rows)
