"""The throughput benchmark's manners: it keeps the user's cache, removes its own, fails loudly, and its rows compare the same work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run_throughput(checkout: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "benchmarks/env_throughput.py", *args], cwd=checkout, env=env,
        capture_output=True, text=True, timeout=600,
    )


def test_alfworld_row_without_data_fails_loudly_and_leaves_no_temporary_cache(tmp_path) -> None:
    # A checkout without the shipped archive, no ../shared next to it, no $ALFWORLD_DATA and no
    # ~/.cache/alfworld: the games cannot be found.
    checkout = tmp_path / "checkout"
    for folder in ("agentgym_envs", "benchmarks"):
        shutil.copytree(REPO / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__", "*.tar.xz"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTGYM_CACHE", "ALFWORLD_DATA")}
    env.update(TMPDIR=str(scratch), PYTHONPATH=str(checkout), HOME=str(tmp_path / "home"))
    result = _run_throughput(checkout, env, "--family", "alfworld", "--quick")
    assert result.returncode != 0, result.stdout
    assert "ALFWorld game data not found" in result.stderr and "alfworld-download" in result.stderr
    assert "Traceback" not in result.stderr  # a clear message, not a stack
    assert list(scratch.iterdir()) == []  # the temporary cache it made is gone
    # With $AGENTGYM_CACHE set, that cache is used and no temporary one is made.
    user_cache = tmp_path / "user-cache"
    rows_json = tmp_path / "rows.json"
    result = _run_throughput(checkout, {**env, "AGENTGYM_CACHE": str(user_cache)}, "--family", "babyai", "--quick",
                             "--json", str(rows_json))
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(scratch.iterdir()) == []
    _assert_honest_rows(json.loads(rows_json.read_text()), families={"babyai"})


def _assert_honest_rows(rows: list[dict], families: set[str]) -> None:
    """Both sides of a row did the same work, measured at least three times, with load and CPU share recorded."""
    assert {r["family"] for r in rows} == families
    compared = [r for r in rows if r["native"] is not None]
    assert compared, rows
    for row in rows:
        ours, native = row["ours_side"], row["native_side"]
        assert ours is not None and ours["repeats"] >= 3 and len(ours["rates"]) == ours["repeats"], row
        assert 0 < ours["cpu_share"] and len(row["load"]) == 3, row
        if row["native"] is not None:
            assert native["units"] == ours["units"] > 0 and native["repeats"] == ours["repeats"], row
            assert 0 < native["cpu_share"] and row["leaves_out"], row  # says what the comparison leaves out
            assert row["ratio"] == pytest.approx(ours["rate"] / native["rate"])


def test_textcraft_rows_time_the_same_steps_on_both_sides(tmp_path) -> None:
    rows_json = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "AGENTGYM_TEXTCRAFT"}
    env["PYTHONPATH"] = str(REPO)
    result = _run_throughput(REPO, env, "--family", "textcraft", "--quick", "--json", str(rows_json))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(rows_json.read_text())
    _assert_honest_rows(rows, families={"textcraft"})
    assert "| ratio per CPU s |" in result.stdout and "load average" in result.stdout
    # Without AgentGym's TextCraft the rows against it are left out, and the output says so.
    assert "AGENTGYM_TEXTCRAFT" in result.stderr and "(AgentGym)" not in result.stdout


def test_a_wrong_agentgym_textcraft_folder_fails_the_family_with_its_reason(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGENTGYM_TEXTCRAFT": str(tmp_path)}
    result = _run_throughput(REPO, env, "--family", "textcraft", "--quick")
    assert result.returncode != 0
    assert f"AGENTGYM_TEXTCRAFT={tmp_path} holds no agentenv_textcraft/environment.py" in result.stderr


def test_prepare_runs_untimed_before_every_call_of_its_side() -> None:
    sys.path.insert(0, str(REPO))
    import time

    from benchmarks.throughput.common import head_to_head

    log: list[str] = []

    def prepare(side: str):
        def run() -> None:
            log.append(f"prepare {side}")
            time.sleep(0.05)
        return run

    def work(side: str):
        def run() -> int:
            assert log[-1] == f"prepare {side}"  # prepared right before, every time
            log.append(side)
            return 5
        return run

    ours, native = head_to_head(work("ours"), work("native"), repeats=3, prepare=(prepare("ours"), prepare("native")))
    assert log.count("prepare ours") == log.count("ours") == 4 and log.count("prepare native") == 4  # 1 warm-up
    # 5 units in far less than the 50 ms the preparation sleeps: the preparation is not timed
    assert ours.rate > 5 / 0.05 * 10 and native.rate > 5 / 0.05 * 10


def test_a_row_whose_sides_did_different_work_is_refused() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.throughput.common import head_to_head, measured

    ours, native = head_to_head(lambda: 7, lambda: 7, repeats=3)
    assert ours.units == native.units == 7 and ours.repeats == native.repeats == 3
    with pytest.raises(RuntimeError, match="different work"):
        head_to_head(lambda: 7, lambda: 8, repeats=3)
    steps = iter(range(10))
    with pytest.raises(RuntimeError, match="different amounts of work"):
        measured(lambda: next(steps), repeats=3)
    with pytest.raises(ValueError, match="at least 3"):
        head_to_head(lambda: 1, lambda: 1, repeats=2)


def test_waits_a_repetition_timed_itself_are_left_out_of_its_time() -> None:
    sys.path.insert(0, str(REPO))
    import time

    from benchmarks.throughput.common import head_to_head

    def waits() -> tuple[int, float]:
        start = time.perf_counter()
        time.sleep(0.05)  # e.g. waiting for the page's next frame
        return 5, time.perf_counter() - start

    ours, native = head_to_head(waits, lambda: 5, repeats=3)
    assert ours.units == native.units == 5
    assert ours.rate > 5 / 0.05 * 10  # the 50 ms wait is not in the time
