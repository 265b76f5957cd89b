"""Evaluation: policies, playing episodes, and the leaderboard.

==============================  ==============================================================
module                          what it holds
==============================  ==============================================================
:mod:`.policies`                the :class:`Policy` protocol; scripted (random, expert) and model
                                policies (Hugging Face / PEFT, vLLM, OpenAI-compatible endpoint);
                                :func:`make_policy` from a command-line name
:mod:`.episodes`                :func:`play_episode`, :func:`play_episodes`, :func:`summarize`,
                                transcripts (:func:`transcript_record`, :func:`transcript_turn`)
:mod:`.suite`                   leaderboard suites (:class:`Suite`, :func:`load_suite`)
:mod:`.results`                 episode records in ``episodes.jsonl``: their schema, resume and merge,
                                what identifies an episode (:func:`episode_settings`)
:mod:`.runner`                  :func:`run_leaderboard`: pending episodes, worker placement, play loops
:mod:`.report`                  statistics, ``leaderboard.md``/``.csv``, the chart, dataset export
:mod:`.models`                  deprecated alias of :mod:`agentgym_envs.models` (the SmolLM2 lookup)
==============================  ==============================================================

Nothing here imports the trainer (:mod:`trl_plugins`), torch or a simulator at import time.

Example:
    >>> from agentgym_envs.eval import make_policy, play_episodes, summarize
    >>> results = play_episodes("agentgym/TextCraft-v0", make_policy("expert"), episodes=2, progress=False)
    >>> summarize(results)["success_rate"]
    1.0
"""

from agentgym_envs.eval.episodes import (
    EpisodeResult,
    play_episode,
    play_episodes,
    summarize,
    transcript_record,
    transcript_turn,
    wilson_interval,
)
from agentgym_envs.eval.policies import (
    SCRIPTED_POLICIES,
    ExpertPolicy,
    HFPolicy,
    OpenAIPolicy,
    Policy,
    RandomPolicy,
    VLLMPolicy,
    default_policies,
    make_policy,
)
from agentgym_envs.eval.report import chart_figure, pass_at_k, summarize_results, write_hf_dataset, write_reports
from agentgym_envs.eval.results import (
    RESULTS_FILE,
    LoadedResults,
    episode_settings,
    load_results,
    read_results,
    record_problem,
    settings_key,
)
from agentgym_envs.eval.runner import run_leaderboard
from agentgym_envs.eval.suite import Suite, SuiteEntry, load_suite

__all__ = [
    "RESULTS_FILE",
    "SCRIPTED_POLICIES",
    "EpisodeResult",
    "ExpertPolicy",
    "HFPolicy",
    "LoadedResults",
    "OpenAIPolicy",
    "Policy",
    "RandomPolicy",
    "Suite",
    "SuiteEntry",
    "VLLMPolicy",
    "chart_figure",
    "default_policies",
    "episode_settings",
    "load_results",
    "load_suite",
    "make_policy",
    "pass_at_k",
    "play_episode",
    "play_episodes",
    "read_results",
    "record_problem",
    "run_leaderboard",
    "settings_key",
    "summarize",
    "summarize_results",
    "transcript_record",
    "transcript_turn",
    "wilson_interval",
    "write_hf_dataset",
    "write_reports",
]
