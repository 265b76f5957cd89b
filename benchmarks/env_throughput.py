"""Environment throughput: our environments against each family's native API, same run.

Every module in ``benchmarks/throughput/`` contributes rows.  A row times the same work on both
sides (``head_to_head`` refuses sides whose repetitions did different amounts), warms both up,
interleaves them (alternating which goes first), reports the median of at least three measured
repetitions, and records the work per repetition, each side's CPU share (CPU seconds of this
process and its children over wall seconds), the rate per CPU second, the load average, and what
the comparison leaves out.  Results and their reading: ``benchmarks/throughput/README.md``.
Usage::

    .venv/bin/python benchmarks/env_throughput.py                  # all families
    .venv/bin/python benchmarks/env_throughput.py --family textworld --quick
    .venv/bin/python benchmarks/env_throughput.py --json results/throughput.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentgym_envs.errors import AgentGymError  # noqa: E402
from benchmarks import throughput  # noqa: E402
from benchmarks.throughput.common import Row, load_average  # noqa: E402


def family_modules(only: list[str] | None) -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(throughput.__path__) if m.name != "common"]
    return [n for n in sorted(names) if not only or n in only]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer games and repeats")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    failures: list[str] = []
    for name in family_modules(args.family):
        module = importlib.import_module(f"benchmarks.throughput.{name}")
        try:
            new = module.rows(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - one family failing must not hide the others
            if not isinstance(exc, AgentGymError):  # missing data or extras: the message says it all
                traceback.print_exc()
            print(f"[{name}] failed: {exc}", file=sys.stderr)
            failures.append(f"{name}: {exc}")
            continue
        rows.extend(new)
        for row in new:
            print(_format(row), flush=True)
    print()
    print(f"load average (1/5/15 min) at the end: {'/'.join(f'{x:.2f}' for x in load_average())}")
    print("| family | setting | ours | native | ratio | ratio per CPU s | work per repetition | CPU share ours / native "
          "| load (1 min) | leaves out | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(_table_line(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    if failures:  # a missing row is a failed benchmark, not an empty table that exits 0
        print(f"\n{len(failures)} famil{'y' if len(failures) == 1 else 'ies'} failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def _table_line(row: Row) -> str:
    native = f"{row.native:.1f} {row.unit}" if row.native else "-"
    ratio = f"{row.ratio:.2f}x" if row.ratio else "-"
    ours, theirs = row.ours_side, row.native_side
    work = "-"
    if ours is not None:
        work = f"{ours.units} x {ours.repeats}" + (f" / {theirs.units} x {theirs.repeats}" if theirs else "")
    share = "-"
    if ours is not None:
        share = f"{ours.cpu_share:.0%}" + (f" / {theirs.cpu_share:.0%}" if theirs else "")
    load = f"{row.load[0]:.1f}" if row.load else "-"
    cpu_ratio = f"{row.cpu_ratio:.2f}x" if row.cpu_ratio else "-"
    return (f"| {row.family} | {row.setting} | {row.ours:.1f} {row.unit} | {native} | {ratio} | {cpu_ratio} | {work} | {share} "
            f"| {load} | {row.leaves_out or '-'} | {row.note} |")


def _format(row: Row) -> str:
    ratio = f" ratio {row.ratio:.3f}" if row.ratio else ""
    ratio += f" (per CPU s {row.cpu_ratio:.3f})" if row.cpu_ratio else ""
    native = f" native {row.native:.1f}" if row.native else ""
    return f"[{row.family}] {row.setting}: ours {row.ours:.1f} {row.unit}{native}{ratio} {row.note}"


if __name__ == "__main__":
    raise SystemExit(main())
