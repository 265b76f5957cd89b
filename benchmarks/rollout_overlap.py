"""Generation overlapped with environment steps: the rollout engine with and without ``RolloutConfig.overlap``.

A batch of episodes of a slow family (ScienceWorld by default) plays in worker processes with a model through
:class:`~agentgym_envs.generation.transformers.TransformersBackend` (greedy, so both schedules play the same
episodes): SmolLM2-135M-Instruct, or ``--model tiny`` (a tiny random Llama whose generation is about as fast as
an environment step, as a GPU's is).  ``overlap off``: the batch moves in lockstep (generate, step all, wait for
all).  ``overlap on``: the episodes whose step has finished generate while slower steps keep running (a step
still running after the batch waited as long as the last generation took joins the next batch).  Rows alternate
(``--repeats`` times each, after a warm-up batch) so that load drifts hit both; printed: rollout seconds,
generation seconds, time spent waiting on environments, batches generated while steps were running,
episodes/s, and the load average.

Usage::

    .venv/bin/python benchmarks/rollout_overlap.py
    .venv/bin/python benchmarks/rollout_overlap.py --env agentgym/ALFWorld-v0 --episodes 16 --turns 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


#: Valid commands per environment for ``--valid-actions`` (each reply becomes one, chosen by the context's length).
VALID_ACTIONS = {
    "agentgym/ScienceWorld-find-non-living-thing-v0": (
        "look around", "inventory", "go to hallway", "look around", "open door to kitchen", "go to kitchen",
    ),
    "agentgym/ALFWorld-v0": ("look", "inventory", "go to countertop 1", "examine countertop 1", "go to cabinet 1"),
}


class ValidActions:
    """A backend that generates with ``inner`` (the real cost) and hands the engine a valid command instead."""

    def __init__(self, inner: Any, fmt: Any, actions: tuple[str, ...]):
        self.inner, self.fmt, self.actions, self.settings = inner, fmt, actions, inner.settings

    def generate(self, requests: Any, max_new_tokens: int) -> Any:
        from agentgym_envs.generation import GenerationOutput

        self.inner.generate(requests, max_new_tokens)
        return [
            GenerationOutput(self.fmt.encode(self.actions[len(r.context_ids) % len(self.actions)]) + [self.fmt.stop_ids[0]],
                             None, "stop")
            for r in requests
        ]

    def release(self, keys: Any) -> None:
        self.inner.release(keys)

    def close(self) -> None:
        self.inner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="'smollm2' (the cached conversion), 'tiny' (a tiny random Llama) or a model folder")
    parser.add_argument("--env", default="agentgym/ScienceWorld-find-non-living-thing-v0")
    parser.add_argument("--split", default="test")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--processes", type=int, default=2, help="worker processes the environments share")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model")
    parser.add_argument("--repeats", type=int, default=2, help="measured batches per schedule")
    parser.add_argument("--valid-actions", action="store_true",
                        help="the model generates as usual, but each reply is replaced by one of the family's valid "
                        "commands (a tiny random model's replies would be parse errors, which cost no simulator step)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    opts = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentgym_envs.engine import ChatFormat, RolloutConfig, RolloutStats, run_episodes, stop_ids_for
    from agentgym_envs.generation import SamplingSettings
    from agentgym_envs.generation.transformers import TransformersBackend
    from agentgym_envs.models import smollm2_dir
    from agentgym_envs.registry import make_env
    from agentgym_envs.workers import make_workers

    torch.set_num_threads(opts.threads)
    if opts.model == "tiny":
        from trl_plugins.models import tiny_model, tiny_tokenizer

        tok = tiny_tokenizer()
        torch.manual_seed(0)
        model = tiny_model(tok, hidden_size=64).eval()
    else:
        path = smollm2_dir() if opts.model == "smollm2" else Path(opts.model)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    fmt = ChatFormat(tok, stop_ids=stop_ids_for(tok, model.generation_config))
    backend: Any = TransformersBackend(model, tok.pad_token_id or 0, SamplingSettings(do_sample=False, stop_ids=fmt.stop_ids))
    if opts.valid_actions:
        backend = ValidActions(backend, fmt, VALID_ACTIONS.get(opts.env, ("look around", "inventory")))
    probe = make_env(opts.env, split=opts.split)
    task_ids = list(probe.unwrapped.task_ids)
    probe.close()
    tasks = [(task_ids[i % len(task_ids)], i, i) for i in range(opts.episodes)]
    rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    played: dict[str, list[Any]] = {}
    with make_workers(opts.env, opts.episodes, kind="process", max_processes=opts.processes, split=opts.split) as workers:
        run_episodes(workers, tasks[:2], backend, fmt, RolloutConfig(max_turns=1, max_new_tokens=4))  # warm-up
        for _ in range(opts.repeats):
            for name in ("off", "on"):
                stats = RolloutStats()
                load = os.getloadavg()[0]
                config = RolloutConfig(max_turns=opts.turns, max_new_tokens=opts.max_new_tokens, overlap=name == "on")
                episodes = run_episodes(workers, tasks, backend, fmt, config, stats)
                played[name] = [[t.text for t in ep.turns] for ep in episodes]
                rows[name].append({
                    "rollout_s": stats.seconds, "generate_s": stats.generate_seconds, "env_s": stats.env_seconds,
                    "env_wait_s": stats.env_wait_seconds, "episodes_per_s": len(episodes) / stats.seconds,
                    "overlapped": stats.overlapped_batches, "load": load, "turns": sum(len(ep.turns) for ep in episodes),
                })
    print(f"\n{opts.env}, {opts.episodes} episodes x <= {opts.turns} turns x <= {opts.max_new_tokens} tokens, "
          f"{opts.processes} worker processes, model {opts.model} ({opts.threads} torch thread(s)), greedy, "
          f"{opts.repeats} batch(es) per schedule (medians)\n")
    print("| overlap | batches during steps | rollout s | generate s | env wait s | episodes/s | load |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, measured in rows.items():
        med = {k: statistics.median(r[k] for r in measured) for k in measured[0]}
        summary[name] = med
        print(f"| {name} | {med['overlapped']:.0f} | {med['rollout_s']:.2f} | {med['generate_s']:.2f} | "
              f"{med['env_wait_s']:.2f} | {med['episodes_per_s']:.3f} | {med['load']:.1f} |")
    print(f"\nsame episodes under both schedules: {'yes' if played['on'] == played['off'] else 'NO'}; "
          f"rollout time off / on: {summary['off']['rollout_s'] / summary['on']['rollout_s']:.2f}x")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(opts).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
