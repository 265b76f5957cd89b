"""``benchmarks/train_throughput.py`` rows are honest: the same turns and tokens on both sides, medians of at least
three measured steps after a warm-up, load and CPU share recorded, the whole rollout-and-scoring timed.

A tiny random Llama (SmolLM2's tokenizer) plays TextWorld through both trainers with forced replies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.train_throughput import same_work  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from trl_plugins.models import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    tiny_model(tok, hidden_size=32, layers=1, max_position_embeddings=4096).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_ours_and_trl_rows_time_the_same_turns_and_tokens(tiny_folder, tmp_path):
    out = tmp_path / "rows.json"
    # 64 new tokens hold the forced tool call with the tiny tokenizer (63 ids), so every reply is a complete call
    command = [
        sys.executable, "benchmarks/train_throughput.py", "--model", str(tiny_folder), "--quick", "--max-turns", "2",
        "--max-new-tokens", "64", "--rows", "ours,trl", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {r["row"]: r for r in report["results"]}
    assert set(rows) == {"ours", "trl"} and report["same_work"] == {"ours": True, "trl": True}
    for row in rows.values():
        assert row["measured_steps"] >= 3 and len(row["step_times_s"]) == row["measured_steps"]
        assert row["turns_per_step"] == [4 * 2] * 3  # 4 episodes x 2 replies in every measured step
        assert row["tokens_per_step"] == [4 * 2 * 63] * 3
        assert 0 < row["cpu_share"] <= 2.5 and len(row["load_start"]) == len(row["load_end"]) == 3
        assert 0 < row["step_cpu_s"]
        assert row["batch_seconds"] >= row["rollout_seconds"] > 0  # rollout-and-scoring holds the rollout
        assert min(row["step_times_s"]) <= row["step_time_s"] <= max(row["step_times_s"])  # a median
    assert "same work (replies and model tokens of every measured step and episode) as the first row: ours yes, trl yes" in result.stdout


def test_a_row_that_played_other_turns_or_tokens_is_flagged():
    row = {"turns_per_step": [8, 8, 8], "tokens_per_step": [256] * 3, "episodes": [{"replies": 2, "model_tokens": 64}]}
    fewer_turns = {**row, "row": "trl", "turns_per_step": [4, 4, 4]}
    other_tokens = {**row, "row": "ours-vllm", "episodes": [{"replies": 2, "model_tokens": 60}]}
    assert same_work([{**row, "row": "ours"}, fewer_turns, other_tokens]) == {
        "ours": True, "trl": False, "ours-vllm": False,
    }  # fmt: skip
