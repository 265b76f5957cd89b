"""``kind="inprocess"``: an environment in this process behind the :class:`~agentgym_envs.workers.base.EnvWorker` interface.

Fastest for cheap pure-Python families (TextCraft, TextWorld, BabyAI): no pickling, no context switch.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> worker = InProcessWorker(gym.make("agentgym/TextCraft-v0", split="test"))
    >>> worker.reset_async(seed=0); obs, info = worker.reset_wait()
    >>> worker.close()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from agentgym_envs.workers.base import (
    CALLER_ERRORS,
    ResetResult,
    StepResult,
    _call_path,
    _check_action,
    _crash_reset,
    _crash_step,
    error_text,
)


class InProcessWorker:
    """An environment in this process behind the :class:`EnvWorker` interface.

    The call runs in ``reset_wait``/``step_wait``.  Any exception of the environment (other than
    :data:`CALLER_ERRORS`) becomes a truncated ``"crash"`` outcome; the next reset first replaces the
    environment with ``rebuild()`` when given (the crashed one may be in any state).

    Args:
        env: the environment (a ``gym.make`` result).
        rebuild: builds a fresh environment after a crash; without it the same one is reset again.

    Example:
        >>> import gymnasium as gym, agentgym_envs
        >>> worker = InProcessWorker(gym.make("agentgym/TextCraft-v0", split="test"))
        >>> worker.reset_async(seed=0); obs, info = worker.reset_wait()
        >>> worker.step_async("inventory"); obs, reward, terminated, truncated, info = worker.step_wait()
        >>> worker.close()
    """

    #: The environment steps inside ``step_wait``, in this process: nothing to overlap generation with.
    steps_in_background = False

    def __init__(self, env: gym.Env, rebuild: Callable[[], gym.Env] | None = None):
        self.env = env
        self._rebuild = rebuild
        self._pending: tuple[str, Any] | None = None
        self._last_info: dict[str, Any] | None = None
        self._crashed = False  # the episode ended in a crash: reset before stepping
        self._broken = False  # the environment raised: rebuild it at the next reset
        self._closed = False

    def reset_async(self, seed: int | None = None, options: dict | None = None) -> None:
        self._check_idle()
        self._pending = ("reset", (seed, options))

    def reset_wait(self) -> ResetResult:
        seed, options = self._take("reset")
        try:
            if self._broken and self._rebuild is not None:
                with contextlib.suppress(Exception):
                    self.env.close()
                self.env = self._rebuild()
            obs, info = self.env.reset(seed=seed, options=options)
        except CALLER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - an environment failure is an outcome, not an exception
            self._broken = self._crashed = True
            return _crash_reset(error_text(exc))
        self._broken = self._crashed = False
        self._last_info = info
        return obs, info

    def step_async(self, action: str) -> None:
        self._check_idle()
        _check_action(action)
        if self._crashed:
            raise gym.error.ResetNeeded("the episode ended in a crash: call reset_async() before step_async()")
        self._pending = ("step", action)

    def step_wait(self) -> StepResult:
        action = self._take("step")
        try:
            result = self.env.step(action)
        except CALLER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - an environment failure is an outcome, not an exception
            self._broken = self._crashed = True
            return _crash_step(self._last_info, action, error_text(exc))
        self._last_info = result[4]
        return result

    def poll(self, timeout: float = 0.0) -> bool:
        """Always ``True``: the pending call runs inside ``*_wait``, in this process."""
        return True

    def call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        """``env.unwrapped.<path>(*args, **kwargs)`` (or the attribute, if not callable); exceptions propagate.

        Example: ``worker.call("parser.instructions")``, ``worker.call("task_ids")``.
        """
        self._check_idle()
        return _call_path(self.env, path, args, kwargs)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending = None
            self.env.close()

    def _check_idle(self) -> None:
        if self._closed:
            raise RuntimeError("this worker is closed")
        if self._pending is not None:
            raise RuntimeError(f"a {self._pending[0]} is pending: call {self._pending[0]}_wait() first")

    def _take(self, kind: str) -> Any:
        if self._pending is None or self._pending[0] != kind:
            raise RuntimeError(f"no {kind} pending: call {kind}_async() first")
        _, args = self._pending
        self._pending = None
        return args
