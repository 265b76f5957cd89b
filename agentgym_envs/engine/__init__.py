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
==================  =====================================================================================

The environments step through workers (:mod:`agentgym_envs.workers`: in this process, in worker processes
or in Ray actors).  The trainer (``trl_plugins``) and the leaderboard (:mod:`agentgym_envs.eval`) both run
it; importing it does not import torch.

Example:
    >>> from agentgym_envs.engine import RolloutConfig
    >>> RolloutConfig(max_turns=3, reply="text", first_line_only=True).reply
    'text'
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

__all__ = [
    "CONTEXT_MODES",
    "CallableBackend",
    "ChatFormat",
    "Episode",
    "GenerateFn",
    "RolloutConfig",
    "RolloutStats",
    "Turn",
    "apply_action",
    "as_backend",
    "as_worker",
    "check_stop_ids",
    "episode_metrics",
    "fork_env",
    "fork_episode",
    "new_run_id",
    "next_context",
    "record_turn",
    "reply_of",
    "run_episodes",
    "start_episodes",
    "state_key",
    "stop_ids_for",
]
