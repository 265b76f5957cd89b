"""The one rollout engine: batched multi-turn episodes through a generation backend and environment workers.

==================  =====================================================================================
module              what it holds
==================  =====================================================================================
:mod:`.chat`        :class:`ChatFormat` (the chat template cut into token pieces), :func:`stop_ids_for`
:mod:`.episode`     :class:`RolloutConfig`, :class:`Turn`, :class:`Episode`, :class:`RolloutStats`
:mod:`.engine`      :func:`run_episodes`, :class:`CallableBackend`
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
from agentgym_envs.engine.engine import CallableBackend, GenerateFn, as_backend, as_worker, run_episodes
from agentgym_envs.engine.episode import CONTEXT_MODES, Episode, RolloutConfig, RolloutStats, Turn, state_key

__all__ = [
    "CONTEXT_MODES",
    "CallableBackend",
    "ChatFormat",
    "Episode",
    "GenerateFn",
    "RolloutConfig",
    "RolloutStats",
    "Turn",
    "as_backend",
    "as_worker",
    "run_episodes",
    "state_key",
    "stop_ids_for",
]
