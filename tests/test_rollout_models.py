"""``agentgym rollout ENV --policy hf:PATH``: a saved (tiny, random) model evaluated from the command line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from agentgym_envs.cli import main as agentgym_main  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A model folder as a training checkpoint holds it: weights, config and tokenizer (save_pretrained)."""
    from trl_plugins.models import tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("checkpoint-1")
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_rollout_plays_a_saved_model_with_the_leaderboards_records(checkpoint, tmp_path, capsys) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    spec = f"hf:{checkpoint}"
    args = [
        "rollout",
        "agentgym/TextCraft-v0",
        "--policy",
        spec,
        "--tasks",
        "2",
        "--samples",
        "2",
        "--temperature",
        "0",
        "--max-steps",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
        "--json",
        str(report),
    ]
    assert agentgym_main(args) == 0
    printed = capsys.readouterr().out
    assert f"{spec} on agentgym/TextCraft-v0: success 0.0% [0.0%, " in printed and "over 4 episodes" in printed
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted((e["task_index"], e["sample"]) for e in episodes) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for e in episodes:
        assert e["policy"] == spec and e["steps"] == 2 and e["settings"]["temperature"] == 0.0
        assert len(e["transcript"]["turns"]) == 2
    assert (out / "leaderboard.md").is_file()
    saved = json.loads(report.read_text())[spec]
    assert saved["summary"]["episodes"] == 4 and len(saved["episodes"]) == 4
    # The folder is resumed: the same call plays nothing new and reports the same episodes.
    assert agentgym_main(args) == 0
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4
    assert "over 4 episodes" in capsys.readouterr().out


def test_a_checkpoint_that_does_not_exist_is_a_one_line_error(tmp_path, capsys) -> None:
    missing = tmp_path / "runs" / "checkpoint-9"
    code = agentgym_main(
        ["rollout", "agentgym/TextCraft-v0", "--policy", f"hf:{missing}", "--out", str(tmp_path / "o")]
    )
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert f"model folder '{missing}' does not exist" in error
    assert not (tmp_path / "o").exists()
