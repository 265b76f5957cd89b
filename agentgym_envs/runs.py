"""Run folders: the metrics log a training run writes (``metrics.jsonl``) and learning curves drawn from it.

A run folder (a trainer's ``output_dir``) holds ``metrics.jsonl``: one JSON object per logging step and per
evaluation, each with ``step`` (the optimizer step), ``epoch`` and ``time`` (Unix seconds) beside the logged
values (``reward``, ``entropy``, ``eval/success_rate``, ...).  The trainer writes it whatever ``report_to`` and
``save_strategy`` say (:class:`trl_plugins.run_log.MetricsLogCallback`); this module only reads it, so plotting
needs neither torch nor TRL, only matplotlib (the ``bench`` extra).

Example:
    >>> import json, pathlib, tempfile
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "grpo"
    >>> run.mkdir()
    >>> _ = (run / METRICS_FILE).write_text(json.dumps({"step": 1, "epoch": 0.5, "time": 0.0, "reward": 0.25}) + "\\n")
    >>> read_metrics(run)[0]["reward"]
    0.25
    >>> plot_runs([run], run / "curves.png").name        # doctest: +SKIP
    'curves.png'

Command line: ``agentgym plot RUN_DIR [RUN_DIR ...] [-o curves.png]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym_envs.errors import RunLogError

#: The metrics log of a run folder.
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class Panel:
    """One plot of the figure: a title and the metric keys drawn in it (the first present ones of each line).

    ``band`` names ``(low, high)`` keys drawn as a shaded interval around the first key.
    """

    title: str
    keys: tuple[str, ...]
    band: tuple[str, str] | None = None


#: What ``agentgym plot`` draws, one panel each, against the optimizer step.
PANELS: tuple[Panel, ...] = (
    Panel("reward (training episodes)", ("reward",)),
    Panel(
        "held-out success (95% interval)",
        ("eval/success_rate",),
        band=("eval/success_rate_ci_low", "eval/success_rate_ci_high"),
    ),
    Panel("entropy of model tokens", ("entropy",)),
    Panel("KL to the reference", ("kl",)),
    Panel("clip fraction", ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean")),
    Panel("invalid-action rate", ("env/invalid_action_rate", "eval/invalid_action_rate")),
)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` in file order (a torn last line, from a killed run, is skipped).

    Raises :class:`~agentgym_envs.errors.RunLogError` when the folder or its log is missing.

    Example:
        >>> read_metrics("/no/such/run")
        Traceback (most recent call last):
        ...
        agentgym_envs.errors.RunLogError: run folder '/no/such/run' does not exist
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunLogError(f"run folder {str(run_dir)!r} does not exist")
    path = folder / METRICS_FILE
    if not path.is_file():
        raise RunLogError(f"{str(run_dir)!r} has no {METRICS_FILE} (is it a training run's output_dir?)")
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short when the run was killed
        if isinstance(record, dict):
            records.append(record)
    return records


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of ``key`` over the records that hold a finite number for it.

    Example:
        >>> series([{"step": 0, "reward": 0.1}, {"step": 1}, {"step": 2, "reward": 0.3}], "reward")
        ([0.0, 2.0], [0.1, 0.3])
    """
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(record.get("step", len(steps))))
            values.append(float(value))
    return steps, values


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, panels: Sequence[Panel] = PANELS) -> Path:
    """Draw the learning curves of one or more runs (one colour per run, legend = folder name) into a PNG.

    Every run folder is read first, so a missing log fails before anything is drawn.  A panel whose
    metrics no run logged says so instead of staying blank.

    Example:
        >>> plot_runs(["runs/grpo", "runs/grpo-epo"], "curves.png")   # doctest: +SKIP
        PosixPath('curves.png')
    """
    if not run_dirs:
        raise RunLogError("give at least one run folder")
    runs = [(Path(d), read_metrics(d)) for d in run_dirs]
    try:
        import matplotlib
    except ImportError as exc:
        from agentgym_envs.errors import MissingDependencyError

        raise MissingDependencyError("plotting needs matplotlib: pip install 'agentgym-envs[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    styles = ("-", "--", ":")
    columns = 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    labels = _run_labels([d for d, _ in runs])
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn = False
        for i, ((_, records), label) in enumerate(zip(runs, labels, strict=True)):
            colour = colours[i % len(colours)]
            for k, key in enumerate(panel.keys):
                steps, values = series(records, key)
                if not steps:
                    continue
                name = label if len(panel.keys) == 1 else f"{label}: {key}"
                ax.plot(
                    steps,
                    values,
                    styles[k % len(styles)],
                    color=colour,
                    marker="." if len(steps) < 30 else None,
                    label=name,
                )
                drawn = True
                if panel.band is not None and k == 0:
                    _, low = series(records, panel.band[0])
                    _, high = series(records, panel.band[1])
                    if len(low) == len(high) == len(steps):
                        ax.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(panel.title, fontsize="medium")
        ax.ticklabel_format(axis="y", useOffset=False)  # small changes (entropy) read as values, not offsets
        ax.set_xlabel("step")
        if drawn:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _run_labels(folders: Sequence[Path]) -> list[str]:
    """Each run's folder name, or its last two path parts where two runs share a name."""
    names = [f.resolve().name for f in folders]
    return [
        "/".join(f.resolve().parts[-2:]) if names.count(name) > 1 else name
        for f, name in zip(folders, names, strict=True)
    ]


__all__ = ["METRICS_FILE", "PANELS", "Panel", "plot_runs", "read_metrics", "series"]
