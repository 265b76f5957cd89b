"""The client side shared by remote environments: a Gymnasium env whose TextEnv runs elsewhere.

:class:`ProxyTextEnv` presents the public surface of a :class:`~agentgym_envs.core.TextEnv`
(``task_ids``, ``family``, ``split``, ``parser``, ``instruction``, ``admissible_actions()``,
``expert_action()``, ...) over a *backend* (an OpenEnv session, a Ray actor), so policies,
``agentgym rollout``, the leaderboard and the trainer use a remote environment unchanged;
it is registered as a virtual subclass of ``TextEnv`` for :func:`~agentgym_envs.core.as_text_env`.

When the backend is lost in the middle of an episode (server killed, connection dropped,
actor died, no reply in time) the step ends the episode as truncated with
``info["truncation_reason"] == "crash"``, as a crashed local simulator does; the next
``reset`` connects a fresh backend.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable
from typing import Any, ClassVar

import gymnasium as gym

from agentgym_envs.core import TextEnv, TextSpace, crash_info, crash_outcome, render_text
from agentgym_envs.errors import AgentGymError, EnvironmentCrashedError
from agentgym_envs.parsing import ActionParser, ToolSpec


class RemoteEnvError(AgentGymError, RuntimeError):
    """The remote side refused a request for a reason that has no local error type."""


class BackendLost(Exception):
    """Internal: the backend is gone (connection dropped, actor died, no reply in time).

    ``reason`` is the episode's ``truncation_reason``: ``"crash"``, or ``"time_limit"`` for a backend that missed
    its deadline.
    """

    def __init__(self, message: str, reason: str = "crash"):
        super().__init__(message)
        self.reason = reason


def raise_remote_error(type_name: str, message: str) -> None:
    """Raise the local exception type that ``type_name`` names (agentgym errors, Gymnasium's, builtins)."""
    from agentgym_envs import errors

    candidates: dict[str, type[BaseException]] = {
        "ResetNeeded": gym.error.ResetNeeded,
        "UnregisteredEnv": gym.error.UnregisteredEnv,
        "NameNotFound": gym.error.NameNotFound,
        "ClosedEnvironmentError": gym.error.ClosedEnvironmentError,
        "ValueError": ValueError,
        "TypeError": TypeError,
        "KeyError": KeyError,
    }
    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, AgentGymError) and cls is not errors.MissingDependencyError:
        candidates[type_name] = cls
    exc_type = candidates.get(type_name)
    if exc_type is None:
        raise RemoteEnvError(f"{type_name}: {message}" if type_name else message)
    raise exc_type(message)


class ProxyTextEnv(gym.Env[str, str], abc.ABC):
    """A :class:`~agentgym_envs.core.TextEnv` look-alike whose environment lives in a backend.

    Subclasses implement ``_connect``, ``_disconnect``, ``_backend_describe``, ``_backend_reset``,
    ``_backend_step`` and ``_backend_query``; a lost backend raises :class:`BackendLost`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"]}

    def __init__(self, env_id: str | None, env_kwargs: dict[str, Any], render_mode: str | None = None):
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, not {render_mode!r}")
        self.render_mode = render_mode
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.observation_space = TextSpace(TextEnv.max_observation_chars)
        self.action_space = TextSpace(int(self.env_kwargs.get("max_action_chars", 4000)))
        self._description: dict[str, Any] | None = None
        self._parser: ActionParser | None = None
        self._connected = False
        self._done = True
        self._info: dict[str, Any] = {}
        self._last_observation = ""

    # ---- backend hooks -----------------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> None:
        """Open a backend (raise :class:`BackendLost` if it cannot be reached)."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close the backend and free what it holds (never raises)."""

    @abc.abstractmethod
    def _backend_describe(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _backend_reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]: ...

    @abc.abstractmethod
    def _backend_step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]: ...

    @abc.abstractmethod
    def _backend_query(self, name: str) -> Any: ...

    def _where(self) -> str:
        return type(self).__name__

    # ---- connection ---------------------------------------------------------------------
    def _ensure_connected(self) -> None:
        if self._connected:
            return
        try:
            self._connect()
        except BackendLost as exc:
            self._disconnect()
            raise EnvironmentCrashedError(f"cannot reach the environment at {self._where()}: {exc}") from exc
        except BaseException:
            self._disconnect()  # e.g. the backend refused the configuration: free what was made
            raise
        self._connected = True

    def _lose_backend(self) -> None:
        self._connected = False
        self._disconnect()

    def _call(self, fn: Any, *args: Any, retry: bool = False) -> Any:
        """Call a backend hook outside of a step; a lost backend is an error here.

        With ``retry`` (describe, reset) a backend lost since the last call (an idle connection
        that dropped, a server that restarted) is replaced by a fresh one and the call made again.
        """
        for attempt in range(2 if retry else 1):
            self._ensure_connected()
            try:
                return fn(*args)
            except BackendLost as exc:
                self._lose_backend()
                if attempt == (1 if retry else 0):
                    raise EnvironmentCrashedError(
                        f"the environment at {self._where()} stopped answering: {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    # ---- TextEnv surface ----------------------------------------------------------------
    @property
    def description(self) -> dict[str, Any]:
        if self._description is None:
            self._description = self._call(self._backend_describe, retry=True)
            self.env_id = self._description.get("env_id") or self.env_id
            parser = self._description["parser"]
            tools = tuple(ToolSpec(name, tuple(params), text) for name, params, text in parser["tools"])
            self._parser = ActionParser(parser["format"], tools, max_chars=parser["max_chars"])
            self.observation_space = TextSpace(int(self._description["max_observation_chars"]))
            self.action_space = TextSpace(int(parser["max_chars"]))
        return self._description

    @property
    def family(self) -> str:
        return self.description["family"]

    @property
    def split(self) -> str:
        return self.description["split"]

    @property
    def task_ids(self) -> list[Hashable]:
        return list(self.description["task_ids"])

    @property
    def max_steps(self) -> int:
        return int(self.description["max_steps"])

    @property
    def parser(self) -> ActionParser:
        self.description  # noqa: B018 - fills self._parser
        assert self._parser is not None
        return self._parser

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        return tuple(self.parser.tools.values())

    @property
    def task_id(self) -> Hashable | None:
        return self._info.get("task_id")

    @property
    def instruction(self) -> str:
        return self._info.get("instruction", "")

    def instructions_for_agent(self) -> str:
        """The task instruction plus how to format actions (what a model should be told)."""
        return f"{self.instruction}\n\n{self.parser.instructions()}"

    def admissible_actions(self) -> list[str]:
        """The valid commands now, computed by the backend."""
        return list(self._call(self._backend_query, "admissible_actions"))

    def expert_action(self) -> str | None:
        """The expert's next command now, computed by the backend."""
        return self._call(self._backend_query, "expert_action")

    # ---- Gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.description  # noqa: B018 - connects (or reconnects) and learns the spaces
        obs, info = self._call(self._backend_reset, seed, dict(options) if options else None, retry=True)
        self._done = False
        self._info = info
        self._last_observation = obs
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise gym.error.ResetNeeded("the episode is over: call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"an action is a str, not {type(action).__name__}")
        if not self._connected:
            return self._crashed(action, "the connection to the environment was closed")
        try:
            obs, reward, terminated, truncated, info = self._backend_step(action)
        except BackendLost as exc:
            self._lose_backend()
            return self._crashed(action, str(exc), exc.reason)
        except Exception:
            self._done = True  # the backend refused the step: the episode cannot go on
            raise
        self._done = terminated or truncated
        self._info = info
        self._last_observation = obs
        return obs, reward, terminated, truncated, info

    def _crashed(
        self, action: str, why: str, truncation: str = "crash"
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._done = True
        message = f"lost the environment at {self._where()}: {why}"
        info = crash_info(self._info, action, message, truncation)
        obs, reward, terminated, truncated, info = crash_outcome(info, message, truncation)
        self._info = info
        self._last_observation = obs
        return obs, reward, terminated, truncated, info

    def __deepcopy__(self, memo: dict[int, Any]) -> ProxyTextEnv:
        # A copy would share the connection / actor with the original and silently step both episodes.
        raise TypeError(f"a {type(self).__name__} cannot be copied: its environment lives in a backend")

    def render(self) -> str | None:
        return render_text(self.render_mode, self._last_observation)

    def close(self) -> None:
        self._connected = False
        self._done = True
        self._disconnect()
        super().close()


# Code that needs "an agentgym environment" asks ``isinstance(env.unwrapped, TextEnv)``
# (``as_text_env``); a proxy offers the same public surface, so it counts as one.
TextEnv.register(ProxyTextEnv)
