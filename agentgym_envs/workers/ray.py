"""``kind="ray"``: an agentgym environment in a Ray actor, as a Gymnasium env and as an environment worker.

:class:`RayEnv` places one environment (an :class:`~agentgym_envs.remote.host.EnvHost`) in a
Ray actor, on this machine or anywhere in a Ray cluster, and proxies ``reset`` / ``step`` to it,
so rollout code, the leaderboard and the trainer's ``env_factory`` use it unchanged.  This is how
verl, verl-agent and SkyRL spread environment workers; JVM simulators and browsers then use the
cluster's cores instead of the GPU machine's.

Semantics match a local environment that crashed: when the actor dies in the middle of an
episode (its process killed, its node lost) the step ends the episode as truncated with
``info["truncation_reason"] == "crash"``; when it does not answer within its deadline (``timeout_s``, by
default the family's :attr:`~agentgym_envs.registry.Family.step_timeout_s`) with ``"time_limit"``, the
actor killed at once (the step takes the deadline once, not once more waiting for a graceful close).  The
next ``reset`` starts a fresh actor.  ``close()`` closes the environment in the actor and kills the actor.

Ray is started on first use when it is not running (``address=None``: a local Ray;
``address="ray://head:10001"`` or ``"auto"``: an existing cluster, whose nodes need
``agentgym-envs`` and the family's extra installed).

Example:
    >>> import ray                                                           # doctest: +SKIP
    >>> ray.init(num_cpus=4, include_dashboard=False)                        # doctest: +SKIP
    >>> env = RayEnv("agentgym/BabyAI-GoToLocal-v0", split="test")           # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                        # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step("turn left")     # doctest: +SKIP
    >>> env.close()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from agentgym_envs.errors import MissingDependencyError
from agentgym_envs.remote.host import EnvHost
from agentgym_envs.remote.proxy import BackendLost, ProxyTextEnv
from agentgym_envs.workers.base import step_deadline_s
from agentgym_envs.workers.inprocess import InProcessWorker

#: How long an actor may take to start and build its environment (seconds; at least the call deadline).
START_TIMEOUT_S = 300.0


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray", ["ray"]) from exc
    return ray


class EnvActor:
    """The body of the Ray actor: one :class:`~agentgym_envs.remote.host.EnvHost`.

    The environment is built by :meth:`start` rather than in ``__init__`` so that a bad
    configuration comes back as its own exception instead of as a dead actor.
    """

    def __init__(self) -> None:
        self.host: EnvHost | None = None

    def start(self, env_id: str, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        self.host = EnvHost(env_id, env_kwargs)
        return self.host.describe()

    def _live(self) -> EnvHost:
        if self.host is None:
            raise RuntimeError("the worker has no environment: call start() first")
        return self.host

    def reset(self, seed: int | None, options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        return self._live().reset(seed=seed, options=options)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        return self._live().step(action)

    def query(self, name: str) -> Any:
        return self._live().query(name)

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        host, self.host = self.host, None
        if host is not None:
            host.close()


class RayEnv(ProxyTextEnv):
    """An agentgym environment running in a Ray actor, as a Gymnasium env.

    Args:
        env_id: a registered ``agentgym/`` id.
        address: the Ray cluster to join when Ray is not initialised yet (``None``: start a local Ray).
        actor_options: ``.options(...)`` of the actor, e.g. ``{"num_cpus": 1}`` to reserve a core per
            environment, ``{"resources": {"jvm": 1}}``, a ``runtime_env``.
        timeout_s: how long one call may take before the actor counts as lost (``None``: the family's
            :attr:`~agentgym_envs.registry.Family.step_timeout_s`; ``math.inf``: no limit).
        render_mode: ``"ansi"`` or ``"human"``, as locally.
        **env_kwargs: the environment's ``gym.make`` kwargs (``split``, ``reward``, ...).

    Example:
        >>> env = RayEnv("agentgym/TextCraft-v0", split="test", actor_options={"num_cpus": 1})  # doctest: +SKIP
        >>> env.reset(seed=0)[1]["family"]                                                     # doctest: +SKIP
        'textcraft'
    """

    def __init__(
        self,
        env_id: str,
        address: str | None = None,
        actor_options: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        from agentgym_envs.registry import registration

        ray = _ray()
        registration(env_id)  # an unknown id fails here, not in the actor
        deadline = step_deadline_s(env_id, timeout_s)
        super().__init__(env_id, env_kwargs, render_mode=render_mode)
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False)
        self.address = address
        self.actor_options = dict(actor_options or {})
        #: The deadline of one call in seconds (``None``: none).
        self.timeout_s = deadline
        self.actor: Any = None
        self._hung = False  # the actor missed a deadline: kill it without waiting for a graceful close
        # A call submitted ahead by :class:`RayWorker` (``(kind, args, ref)``), so that the actors of a
        # batch work in parallel while this process waits on the first of them.
        self._submitted: tuple[str, Any, Any] | None = None

    def submit(self, kind: str, *args: Any) -> None:
        """Start ``reset``/``step`` in the actor now; the next matching call collects its result.

        Only an already connected actor is used: a reset that must (re)start the actor does so when called.
        """
        if self.actor is not None and self._connected:
            method = self.actor.reset if kind == "reset" else self.actor.step
            self._submitted = (kind, args, method.remote(*args))

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether the submitted call has finished (waits up to ``timeout`` seconds); ``True`` if none was submitted."""
        if self._submitted is None:
            return True
        ready, _ = _ray().wait([self._submitted[2]], timeout=max(0.0, timeout))
        return bool(ready)

    def _take_submitted(self, kind: str, *args: Any) -> Any:
        submitted, self._submitted = self._submitted, None
        if submitted is not None and submitted[0] == kind and submitted[1] == args:
            return submitted[2]
        method = self.actor.reset if kind == "reset" else self.actor.step
        return method.remote(*args)

    def _where(self) -> str:
        return "a Ray actor"

    def worker_pid(self) -> int:
        """The process id of the actor holding the environment (starts the actor if needed)."""
        self._ensure_connected()
        return int(self._get(self.actor.pid.remote()))

    # ---- backend -------------------------------------------------------------------------------
    def _get(self, ref: Any, timeout_s: float | None = -1.0) -> Any:
        """``ray.get`` within ``timeout_s`` (default: the call deadline, :attr:`timeout_s`)."""
        ray = _ray()
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        timeout_s = self.timeout_s if timeout_s == -1.0 else timeout_s
        try:
            return ray.get(ref, timeout=timeout_s)
        except RayActorError as exc:
            raise BackendLost(
                f"the actor died: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        except GetTimeoutError as exc:
            self._hung = True
            raise BackendLost(f"TimeoutError: no answer within {timeout_s:g} s", "time_limit") from exc
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def _connect(self) -> None:
        ray = _ray()
        actor_class = ray.remote(EnvActor)
        options = {"max_restarts": 0, **self.actor_options}
        self.actor = actor_class.options(**options).remote()
        # Like a worker process's, an actor's start (scheduling it, importing, building the environment) is not
        # held to the call deadline; it gets the longer of it and START_TIMEOUT_S.
        start_s = None if self.timeout_s is None else max(self.timeout_s, START_TIMEOUT_S)
        self._description_at_start = self._get(self.actor.start.remote(self.env_id, self.env_kwargs), start_s)

    def _disconnect(self) -> None:
        self._submitted = None
        actor, self.actor = self.actor, None
        hung, self._hung = self._hung, False
        if actor is None:
            return
        ray = _ray()
        if not hung:  # a hung actor would only make the caller wait its deadline a second time
            try:
                # Let the environment close its simulator / browser, then make sure the process is gone.
                ray.get(actor.close.remote(), timeout=min(self.timeout_s or 30.0, 30.0))
            except Exception:  # noqa: BLE001 - the actor may be dead already
                pass
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001
            pass

    def _backend_describe(self) -> dict[str, Any]:
        return self._description_at_start

    def _backend_reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        return self._get(self._take_submitted("reset", seed, options))

    def _backend_step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        return self._get(self._take_submitted("step", action))

    def _backend_query(self, name: str) -> Any:
        return self._get(self.actor.query.remote(name))


class RayWorker(InProcessWorker):
    """A :class:`RayEnv` behind the rollout engine's :class:`~agentgym_envs.workers.base.EnvWorker` interface.

    ``reset_async``/``step_async`` submit the call to the actor at once, so all environments of a
    batch work in parallel (on the cluster's cores) while ``*_wait`` collects the results in order.
    Crash semantics are :class:`RayEnv`'s: a dead actor ends the episode as truncated with
    ``truncation_reason="crash"``, one silent past its deadline with ``"time_limit"``, and the next reset starts a
    fresh actor.

    Example:
        >>> from agentgym_envs.workers import make_workers                                  # doctest: +SKIP
        >>> workers = make_workers("agentgym/TextCraft-v0", 4, kind="ray", split="test")   # doctest: +SKIP
    """

    #: The actor steps between ``step_async`` and ``step_wait``.
    steps_in_background = True

    def __init__(self, env: RayEnv):
        super().__init__(env)
        self.ray_env = env

    def reset_async(self, seed: int | None = None, options: dict | None = None) -> None:
        super().reset_async(seed=seed, options=options)
        self.ray_env.submit("reset", seed, dict(options) if options else None)

    def step_async(self, action: str) -> None:
        super().step_async(action)
        self.ray_env.submit("step", action)

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether the submitted call's result is here (waits up to ``timeout`` seconds); ``True`` if none was submitted."""
        return self.ray_env.poll(timeout)


def make_ray_workers(
    env_id: str,
    n: int,
    timeout_s: float | None = None,
    address: str | None = None,
    actor_options: Mapping[str, Any] | None = None,
    **env_kwargs: Any,
) -> list[RayWorker]:
    """``n`` environments of ``env_id``, each in its own Ray actor, as engine workers.

    Example:
        >>> workers = make_ray_workers("agentgym/BabyAI-GoToLocal-v0", 2, split="test")  # doctest: +SKIP
    """
    return [
        RayWorker(RayEnv(env_id, address=address, actor_options=actor_options, timeout_s=timeout_s, **env_kwargs))
        for _ in range(n)
    ]
