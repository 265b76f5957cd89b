"""What a person meets on the command line: clear one-line errors, hints, defaults in --help, ending `play`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def agentgym(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym_envs.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def test_missing_files_are_named_as_missing(tmp_path) -> None:
    result = agentgym("leaderboard", "--suite", str(tmp_path / "missing.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "no suite named" not in result.stderr
    result = agentgym("leaderboard", "--merge", str(tmp_path / "nothere.jsonl"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "not found" in result.stderr and "nothere.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_policy_leaves_no_output_folder(tmp_path) -> None:
    result = agentgym("leaderboard", "--policy", "expert,genius", "--out", str(tmp_path / "out"), "--tasks", "1")
    assert result.returncode == 2 and "unknown policy 'genius'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_id_without_the_namespace_gets_a_hint(tmp_path) -> None:
    for command in (["rollout", "TextCraft-v0", "--episodes", "1"], ["play", "TextCraft-v0"]):
        result = agentgym(*command, stdin="quit\n")
        assert result.returncode == 2 and "did you mean 'agentgym/TextCraft-v0'" in result.stderr, result.stderr


def test_quit_and_exit_end_a_play_session_without_reaching_the_game() -> None:
    for word in ("quit", "exit", ":quit"):
        result = agentgym("play", "agentgym/TextCraft-v0", stdin=f"{word}\nlook\n")
        assert result.returncode == 0, result.stderr
        assert "[reward" not in result.stdout  # nothing was sent to the game


def test_help_shows_defaults_and_how_play_differs_from_gym_make() -> None:
    leaderboard_help = agentgym("leaderboard", "--help").stdout
    assert "(default: 0.7)" in leaderboard_help and "(default: quick)" in leaderboard_help
    play_help = " ".join(agentgym("play", "--help").stdout.split())
    assert "differ from gym.make's" in play_help and "(default: test)" in play_help and "(default: dense)" in play_help


def test_rollout_json_holds_each_episodes_transcript(tmp_path) -> None:
    import json

    report = tmp_path / "r.json"
    result = agentgym("rollout", "agentgym/TextCraft-v0", "--policy", "expert", "--episodes", "1", "--json", str(report))
    assert result.returncode == 0, result.stderr
    (episode,) = json.loads(report.read_text())["expert"]["episodes"]
    turns = episode["transcript"]["turns"]
    assert len(turns) == episode["steps"] and turns[-1]["reward"] == 1.0 and turns[0]["action"]


def test_train_with_a_missing_or_bad_config_prints_one_line(tmp_path) -> None:
    pytest.importorskip("trl")
    result = agentgym("train", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: tiny\nno_such_setting: 1\n")
    result = agentgym("train", "--config", str(bad))
    assert result.returncode == 2 and "no_such_setting" in result.stderr and "Traceback" not in result.stderr
    result = agentgym("list", "--no-such-flag")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_version_prints_the_package_version() -> None:
    import agentgym_envs

    result = agentgym("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"agentgym {agentgym_envs.__version__}"


def test_unknown_family_and_policy_get_a_suggestion_and_exit_2() -> None:
    result = agentgym("list", "--family", "textwrld")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown family 'textwrld'")
    assert "did you mean 'textworld'?" in result.stderr and "Traceback" not in result.stderr
    result = agentgym("rollout", "agentgym/TextCraft-v0", "--policy", "expret")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown policy 'expret'")
    assert "did you mean 'expert'?" in result.stderr
    assert "textworld" in agentgym("list", "--help").stdout.split("--family FAMILY")[-1]


def test_help_never_shows_an_empty_or_doubled_default() -> None:
    for command in ("list", "play", "rollout", "leaderboard"):
        text = " ".join(agentgym(command, "--help").stdout.split())
        for empty in ("(default: None)", "(default: False)", "(default: [])"):
            assert empty not in text, (command, empty)
        assert not re.search(r"\(default[^()]*\) \(default:", text), command


def test_help_and_meta_commands_in_play_use_no_step_and_the_task_is_shown_once() -> None:
    import gymnasium as gym

    import agentgym_envs  # noqa: F401  (registers the ids)

    env = gym.make("agentgym/TextCraft-v0", split="test")
    _, info = env.reset(seed=0)
    env.close()
    result = agentgym("play", "agentgym/TextCraft-v0", stdin="help\n:help\n:nonsense\nlook\nquit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[reward") == 1 and "step 1]" in result.stdout  # only `look` reached the game
    assert "unknown command ':nonsense'" in result.stdout
    assert result.stdout.count(info["instruction"]) == 1


def test_ctrl_c_in_play_ends_it_without_a_traceback() -> None:
    import signal
    import time

    # A test run started in the background (`pytest &` from a script) ignores SIGINT, and a child inherits that:
    # Python then installs no Ctrl-C handler. A terminal's Ctrl-C reaches play with the default disposition.
    proc = subprocess.Popen([sys.executable, "-m", "agentgym_envs.cli", "play", "agentgym/TextCraft-v0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "(commands:" not in seen and time.monotonic() < deadline:  # the session is waiting for input
            seen += proc.stdout.readline()
        assert "(commands:" in seen
        proc.send_signal(signal.SIGINT)
        # Wait before communicate(): it closes stdin, and an EOF read before the signal is handled ends play normally.
        proc.wait(timeout=60)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in out and "Traceback" not in err, err


def test_env_kwargs_reach_gym_make_and_bad_pairs_are_one_line() -> None:
    result = agentgym("rollout", "agentgym/TextCraft-v0", "--policy", "expert", "--episodes", "1",
                      "--env-kwargs", "max_steps=1")
    assert result.returncode == 0, result.stderr
    assert "success 0.0%" in result.stdout and "mean steps 1.0" in result.stdout  # one step never crafts the item
    result = agentgym("rollout", "agentgym/TextCraft-v0", "--env-kwargs", "max_steps")
    assert result.returncode == 2 and "key=value, got 'max_steps'" in result.stderr and "Traceback" not in result.stderr


def test_custom_trainer_example_help_does_not_train(tmp_path) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "custom_trainer.py"
    result = subprocess.run([sys.executable, str(example), "--help"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0 and "--steps" in result.stdout
    assert not (tmp_path / "runs").exists()
