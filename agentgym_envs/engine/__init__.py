"""The one rollout engine: batched multi-turn episodes through a generation backend and environment workers.

==================  =====================================================================================
module              what it holds
==================  =====================================================================================
:mod:`.chat`        :class:`ChatFormat` (the chat template cut into token pieces), :func:`stop_ids_for`
:mod:`.episode`     :class:`RolloutConfig`, :class:`Turn`, :class:`Episode`, :class:`RolloutStats`,
                    :func:`episode_metrics`
:mod:`.loop`        :func:`run_episodes`, :class:`CallableBackend`; the steps a loop of its own is built from
                    (:func:`start_episodes`, :func:`next_context`, :func:`apply_action`, :func:`new_run_id`) and
                    the branching seam :func:`fork_episode` (an episode and its environment's state, forked at a turn)
:mod:`.workers`     :class:`EnvWorker`, :class:`InProcessWorker`, :class:`ProcessWorker`, :func:`make_workers`
==================  =====================================================================================

The trainer (``trl_plugins``) and the leaderboard (:mod:`agentgym_envs.eval`) both run it; importing it
does not import torch.

Example:
    >>> from agentgym_envs.engine import RolloutConfig, make_workers
    >>> RolloutConfig(max_turns=3, reply="text", first_line_only=True).reply
    'text'
    >>> with make_workers("agentgym/TextCraft-v0", 2, split="test") as workers:
    ...     len(workers)
    2
"""

from agentgym_envs.engine.chat import ChatFormat, stop_ids_for
from agentgym_envs.engine.episode import (
    CONTEXT_MODES,
    Episode,
    RolloutConfig,
    RolloutStats,
    Turn,
    episode_metrics,
    state_key,
)
from agentgym_envs.engine.loop import (
    CallableBackend,
    GenerateFn,
    apply_action,
    as_backend,
    as_worker,
    check_stop_ids,
    fork_env,
    fork_episode,
    new_run_id,
    next_context,
    record_turn,
    reply_of,
    run_episodes,
    start_episodes,
)
from agentgym_envs.engine.workers import (
    CALLER_ERRORS,
    PROCESS_FAMILIES,
    WORKER_KINDS,
    EnvWorker,
    InProcessWorker,
    ProcessWorker,
    WorkerGroup,
    crash_info,
    default_worker_kind,
    make_workers,
    reset_many,
    step_many,
)

__all__ = [
    "CALLER_ERRORS",
    "CONTEXT_MODES",
    "PROCESS_FAMILIES",
    "WORKER_KINDS",
    "CallableBackend",
    "ChatFormat",
    "EnvWorker",
    "Episode",
    "GenerateFn",
    "InProcessWorker",
    "ProcessWorker",
    "RolloutConfig",
    "RolloutStats",
    "Turn",
    "WorkerGroup",
    "apply_action",
    "as_backend",
    "as_worker",
    "check_stop_ids",
    "crash_info",
    "default_worker_kind",
    "episode_metrics",
    "fork_env",
    "fork_episode",
    "make_workers",
    "new_run_id",
    "next_context",
    "record_turn",
    "reply_of",
    "reset_many",
    "run_episodes",
    "start_episodes",
    "state_key",
    "step_many",
    "stop_ids_for",
]
