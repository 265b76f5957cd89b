"""``benchmarks/mutation.py`` on a tiny checkout: mutants planted, killed or survived, the same through the fork server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.mutation import enumerate_mutants, main

MODULE = """
def clamp_add(a, b, top=10):
    total = a + b
    return total if total < top else top
"""

TESTS = """
from calc import clamp_add

def test_adds():
    assert clamp_add(2, 3) == 5

def test_clamps():
    assert clamp_add(9, 4) == 10
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "calc.py").write_text(MODULE)
    (root / "tests" / "test_calc.py").write_text(TESTS)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def _run(checkout: Path, *extra: str) -> dict:
    out = checkout.parent / "result.json"
    code = main(["calc.py", "tests/test_calc.py", "--root", str(checkout), "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_mutants_are_killed_or_survive_the_same_with_and_without_the_fork_server(checkout: Path) -> None:
    mutants = enumerate_mutants(MODULE)
    assert [m.describe() for m in mutants] == ["2: 10 -> 11", "3: a + b -> a - b", "4: total < top -> total <= top"]
    plain = _run(checkout)
    status = {m["before"] + " -> " + m["after"]: m["status"] for m in plain["mutants"]}
    # the boundary total == top is never tested, so that mutant survives
    assert status == {"a + b -> a - b": "killed", "total < top -> total <= top": "survived", "10 -> 11": "killed"}
    assert plain["killed"] == 2 and plain["total"] == 3
    forked = _run(checkout, "--preload", "json,decimal")
    assert [m["status"] for m in forked["mutants"]] == [m["status"] for m in plain["mutants"]]


def test_the_fork_server_refuses_to_preload_the_module_under_test(checkout: Path) -> None:
    with pytest.raises(SystemExit, match="preloading imported modules of the checkout: calc"):
        main(["calc.py", "tests/test_calc.py", "--root", str(checkout), "--preload", "calc"])


def test_a_reviewed_survivor_carries_its_reason_and_others_are_counted_as_new(checkout: Path, capsys) -> None:
    reviewed = checkout.parent / "survivors.json"
    reviewed.write_text(json.dumps({"calc.py": [
        {"line": 4, "before": "total < top", "after": "total <= top", "why": "boundary: clamping at top is top"},
        {"line": 3, "before": "a + b", "after": "a * b", "why": "not a mutant of this file"},
    ]}))
    result = _run(checkout, "--survivors", str(reviewed))
    survived = [m for m in result["mutants"] if m["status"] == "survived"]
    assert [m["why"] for m in survived] == ["boundary: clamping at top is top"] and result["unexplained"] == 0
    assert "1 reviewed in survivors.json, 0 not" in capsys.readouterr().out
    assert _run(checkout, "--survivors", str(checkout / "missing.json"))["unexplained"] == 1
