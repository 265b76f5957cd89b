"""Rollout tokens/s of generation backends on the same model and the same multi-turn episodes.

Rows (each measured in its own process, so that thread settings and peak memory are its own):

* ``transformers``: the trainer's current sampler (:func:`agentgym_envs.generation.sampling.sample_batch`,
  a KV cache within a turn, the whole context prefilled again every turn);
* ``vllm``: :class:`agentgym_envs.generation.vllm.VLLMBackend` (prefix caching across turns).

Both play the same episodes through :func:`agentgym_envs.engine.run_episodes` (same environment,
tasks, seeds, chat template, turn and token limits). Decoding is greedy by default so that both
sides generate the same replies, hence the same tokens and turns (printed per row); the engine's
start-up is not timed and one warm-up batch runs first. ``rollout tokens/s`` is model tokens
divided by the wall time of ``run_episodes`` (generation plus environment steps), ``generate
tokens/s`` divides by the generation time alone.

:func:`rollout_row` plays and times one row in the calling process. The script runs unchanged on CUDA
(``--device cuda``: bfloat16 on both sides).

Usage::

    .venv/bin/python benchmarks/rollout_backends.py                       # SmolLM2, TextCraft, CPU
    .venv/bin/python benchmarks/rollout_backends.py --episodes 8 --turns 4 --json results/rollout_backends.json
    .venv/bin/python benchmarks/rollout_backends.py --backends vllm --device cuda
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BACKENDS = ("transformers", "vllm")


def rollout_row(
    backend: str,
    model_path: str | Path,
    env_id: str = "agentgym/TextCraft-d1-v0",
    episodes: int = 4,
    turns: int = 3,
    max_new_tokens: int = 32,
    greedy: bool = True,
    device: str = "cpu",
    threads: int = 1,
    repeats: int = 1,
) -> dict[str, Any]:
    """Play ``episodes`` episodes of ``env_id`` with ``backend`` and time them (after one warm-up batch).

    Example:
        >>> row = rollout_row("vllm", smollm2_dir(), episodes=4, turns=3)   # doctest: +SKIP
        >>> row["rollout_tokens_per_s"]                                       # doctest: +SKIP
    """
    import torch
    from transformers import AutoTokenizer

    from agentgym_envs import make_env
    from agentgym_envs.engine import ChatFormat, RolloutConfig, RolloutStats, run_episodes
    from agentgym_envs.generation import SamplingSettings

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_path)
    fmt = ChatFormat(tok)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    stop = [tok.eos_token_id]
    start = time.perf_counter()
    close = None
    if backend == "vllm":
        from agentgym_envs.generation.vllm import VLLMBackend

        engine = VLLMBackend(
            model_path,
            SamplingSettings(do_sample=not greedy, stop_ids=tuple(stop), seed=0),
            dtype=str(dtype).removeprefix("torch."),
            max_model_len=4096,
        )
        torch.set_num_threads(threads)
        generate = engine.generate_fn()
        close = engine.close
    elif backend == "transformers":
        from transformers import AutoModelForCausalLM

        from agentgym_envs.generation.sampling import sample_batch

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        torch.manual_seed(0)

        def generate(contexts: list[list[int]], n: int) -> list[list[int]]:
            return sample_batch(model, contexts, n, eos_ids=stop, pad_id=tok.pad_token_id or 0, do_sample=not greedy)
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    load_seconds = time.perf_counter() - start

    envs = [make_env(env_id, split="test") for _ in range(episodes)]
    task_ids = envs[0].unwrapped.task_ids
    tasks = [(task_ids[i % len(task_ids)], i, i) for i in range(episodes)]
    config = RolloutConfig(max_turns=turns, max_new_tokens=max_new_tokens, max_context_tokens=4096)
    run_episodes(envs, tasks[:1], generate, fmt, RolloutConfig(max_turns=1, max_new_tokens=4))  # warm-up
    stats = RolloutStats()
    played = []
    for _ in range(repeats):
        played = run_episodes(envs, tasks, generate, fmt, config, stats=stats)
    for env in envs:
        env.close()
    if close is not None:
        close()
    return {
        "backend": backend,
        "device": device,
        "threads": threads,
        "episodes": episodes,
        "repeats": repeats,
        "load_seconds": round(load_seconds, 2),
        "model_tokens": stats.model_tokens,
        "rollout_seconds": round(stats.seconds, 3),
        "generate_seconds": round(stats.generate_seconds, 3),
        "rollout_tokens_per_s": round(stats.model_tokens / max(stats.seconds, 1e-9), 2),
        "generate_tokens_per_s": round(stats.model_tokens / max(stats.generate_seconds, 1e-9), 2),
        "turns_per_episode": [len(ep.turns) for ep in played],
        "tokens_per_episode": [sum(len(t.action_ids) for t in ep.turns) for ep in played],
        "context_tokens_last_turn": [len(ep.prompt_ids) + len(ep.completion()[0]) for ep in played],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _child(queue: Any, backend: str, kwargs: dict[str, Any]) -> None:
    try:
        queue.put(rollout_row(backend, **kwargs))
    except Exception as error:  # noqa: BLE001 - reported as the row's result
        queue.put({"backend": backend, "error": f"{type(error).__name__}: {error}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="'smollm2' (the cached conversion) or a model folder")
    parser.add_argument("--env", default="agentgym/TextCraft-d1-v0")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="measured batches per row")
    parser.add_argument("--sample", action="store_true", help="sample at temperature 1 instead of greedy decoding")
    parser.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each row's process")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    opts = parser.parse_args(argv)
    if opts.model == "smollm2":
        from trl_plugins.models import smollm2_dir

        model_path: str | Path = smollm2_dir()
    else:
        model_path = opts.model
    kwargs = dict(
        model_path=str(model_path), env_id=opts.env, episodes=opts.episodes, turns=opts.turns,
        max_new_tokens=opts.max_new_tokens, greedy=not opts.sample, device=opts.device, threads=opts.threads,
        repeats=opts.repeats,
    )
    rows = []
    context = multiprocessing.get_context("spawn")
    for backend in opts.backends.split(","):
        queue = context.Queue()
        process = context.Process(target=_child, args=(queue, backend, kwargs))
        process.start()
        row = queue.get()
        process.join()
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in rows if "error" not in r]
    if len(ok) == 2:
        a, b = ok
        print(f"{b['backend']} / {a['backend']} rollout tokens/s: {b['rollout_tokens_per_s'] / a['rollout_tokens_per_s']:.2f}x")
        if a["tokens_per_episode"] != b["tokens_per_episode"]:
            print("note: the two rows generated different replies (tokens per episode differ)")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(rows, indent=2))
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
