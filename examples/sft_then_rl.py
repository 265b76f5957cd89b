"""The Practitioner's Guide pipeline in one script: held-out base success, SFT on expert demos, GRPO, held-out success.

    PYTHONPATH=$PWD .venv/bin/python examples/sft_then_rl.py --out runs/sft-then-rl          # SmolLM2-135M, TextWorld
    PYTHONPATH=$PWD .venv/bin/python examples/sft_then_rl.py --out /tmp/sft-then-rl --smoke  # tiny model, one step each

It is the TextWorld w2-o3-q4 half of ``recipes/smollm2_cpu.py`` (see ``docs/results.md``): the SFT demos come from
the train split rendered exactly as the RL trainer renders its prompts (``trl_plugins.sft.expert_dataset``), RL plays
other train tasks, and every stage is evaluated on the same held-out test tasks with a 95 % Wilson interval
(``results.md`` in ``--out``). Every flag of the recipe is accepted (``--demos``, ``--rl-steps``, ``--eval-episodes``,
``--model``, ...); a stage that finished is skipped when the command is run again.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recipes import smollm2_cpu  # noqa: E402

if __name__ == "__main__":
    smollm2_cpu.main(["--out", "runs/sft-then-rl", "--families", "textworld", "--base-rl-steps", "0", *sys.argv[1:]])
