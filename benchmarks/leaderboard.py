"""The leaderboard: evaluate policies across the suite and write tables and a chart.

Same as ``agentgym leaderboard``; see ``--help``.  With no arguments it runs the quick
suite with the random, expert and embedded SmolLM2-135M-Instruct policies into
``results/leaderboard/`` (resumed if interrupted).
"""

from __future__ import annotations

import sys

from agentgym_envs.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["leaderboard", *sys.argv[1:]]))
