"""Step-time overhead of the loss hooks (EPO, ERC, AEPO) over a plain GRPO-style step, same model, same batch.

One step = forward of a small Llama-style model, ``logps_and_entropy`` over the completion (the entropy is computed
in every configuration, as TRL does for its metrics), the clipped policy loss through ``compose_loss``, backward
and an optimizer step.  Configurations are run interleaved (round-robin) so machine-load drift hits all of them.

Usage::

    .venv/bin/python benchmarks/hook_overhead.py                 # CPU, small model
    .venv/bin/python benchmarks/hook_overhead.py --device cuda --hidden 576 --layers 30 --vocab 49152 --length 2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from trl_plugins.entropy import logps_and_entropy  # noqa: E402
from trl_plugins.hooks import LossContext, build_hooks, compose_loss  # noqa: E402

CONFIGS = {"grpo": [], "epo": ["epo"], "erc": ["erc"], "epo+erc": ["epo", "erc"], "aepo": ["aepo"]}


def make_model(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 4 // 1,
                      num_hidden_layers=args.layers, num_attention_heads=max(args.hidden // 64, 1),
                      num_key_value_heads=max(args.hidden // 64, 1), max_position_embeddings=args.length + 8)  # fmt: skip
    return LlamaForCausalLM(cfg).to(args.device)


def make_batch(args: argparse.Namespace):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.length + 1), generator=g)
    turn_ids = torch.full((args.batch, args.length), -1)
    turn_len = args.length // (2 * args.turns)
    for t in range(args.turns):  # model turns alternate with environment observations of the same length
        turn_ids[:, (2 * t + 1) * turn_len : (2 * t + 2) * turn_len] = t
    mask = (turn_ids >= 0).float()
    adv = torch.randn(args.batch, 1, generator=g).expand(args.batch, args.length).contiguous()
    return ids.to(args.device), mask.to(args.device), turn_ids.to(args.device), adv.to(args.device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    model = make_model(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids, mask, turn_ids, adv = make_batch(args)
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        old_lp, old_h = logps_and_entropy(hidden, ids[:, 1:], model.lm_head.weight, mask=mask)
    hooks = {name: build_hooks(CONFIGS[name]) for name in args.configs}

    def step(name: str, k: int) -> None:
        hs = hooks[name]
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        lp, h = logps_and_entropy(hidden, ids[:, 1:], model.lm_head.weight, mask=mask)
        needs = any(x.needs_entropy for x in hs)
        ctx = LossContext(logps=lp, old_logps=old_lp, advantages=adv, mask=mask, entropy=h if needs else h.detach(),
                          old_entropy=old_h, turn_ids=turn_ids, step=k, total_steps=100)  # fmt: skip
        loss = compose_loss(ctx, hs).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for x in hs:
            x.end_step(k)
            x.metrics()  # logging happens every step in the trainer; include its host syncs
        if args.device == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {n: [] for n in args.configs}
    for n in args.configs:  # warm-up
        step(n, 0)
    for k in range(args.repeats):
        for n in args.configs:
            t0 = time.perf_counter()
            step(n, k + 1)
            times[n].append(time.perf_counter() - t0)

    base = statistics.median(times["grpo"]) if "grpo" in times else None
    print(f"device={args.device} vocab={args.vocab} hidden={args.hidden} layers={args.layers} "
          f"batch={args.batch} length={args.length} turns={args.turns} repeats={args.repeats}")  # fmt: skip
    print("| config | median step ms | overhead vs grpo |")
    print("|---|---|---|")
    rows = []
    for n in args.configs:
        med = statistics.median(times[n])
        over = (med / base - 1) * 100 if base else None
        rows.append({"config": n, "ms": 1000 * med, "overhead_pct": over})
        print(f"| {n} | {1000 * med:.1f} | {'-' if over is None else f'{over:+.1f} %'} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
