"""Evaluate a model (a training checkpoint, a local model, a served one) on held-out tasks of one environment.

This is ``agentgym rollout ENV --policy hf:PATH`` (and ``vllm:PATH``, ``openai:URL#MODEL``, ``smollm2``): a
one-environment leaderboard suite, played by :func:`agentgym_envs.eval.leaderboard.run_leaderboard`, so the
episodes go through the same rollout engine and are written as the same records (``episodes.jsonl`` with
transcripts, ``leaderboard.md``/``.csv``/``.png``) as the leaderboard's; an ``out`` folder is resumed.

Example:
    >>> summary, records = rollout_model("agentgym/TextCraft-v0", "hf:runs/tc/checkpoint-100", tasks=50,
    ...                                  samples=2, temperature=0.0, out="results/tc-100")   # doctest: +SKIP
    >>> summary["success_rate"], summary["success_ci_low"], summary["success_ci_high"]     # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from agentgym_envs.errors import SuiteError
from agentgym_envs.eval import leaderboard
from agentgym_envs.eval.policies import SCRIPTED_POLICIES, check_policy_spec


def is_model_policy(spec: str) -> bool:
    """Whether a ``--policy`` name is a model (everything but the scripted ``random`` and ``expert``).

    Example:
        >>> is_model_policy("expert"), is_model_policy("hf:runs/x/checkpoint-10")
        (False, True)
    """
    return spec not in SCRIPTED_POLICIES


def rollout_model(
    env_id: str,
    spec: str,
    tasks: int,
    samples: int = 1,
    temperature: float = 0.7,
    max_new_tokens: int = 48,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Play ``samples`` episodes of each of the first ``tasks`` tasks of ``env_id`` with the model ``spec``.

    ``env_kwargs`` are the environment's constructor keywords (``split`` defaults to ``"test"``). The
    episodes are written to ``out`` (resumed if it holds some with the same settings) or, without ``out``,
    to a temporary folder removed afterwards.  Returns the summary row (success rate with its 95 % Wilson
    interval, mean return, steps, invalid-action rate, pass@k, ...) and the episode records.
    A model folder that does not exist raises :class:`~agentgym_envs.errors.PolicyError` before anything runs.
    """
    check_policy_spec(spec)
    entry = leaderboard.SuiteEntry(env_id, tasks=tasks, kwargs=dict(env_kwargs or {}))
    suite = leaderboard.Suite(f"rollout {env_id.removeprefix('agentgym/')}", (entry,), samples=samples)
    key = leaderboard.settings_key(leaderboard.episode_settings(spec, entry, seed, temperature, max_new_tokens))
    with tempfile.TemporaryDirectory(prefix="agentgym-rollout-") as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        leaderboard.run_leaderboard(
            suite, [spec], folder, seed=seed, progress=progress, temperature=temperature, max_new_tokens=max_new_tokens
        )
        # This call's episodes only: an ``out`` folder may also hold other settings, tasks or samples.
        records = [
            r
            for r in leaderboard.read_results([folder / leaderboard.RESULTS_FILE])
            if r["policy"] == spec
            and r["env_id"] == env_id
            and r.get("settings_key") == key
            and r["task_index"] < tasks
            and r["sample"] < samples
        ]
    if not records:
        raise SuiteError(f"no episodes of {spec} on {env_id} were played")
    (summary,) = [row for row in leaderboard.summarize_results(records) if row["level"] == "environment"]
    return summary, records


__all__ = ["is_model_policy", "rollout_model"]
