"""Per-turn generation time against turn index, with and without the KV cache carried across turns.

Plays the same batch of episodes twice through the rollout engine with
:class:`~agentgym_envs.generation.transformers.TransformersBackend` (same seed, so the same samples):
once carrying each episode's KV cache from turn to turn, once prefilling the whole context every
turn.  With the cache the cost of a turn should stay flat; without it, it grows with the history.

Usage::

    python benchmarks/rollout_cache.py                      # SmolLM2-135M-Instruct, TextCraft, 4 episodes x 8 turns
    python benchmarks/rollout_cache.py --episodes 8 --turns 12 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym


def run(episodes: int, turns: int, max_new_tokens: int, carry: bool, env_id: str, seed: int) -> dict:
    import torch

    from agentgym_envs.engine import ChatFormat, RolloutConfig, RolloutStats, run_episodes, stop_ids_for
    from agentgym_envs.generation import SamplingSettings
    from agentgym_envs.generation.transformers import TransformersBackend
    from agentgym_envs.models import load_smollm2

    model, tok = load_smollm2()
    model.eval()
    fmt = ChatFormat(tok, stop_ids=stop_ids_for(tok, model.generation_config))
    backend = TransformersBackend(
        model, tok.pad_token_id, SamplingSettings(temperature=1.0, stop_ids=fmt.stop_ids, seed=seed), carry_cache=carry
    )
    envs = [gym.make(env_id, split="test", max_steps=turns) for _ in range(episodes)]
    tasks = [(envs[0].unwrapped.task_ids[i % len(envs[0].unwrapped.task_ids)], seed + i, i) for i in range(episodes)]
    stats = RolloutStats()
    torch.manual_seed(seed)
    start = time.perf_counter()
    eps = run_episodes(envs, tasks, backend, fmt, RolloutConfig(max_turns=turns, max_new_tokens=max_new_tokens), stats)
    wall = time.perf_counter() - start
    for env in envs:
        env.close()
    return {
        "carry_cache": carry,
        "wall_seconds": wall,
        "turn_generate_seconds": stats.turn_generate_seconds,
        "model_tokens": stats.model_tokens,
        "prefilled_tokens": backend.prefilled_tokens,
        "reused_tokens": backend.reused_tokens,
        "turns_per_episode": [len(ep.turns) for ep in eps],
        "final_context_tokens": [len(ep.prompt_ids) + len(ep.completion()[0]) for ep in eps],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--env", default="agentgym/TextCraft-v0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()} of {os.cpu_count()} cores; {args.episodes} episodes x "
          f"{args.turns} turns x <= {args.max_new_tokens} tokens on {args.env} (SmolLM2-135M-Instruct, float32)")
    results = [run(args.episodes, args.turns, args.max_new_tokens, carry, args.env, args.seed) for carry in (True, False)]
    carried, fresh = results
    print("turn  carried s  fresh s")
    for t, (a, b) in enumerate(zip(carried["turn_generate_seconds"], fresh["turn_generate_seconds"], strict=False)):
        print(f"{t:4d}  {a:9.2f}  {b:7.2f}")
    for r in results:
        label = "carried" if r["carry_cache"] else "fresh  "
        print(f"{label}: wall {r['wall_seconds']:.1f} s, prefilled {r['prefilled_tokens']} tokens, "
              f"reused {r['reused_tokens']}, sampled {r['model_tokens']}, final contexts {r['final_context_tokens']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
