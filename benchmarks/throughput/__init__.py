"""Per-family rows of ``benchmarks/env_throughput.py``.

Each module here defines ``rows(quick: bool) -> list[Row]`` measuring our environment
against the family's native API on the same actions, in the same run.
"""
