"""Peak memory and time of per-token log-probs + full-vocabulary entropy (forward + backward), ours vs TRL's.

Each (method, length) runs in its own subprocess so peaks do not leak between them (and an OOM only loses that row).
The workload is one LM-head step: ``hidden (B, L, D) -> logp of the sampled ids and entropy -> loss -> backward``
to the hidden states and the LM-head weight, as in a policy-gradient step with an entropy term.

Methods:
  trl_logits     TRL's own path: the model's logits (B, L, V) materialised by the LM head, then
                 ``trl.trainer.utils.selective_log_softmax`` + ``entropy_from_logits`` (Triton kernel on CUDA).
  trl_fused      TRL's fused LM head (``trl.kernels.chunked_logprob.ChunkedLogProbFunction``), reference only.
  naive          float32 ``log_softmax`` over the full logits.
  ours_logits    ``logps_and_entropy(logits, ids)`` on materialised logits.
  ours_hidden    ``logps_and_entropy(hidden, ids, weight)`` (backend auto: torch.compile on CUDA).
  ours_eager     the same with ``backend="torch"``.

Usage::

    .venv/bin/python benchmarks/entropy_memory.py                      # CUDA if present, else a CPU smoke run
    .venv/bin/python benchmarks/entropy_memory.py --device cuda --lengths 2048 8192 16384 --json results/ent.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["trl_logits", "trl_fused", "naive", "ours_logits", "ours_hidden", "ours_eager"]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from trl_plugins.entropy import logps_and_entropy, naive_logps_and_entropy

    dev = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    g = torch.Generator(device="cpu").manual_seed(0)
    n_tok = args.batch * args.length
    hidden = (torch.randn(args.batch, args.length, args.hidden, generator=g) * 0.5).to(dev, dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * 0.05).to(dev, dtype).requires_grad_()
    ids = torch.randint(0, args.vocab, (args.batch, args.length), generator=g).to(dev)
    adv = torch.randn(args.batch, args.length, generator=g).to(dev)

    def step() -> None:
        m = args.method
        if m == "trl_logits":
            from trl.trainer.utils import entropy_from_logits, selective_log_softmax

            logits = hidden @ weight.t()
            lp, ent = selective_log_softmax(logits, ids), entropy_from_logits(logits)
        elif m == "trl_fused":
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction

            lp, ent, *_ = ChunkedLogProbFunction.apply(
                hidden.reshape(n_tok, -1), weight, None, ids.reshape(-1), 1.0, args.vocab_chunk, None, 1.0, ("entropy",)
            )
            lp, ent = lp.view_as(adv), ent.view_as(adv)
        elif m == "naive":
            lp, ent = naive_logps_and_entropy(hidden @ weight.t(), ids)
        elif m == "ours_logits":
            lp, ent = logps_and_entropy(hidden @ weight.t(), ids, chunk_size=args.chunk, backend="torch")
        elif m == "ours_hidden":
            lp, ent = logps_and_entropy(hidden, ids, weight, chunk_size=args.chunk, backend="auto")
        elif m == "ours_eager":
            lp, ent = logps_and_entropy(hidden, ids, weight, chunk_size=args.chunk, backend="torch")
        else:
            raise SystemExit(f"unknown method {m}")
        loss = -(lp.float() * adv).mean() - 1e-3 * ent.float().mean()
        loss.backward()
        hidden.grad = weight.grad = None

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (compilation, autotuning)
    sync()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
    times = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _rss_kib("VmHWM") * 1024
    return {
        "method": args.method,
        "length": args.length,
        "peak_extra_mib": (peak - base) / 2**20,
        "ms": 1000 * statistics.median(times),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--lengths", nargs="+", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--hidden", type=int, default=576, help="576 = SmolLM2-135M")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    p.add_argument("--chunk", type=int, default=1024, help="tokens per chunk (ours)")
    p.add_argument("--vocab-chunk", type=int, default=4096, help="vocabulary tile (trl_fused)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.batch = args.batch or (8 if cuda else 1)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    lengths = args.lengths or ([2048, 8192, 16384] if cuda else [512, 1024])
    rows = []
    for length in lengths:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--length", str(length),
                   "--device", args.device, "--dtype", args.dtype, "--batch", str(args.batch),
                   "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--chunk", str(args.chunk),
                   "--vocab-chunk", str(args.vocab_chunk), "--repeats", str(args.repeats)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if res.returncode != 0:
                err = (res.stderr.strip().splitlines() or ["?"])[-1]
                row = {"method": method, "length": length, "peak_extra_mib": None, "ms": None, "error": err[:160]}
            else:
                row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\ndevice={args.device} dtype={args.dtype} batch={args.batch} vocab={args.vocab} hidden={args.hidden}")
    print("| length | method | peak extra MiB | ms (fwd+bwd) | memory vs trl_logits | time vs trl_logits |")
    print("|---|---|---|---|---|---|")
    for length in lengths:
        ref = next((r for r in rows if r["length"] == length and r["method"] == "trl_logits" and r["ms"]), None)
        for r in (r for r in rows if r["length"] == length):
            if r["ms"] is None:
                print(f"| {length} | {r['method']} | failed: {r['error']} | | | |")
                continue
            mem_ratio = f"{r['peak_extra_mib'] / ref['peak_extra_mib']:.2f}x" if ref and ref["peak_extra_mib"] else "-"
            t_ratio = f"{r['ms'] / ref['ms']:.2f}x" if ref else "-"
            print(f"| {length} | {r['method']} | {r['peak_extra_mib']:.0f} | {r['ms']:.1f} | {mem_ratio} | {t_ratio} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"}, "rows": rows},
                                        indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
