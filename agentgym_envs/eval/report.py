"""Leaderboard reports: statistics per environment and family, the tables, the chart and the dataset export.

:func:`summarize_results` turns episode records (:mod:`agentgym_envs.eval.results`) into one row per
(policy, environment) and per (policy, family); :func:`write_reports` writes ``leaderboard.md``,
``leaderboard.csv`` and ``leaderboard.png``; :func:`write_hf_dataset` saves the records with their
transcripts as a Hugging Face dataset.  matplotlib and ``datasets`` are imported only when they are used.

Example:
    >>> from pathlib import Path
    >>> from agentgym_envs.eval.report import summarize_results, write_reports
    >>> from agentgym_envs.eval.results import read_results
    >>> rows = summarize_results(read_results([Path("results/leaderboard/episodes.jsonl")]))  # doctest: +SKIP
    >>> write_reports(rows, Path("results/leaderboard"), "suite 'quick'")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym_envs.errors import MissingDependencyError
from agentgym_envs.eval.episodes import wilson_interval
from agentgym_envs.eval.results import ENV_SETTINGS, RUN_SETTINGS

# --- Statistics ----------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples with ``c`` successes (Chen et al., 2021).

    Example:
        >>> pass_at_k(4, 1, 2)
        0.5
    """
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize_results(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (policy, environment), and per (policy, family) where a family has several environments.

    Sorted by level, name, then policy.  When a policy's episodes were played with different settings
    (merged runs, or a rerun with another seed into the same folder), each set of settings gets its
    own row, labelled with what differs (:func:`policy_labels`).

    Example:
        >>> summarize_results([])
        []
    """
    labels = policy_labels(records)
    by_env: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r, label in zip(records, labels, strict=True):
        by_env[(label, r["env_id"], r["family"])].append(r)
    rows = [_row(policy, env_id, family, "environment", group) for (policy, env_id, family), group in by_env.items()]
    by_family: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    envs_of_family: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (policy, env_id, family), group in by_env.items():
        by_family[(policy, family)].extend(group)
        envs_of_family[(policy, family)].add(env_id)
    rows += [
        _row(policy, f"{family} (family)", family, "family", group)
        for (policy, family), group in by_family.items()
        if len(envs_of_family[(policy, family)]) > 1  # a one-environment family would repeat its row
    ]
    return sorted(rows, key=lambda row: (row["level"] != "environment", row["environment"], row["policy"]))


def policy_labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """The policy name of each record, plus the settings that differ among that policy's records.

    Example:
        >>> recs = [{"policy": "smollm2", "env_id": "e", "settings": {"seed": s, "temperature": 0.7}} for s in (0, 5)]
        >>> policy_labels(recs)
        ['smollm2 [seed=0]', 'smollm2 [seed=5]']
    """

    def value(record: dict[str, Any], name: str) -> str:
        settings = record.get("settings")
        if not isinstance(settings, dict):
            return "?"
        return json.dumps(settings.get(name), sort_keys=True, separators=(",", ":"))

    varying_run: dict[str, list[str]] = {}
    varying_env: dict[tuple[str, str], list[str]] = {}
    for policy in {r["policy"] for r in records}:
        mine = [r for r in records if r["policy"] == policy]
        varying_run[policy] = [n for n in RUN_SETTINGS if len({value(r, n) for r in mine}) > 1]
        for env_id in {r["env_id"] for r in mine}:
            here = [r for r in mine if r["env_id"] == env_id]
            varying_env[(policy, env_id)] = [n for n in ENV_SETTINGS if len({value(r, n) for r in here}) > 1]
    labels = []
    for r in records:
        names = varying_run[r["policy"]] + varying_env[(r["policy"], r["env_id"])]
        parts = [f"{n}={value(r, n).strip(chr(34))}" for n in names]
        labels.append(f"{r['policy']} [{', '.join(parts)}]" if parts else str(r["policy"]))
    return labels


def _row(policy: str, name: str, family: str, level: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(group)
    wins = sum(bool(r["won"]) for r in group)
    low, high = wilson_interval(wins, n)
    steps = sum(r["steps"] for r in group)
    per_task: dict[str, list[bool]] = defaultdict(list)
    for r in group:
        per_task[f"{r['env_id']}|{r['task_id']}"].append(bool(r["won"]))
    k = min(len(v) for v in per_task.values())
    pass_k = sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)
    return {
        "level": level,
        "environment": name,
        "family": family,
        "policy": policy,
        "episodes": n,
        "tasks": len(per_task),
        "success_rate": wins / n,
        "success_ci_low": low,
        "success_ci_high": high,
        "mean_return": sum(r["return"] for r in group) / n,
        "mean_steps": steps / n,
        "invalid_action_rate": sum(r["invalid_actions"] for r in group) / max(1, steps),
        "k": k,
        "pass_at_k": pass_k,
        "wall_seconds": sum(r["seconds"] for r in group),
    }


# --- Tables --------------------------------------------------------------------------------------------------

COLUMNS = (
    ("environment", "environment"),
    ("policy", "policy"),
    ("episodes", "episodes"),
    ("success_rate", "success"),
    ("success_ci", "95% CI"),
    ("mean_return", "return"),
    ("mean_steps", "steps"),
    ("invalid_action_rate", "invalid actions"),
    ("pass_at_k", "pass@k"),
    ("wall_seconds", "wall s"),
)


def write_reports(
    rows: Sequence[dict[str, Any]], out: Path, what: str = "", notes: Sequence[str] = ()
) -> dict[str, Path]:
    """Write ``leaderboard.md`` (with ``notes`` under the table), ``leaderboard.csv`` and ``leaderboard.png``.

    Example:
        >>> write_reports(rows, Path("results/leaderboard"), "suite 'quick'")["markdown"]  # doctest: +SKIP
        PosixPath('results/leaderboard/leaderboard.md')
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv", "chart": out / "leaderboard.png"}
    _write_csv(rows, paths["csv"])
    paths["markdown"].write_text("\n".join(_markdown_lines(rows, what, notes)) + "\n")
    _chart([r for r in rows if r["level"] == "environment"], paths["chart"], what)
    return paths


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        fields = list(rows[0]) if rows else [c for c, _ in COLUMNS]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _markdown_lines(rows: Sequence[dict[str, Any]], what: str, notes: Sequence[str] = ()) -> list[str]:
    """The lines of ``leaderboard.md``: a heading, what the columns mean, the table and the notes.

    Example:
        >>> _markdown_lines([], "suite 'quick'")[0]
        '# Leaderboard'
    """
    lines = [
        "# Leaderboard",
        "",
        f"Held-out test tasks ({what}). Success = the task was completed; 95% CI = Wilson interval over episodes; "
        "return = episode return under the environment's reward; steps = actions per episode; invalid actions = "
        "share of actions that could not be parsed; pass@k = chance that at least one of k samples of a task "
        "succeeds (k = samples per task); wall s = total seconds.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(row, key) for key, _ in COLUMNS) + " |" for row in rows]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return lines


def _cell(row: dict[str, Any], key: str) -> str:
    """One cell of the markdown table."""
    if key == "success_ci":
        return f"[{row['success_ci_low']:.2f}, {row['success_ci_high']:.2f}]"
    if key == "pass_at_k":
        return f"{row['pass_at_k']:.2f} (k={row['k']})"
    if key in ("success_rate", "invalid_action_rate"):
        return f"{row[key]:.2f}"
    if isinstance(row[key], float):
        return f"{row[key]:.2f}" if key != "wall_seconds" else f"{row[key]:.1f}"
    return f"**{row[key]}**" if row["level"] == "family" and key == "environment" else str(row[key])


# --- The chart -----------------------------------------------------------------------------------------------


def _chart(rows: Sequence[dict[str, Any]], path: Path, what: str) -> None:
    import matplotlib.pyplot as plt

    fig = chart_figure(rows, what)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def chart_figure(rows: Sequence[dict[str, Any]], what: str) -> Any:
    """The chart (a matplotlib figure): success per environment and policy, each policy in its own colour.

    Every bar starts with a short marker at 0 and has its value written at its end, so a 0 % bar
    is still seen, and the error bars (95 % Wilson interval) take the colour of their policy.

    Example:
        >>> chart_figure([r for r in rows if r["level"] == "environment"], "suite 'quick'")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["environment"] for r in rows})
    policies = sorted({r["policy"] for r in rows})
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.3 * max(1, len(envs)) * max(1, len(policies))))
    height = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        colour = colours[i % len(colours)]
        ys, xs, lo, hi = [], [], [], []
        for j, env in enumerate(envs):
            match = [r for r in rows if r["environment"] == env and r["policy"] == policy]
            if not match:
                continue
            r = match[0]
            ys.append(j + i * height)
            xs.append(r["success_rate"])
            lo.append(max(0.0, r["success_rate"] - r["success_ci_low"]))
            hi.append(max(0.0, r["success_ci_high"] - r["success_rate"]))
        ax.barh(
            ys,
            xs,
            height=height,
            color=colour,
            edgecolor=colour,
            linewidth=1.0,
            label=policy,
            xerr=[lo, hi],
            capsize=2,
            error_kw={"ecolor": colour, "alpha": 0.8},
        )
        for y, x in zip(ys, xs, strict=True):
            ax.plot([0, 0], [y - height / 2, y + height / 2], color=colour, linewidth=3)  # a 0 % bar's marker
            ax.text(x + 0.01, y, f"{x:.0%}", va="center", ha="left", fontsize="x-small", color=colour)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(envs))])
    ax.set_yticklabels([e.removeprefix("agentgym/") for e in envs])
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("success rate on held-out test tasks (95% Wilson interval)")
    ax.set_title(f"agentgym leaderboard: {what}")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


# --- Dataset export ------------------------------------------------------------------------------------------


def write_hf_dataset(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Save episode records (with transcripts) as a Hugging Face dataset (``datasets.Dataset.save_to_disk``).

    Nested values whose shape differs between environments (``settings``, ``task_id``) are stored
    as JSON text, so every row has one schema; ``transcript`` keeps its structure
    (``instruction``, ``first_observation``, ``turns`` of ``text``, ``action``, ``parse_error``,
    ``reward``, ``observation``).  Load it with ``datasets.load_from_disk(path)``.  Needs the
    ``datasets`` package (``pip install 'agentgym-envs[train]'``).

    Example:
        >>> write_hf_dataset(read_results([Path("results/leaderboard/episodes.jsonl")]), "results/hf")  # doctest: +SKIP
    """
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependencyError("leaderboard", "train", ["datasets"], what="--hf-dataset") from exc
    empty = {"instruction": "", "first_observation": "", "turns": []}
    rows = [
        {
            **{k: v for k, v in r.items() if k not in ("settings", "task_id", "transcript")},
            "task_id": json.dumps(r.get("task_id"), default=str),
            "settings": json.dumps(r.get("settings"), sort_keys=True, default=str),
            "settings_key": r.get("settings_key") or "",
            "transcript": r.get("transcript") or empty,
        }
        for r in records
    ]
    target = Path(path)
    datasets.Dataset.from_list(rows).save_to_disk(str(target))
    return target
