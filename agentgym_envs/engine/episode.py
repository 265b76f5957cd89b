"""Episodes and their token bookkeeping: :class:`RolloutConfig`, :class:`Turn`, :class:`Episode`, :class:`RolloutStats`.

An episode's sequence is ``prompt_ids`` followed, per turn, by the ``action_ids`` the model sampled
(kept verbatim) and the ``env_ids`` the chat template adds around the environment's answer.  Only
``action_ids`` are model tokens: :meth:`Episode.completion` gives the mask that keeps the
environment's tokens out of the loss and every statistic.

Example:
    >>> ep = Episode(group=0, task_id=1, seed=0, prompt_ids=[5, 6], messages=[])
    >>> ep.turns.append(Turn([7, 8], "look", 0.0, "You see.", "s0", env_ids=[9]))
    >>> ep.completion()
    ([7, 8, 9], [1, 1, 0], [0, 0, -1])
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym_envs.prompts import PromptConfig

CONTEXT_MODES = ("full", "stepwise")
REPLY_MODES = ("tokens", "text")


@dataclass(frozen=True)
class RolloutConfig:
    """Limits and context of multi-turn rollouts.

    Attributes:
        max_turns: model turns per episode; an episode still running after them is truncated.
        max_new_tokens: tokens the model may sample per turn.
        max_context_tokens: total token budget of an episode's sequence (``"full"``) or of one
            turn's prompt plus its action (``"stepwise"``).
        context_mode: ``"full"`` (one sequence per episode) or ``"stepwise"`` (each turn is a
            sample whose prompt holds the opening messages and the last ``history_turns`` turns).
        history_turns: ``k`` of the step-wise mode.
        prompt: system prompt and format instructions (shared with the leaderboard).
        reply: ``"tokens"`` (the sampled ids are the record: token-exact, for training) or ``"text"``
            (the decoded reply is the record and is tokenized again through the chat template, as a
            chat client sees the conversation: for evaluation; text backends always work this way).
        first_line_only: keep only a reply's first line (the leaderboard's rule for the plain action
            format, where anything after a newline can only make the action invalid); needs ``reply="text"``.
        overlap: generate for the episodes whose step has finished while slower steps keep running (a step
            still running after the batch waited as long as the last generation took joins the next batch);
            ``False``: the batch moves in lockstep; ``None``: on when some environment steps outside this
            process (a worker process, a Ray actor); in-process environments step inside ``step_wait``.

    Example:
        >>> RolloutConfig(max_turns=4, context_mode="stepwise", history_turns=2).context_mode
        'stepwise'
    """

    max_turns: int = 10
    max_new_tokens: int = 64
    max_context_tokens: int = 4096
    context_mode: str = "full"
    history_turns: int = 2
    prompt: PromptConfig = field(default_factory=PromptConfig)
    reply: str = "tokens"
    first_line_only: bool = False
    overlap: bool | None = None

    def __post_init__(self) -> None:
        if self.context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode must be one of {CONTEXT_MODES}, not {self.context_mode!r}")
        if self.reply not in REPLY_MODES:
            raise ValueError(f"reply must be one of {REPLY_MODES}, not {self.reply!r}")
        if self.first_line_only and self.reply != "text":
            raise ValueError("first_line_only=True changes the reply, so it needs reply='text' (not token-exact)")
        if self.max_turns < 1 or self.max_new_tokens < 1 or self.max_context_tokens < 1:
            raise ValueError("max_turns, max_new_tokens and max_context_tokens must be >= 1")
        if self.history_turns < 0:
            raise ValueError(f"history_turns must be >= 0, got {self.history_turns}")


@dataclass
class Turn:
    """One model turn: the sampled tokens and what the environment answered."""

    action_ids: list[int]
    text: str
    reward: float
    observation: str
    state_key: str
    parse_error: str | None = None
    hit_token_limit: bool = False
    env_ids: list[int] = field(default_factory=list)
    context_ids: list[int] | None = None
    #: Log-probabilities of ``action_ids`` as the backend sampled them (``None`` if it cannot give them).
    logprobs: list[float] | None = None
    #: Entropies of the distributions ``action_ids`` were drawn from (``None`` if the backend does not give them).
    entropies: list[float] | None = None
    #: The command the environment executed after parsing ``text`` (``None`` when it could not be parsed).
    action: str | None = None


@dataclass
class Episode:
    """A multi-turn episode of one task, with its tokens.

    Example:
        >>> ep = Episode(group=0, task_id=1, seed=0, prompt_ids=[5, 6], messages=[])
        >>> ep.context_ids()
        [5, 6]
    """

    group: Hashable
    task_id: Hashable
    seed: int | None
    prompt_ids: list[int]
    messages: list[dict[str, str]]
    turns: list[Turn] = field(default_factory=list)
    won: bool = False
    done: bool = False
    truncated: bool = False
    truncation_reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    last_observation: str = ""
    #: What ``reset`` returned (the episode's first observation).
    first_observation: str = ""
    #: Forks (:meth:`fork`): the index (in its run's list of episodes) of the episode this one was forked from,
    #: and the turn at which (it shares ``prompt_ids`` and ``turns[:branch_turn]`` with its parent).
    parent: int | None = None
    branch_turn: int | None = None

    @property
    def total_return(self) -> float:
        return float(sum(t.reward for t in self.turns))

    @property
    def step_rewards(self) -> list[float]:
        return [t.reward for t in self.turns]

    @property
    def state_keys(self) -> list[str]:
        return [t.state_key for t in self.turns]

    def context_ids(self, history_turns: int | None = None) -> list[int]:
        """The tokens the next turn is generated from (all turns, or the last ``history_turns``)."""
        if history_turns is None:
            turns = self.turns
        else:
            turns = self.turns[max(0, len(self.turns) - history_turns) :] if history_turns else []
        ids = list(self.prompt_ids)
        for turn in turns:
            ids += turn.action_ids + turn.env_ids
        return ids

    def completion(self) -> tuple[list[int], list[int], list[int]]:
        """Everything after the prompt: ``(ids, model-token mask, turn index or -1)``."""
        ids: list[int] = []
        mask: list[int] = []
        turn_ids: list[int] = []
        for t, turn in enumerate(self.turns):
            ids += turn.action_ids + turn.env_ids
            mask += [1] * len(turn.action_ids) + [0] * len(turn.env_ids)
            turn_ids += [t] * len(turn.action_ids) + [-1] * len(turn.env_ids)
        return ids, mask, turn_ids

    def fork(self, parent: int) -> Episode:
        """A copy of this episode's history (prompt, turns, messages, info) that goes on from its current turn.

        ``parent`` is this episode's index in its run's list of episodes; the copy records it with the turn at
        which it was forked (:attr:`parent`, :attr:`branch_turn`).  The copy shares nothing mutable with this
        episode, so each continues on its own.  :func:`~agentgym_envs.engine.fork_episode` forks the
        environment's state with it.

        Example:
            >>> ep = Episode(group=0, task_id=1, seed=0, prompt_ids=[5, 6], messages=[])
            >>> ep.turns.append(Turn([7, 8], "look", 0.0, "You see.", "s0", env_ids=[9]))
            >>> branch = ep.fork(parent=0)
            >>> branch.parent, branch.branch_turn, branch.context_ids() == ep.context_ids()
            (0, 1, True)
        """
        return Episode(
            group=self.group,
            task_id=self.task_id,
            seed=self.seed,
            prompt_ids=list(self.prompt_ids),
            messages=copy.deepcopy(self.messages),
            turns=copy.deepcopy(self.turns),
            info=copy.deepcopy(self.info),
            last_observation=self.last_observation,
            first_observation=self.first_observation,
            parent=parent,
            branch_turn=len(self.turns),
        )

    def _end(self, reason: str | None, truncated: bool) -> None:
        self.done = True
        self.truncated = truncated
        self.truncation_reason = reason

    def _end_on_generation_error(self, error: str) -> None:
        """End the episode before its next turn: the backend's reply cannot be a turn (``info["error"]`` says why)."""
        self.info = {**self.info, "error": error}
        self._end("generation_error", truncated=True)
        if self.turns:  # as at the context budget: the sequence ends with the model's last turn
            self.turns[-1].env_ids = []


@dataclass
class RolloutStats:
    """Timing of one call of ``run_episodes``."""

    seconds: float = 0.0
    generate_seconds: float = 0.0
    env_seconds: float = 0.0
    model_tokens: int = 0
    generate_calls: int = 0
    #: Seconds of each ``generate`` call, in order (the per-turn cost; see ``benchmarks/rollout_cache.py``).
    turn_generate_seconds: list[float] = field(default_factory=list)
    #: Seconds spent waiting for environment steps (the part of ``env_seconds`` generation did not hide).
    env_wait_seconds: float = 0.0
    #: Generation batches started while some environment steps were still running (``RolloutConfig.overlap``).
    overlapped_batches: int = 0


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Success rate, mean return, turns, invalid-action rate, tokens per turn and truncation rates of ``episodes``.

    Example:
        >>> episode_metrics([Episode(0, 1, 0, [1], [], won=True, done=True)])["success_rate"]
        1.0
    """
    n = max(1, len(episodes))
    turns = [t for ep in episodes for t in ep.turns]
    nt = max(1, len(turns))
    out = {
        "success_rate": sum(ep.won for ep in episodes) / n,
        "mean_return": sum(ep.total_return for ep in episodes) / n,
        "turns_per_episode": len(turns) / n,
        "invalid_action_rate": sum(t.parse_error is not None for t in turns) / nt,
        "tokens_per_turn": sum(len(t.action_ids) for t in turns) / nt,
        "turn_token_limit_rate": sum(t.hit_token_limit for t in turns) / nt,
        "truncation_rate": sum(ep.truncated for ep in episodes) / n,
    }
    for reason in ("step_limit", "max_turns", "context_budget", "crash", "generation_error"):
        out[f"truncated_{reason}"] = sum(ep.truncation_reason == reason for ep in episodes) / n
    return out


def state_key(observation: str) -> str:
    """The key GiGPO groups turns by: the observation text, whitespace-normalized."""
    return " ".join(observation.split())


__all__ = [
    "CONTEXT_MODES",
    "REPLY_MODES",
    "Episode",
    "RolloutConfig",
    "RolloutStats",
    "Turn",
    "episode_metrics",
    "state_key",
]
