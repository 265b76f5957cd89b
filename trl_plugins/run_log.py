"""Run logs: every run's metrics in ``output_dir/metrics.jsonl``, and a clear error for a logger that is not installed.

:class:`MetricsLogCallback` is added by the trainers to every run, whatever ``report_to`` and
``save_strategy`` say: each logging step and each evaluation appends one JSON record (``step``, ``epoch``,
``time`` and the logged values) that ``agentgym plot`` (:mod:`agentgym_envs.runs`) draws.
:func:`check_loggers` turns ``report_to`` naming an uninstalled logger into one
:class:`~trl_plugins.errors.TrainerConfigError` line that names what to install.

Example:
    >>> from trl_plugins import AgentGRPOConfig
    >>> check_loggers(["tensorboard"])       # installed with the train extra
    >>> missing_logger_message("wandb")
    "report_to names 'wandb', which is not installed: pip install 'agentgym-envs[wandb]'"
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from agentgym_envs.runs import METRICS_FILE
from trl_plugins.errors import TrainerConfigError

#: The packages each ``report_to`` logger imports (any one of them will do), and the pip requirement to name.
LOGGERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "agentgym-envs[train]"),
    "wandb": (("wandb",), "agentgym-envs[wandb]"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "trackio": (("trackio",), "trackio"),
    "clearml": (("clearml",), "clearml"),
    "neptune": (("neptune",), "neptune"),
    "dvclive": (("dvclive",), "dvclive"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "dagshub": (("dagshub", "mlflow"), "dagshub mlflow"),
    "flyte": (("flytekit",), "flytekit"),
    "swanlab": (("swanlab",), "swanlab"),
    "azure_ml": (("azureml",), "azureml-core"),
}


def missing_logger_message(name: str) -> str:
    """The one-line message for ``report_to`` naming the uninstalled logger ``name``."""
    _, requirement = LOGGERS[name]
    return f"report_to names {name!r}, which is not installed: pip install '{requirement}'"


def check_loggers(report_to: Any) -> None:
    """Raise :class:`~trl_plugins.errors.TrainerConfigError` if ``report_to`` names a logger that is not installed.

    ``"all"`` and ``"none"`` pass (``"all"`` means the installed ones); names transformers does not know are
    left to its own error.

    Example:
        >>> check_loggers("none")
        >>> check_loggers(["tensorboard", "no-such-logger"])     # transformers reports unknown names
    """
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in LOGGERS and not any(importlib.util.find_spec(p) for p in LOGGERS[name][0]):
            raise TrainerConfigError(missing_logger_message(name))


class MetricsLogCallback(TrainerCallback):
    """Appends every ``log`` call of the trainer to ``output_dir/metrics.jsonl`` as one JSON record.

    A record holds ``step`` (``state.global_step``), ``epoch``, ``time`` (Unix seconds) and the logged values;
    evaluations are records too (their keys start with ``eval/``).  A new run (global step 0) starts the file
    afresh; a resumed run keeps the records up to its checkpoint's step and appends after them, so a resumed
    run's log reads as one run.  Only the main process writes.

    Example:
        >>> trainer.add_callback(MetricsLogCallback())  # the trainers add it themselves  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._prepared: Path | None = None

    def _path(self, args: Any, state: Any) -> Path:
        path = Path(args.output_dir) / METRICS_FILE
        if self._prepared != path:  # first event of this run: start the log, or cut it back to the resumed step
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if state.global_step > 0 and path.is_file():
                for line in path.read_text().splitlines():
                    try:
                        if int(json.loads(line).get("step", 0)) <= state.global_step:
                            kept.append(line)
                    except (ValueError, AttributeError, TypeError):
                        continue
            path.write_text("".join(line + "\n" for line in kept))
            self._prepared = path
        return path

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._path(args, state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}
        record.update({k: _plain(v) for k, v in logs.items() if k not in record})
        with self._path(args, state).open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _plain(value: Any) -> Any:
    """A JSON-ready value (tensors and numpy scalars become numbers; anything else unknown, text)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, RuntimeError):
            pass
    return str(value)


__all__ = ["LOGGERS", "MetricsLogCallback", "check_loggers", "missing_logger_message"]
