"""Small real pieces for the trainer tests: a learnable TextEnv, the SmolLM2 tokenizer, tiny models."""

from __future__ import annotations

from collections.abc import Hashable

from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.wrappers import apply_reward_wrappers


class LetterEnv(TextEnv):
    """Say words containing the letter ``e``: one point per such turn, won at ``target`` points.

    Multi-turn (``max_steps`` turns), trivially learnable (a random model hits ``e`` often enough
    for a GRPO signal), and it goes through the real parsing and info contract.
    """

    family = "letter"
    default_max_steps = 3

    def __init__(self, target: int = 2, **kwargs):
        self.target = target
        super().__init__(**kwargs)

    def _task_splits(self) -> TaskSplits:
        return TaskSplits(train=list(range(8)), valid=[100], test=[200])

    def _start(self, task_id: Hashable) -> TaskStart:
        self._points = 0
        text = f"Game {task_id}. Say a word that contains the letter e."
        return TaskStart(observation=text, instruction="Say words with the letter e.", max_score=float(self.target))

    def _execute(self, command: str) -> Transition:
        hit = "e" in command.lower()
        self._points += int(hit)
        won = self._points >= self.target
        obs = ("Yes, that has an e." if hit else "No e in that.") + f" Points: {self._points}."
        return Transition(observation=obs, score=float(self._points), won=won)


def letter_env(reward: str = "dense", **kwargs) -> LetterEnv:
    return apply_reward_wrappers(LetterEnv(**kwargs), reward=reward)
