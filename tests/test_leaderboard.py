"""The leaderboard on real environments: tables, chart, resume, merge, model policies and their errors."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from process_checks import descendants

from agentgym_envs.errors import PolicyError, SuiteError
from agentgym_envs.eval import Suite, SuiteEntry, load_suite, pass_at_k, report, results, run_leaderboard, runner
from agentgym_envs.eval.policies import HFPolicy, OpenAIPolicy, make_policy

SUITE = Suite(
    "test",
    (
        SuiteEntry("agentgym/TextWorld-w2-o3-q4-v0", tasks=2),
        SuiteEntry("agentgym/TextCraft-v0", tasks=2, kwargs={"max_steps": 8}),
    ),
    samples=2,
)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_random_and_expert_on_real_environments_write_tables_and_a_chart(tmp_path) -> None:
    rows = run_leaderboard(SUITE, ["random", "expert"], tmp_path, progress=False)
    episodes = lines(tmp_path / "episodes.jsonl")
    assert len(episodes) == 2 * 2 * 2 * 2  # policies x environments x tasks x samples
    by = {(r["policy"], r["environment"]): r for r in rows}
    assert by[("expert", "agentgym/TextWorld-w2-o3-q4-v0")]["success_rate"] == 1.0
    assert by[("expert", "agentgym/TextCraft-v0")]["pass_at_k"] == 1.0
    assert ("expert", "textcraft (family)") not in by  # a one-environment family does not repeat its row
    random_tw = by[("random", "agentgym/TextWorld-w2-o3-q4-v0")]
    assert random_tw["mean_steps"] <= 12 and random_tw["k"] == 2
    assert 0.0 <= random_tw["success_ci_low"] <= random_tw["success_rate"] <= random_tw["success_ci_high"] <= 1.0
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "Held-out test tasks (suite 'test')" in markdown and "pass@k" in markdown and "95% CI" in markdown
    assert "| agentgym/TextCraft-v0 | expert | 4 | 1.00 |" in markdown
    with (tmp_path / "leaderboard.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) and {"success_rate", "pass_at_k", "invalid_action_rate"} <= set(table[0])
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_run_resumes_without_redoing_episodes(tmp_path) -> None:
    suite = Suite("test", SUITE.entries[:1], samples=1)
    run_leaderboard(suite, ["random", "expert"], tmp_path, progress=False, max_episodes=3)
    first = (tmp_path / "episodes.jsonl").read_text()
    assert len(first.splitlines()) == 3
    with (tmp_path / "episodes.jsonl").open("a") as handle:
        handle.write('{"policy": "expert", "env_id": "cut sh')  # a line cut short by a kill
    run_leaderboard(suite, ["random", "expert"], tmp_path, progress=False)
    records = results.read_results([tmp_path / "episodes.jsonl"])
    assert len(records) == 4
    assert (tmp_path / "episodes.jsonl").read_text().startswith(first)  # the first three were not played again
    keys = [(r["policy"], r["task_index"]) for r in records]
    assert len(set(keys)) == 4


def test_results_of_different_runs_merge_into_one_leaderboard(tmp_path) -> None:
    suite = Suite("test", SUITE.entries[1:], samples=1)
    run_leaderboard(suite, ["random"], tmp_path / "a", progress=False)
    run_leaderboard(suite, ["expert"], tmp_path / "b", progress=False)
    out = tmp_path / "merged"
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "leaderboard", "--merge",
         str(tmp_path / "a" / "episodes.jsonl"), str(tmp_path / "b" / "episodes.jsonl"), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    markdown = (out / "leaderboard.md").read_text()
    assert "| agentgym/TextCraft-v0 | expert |" in markdown and "| agentgym/TextCraft-v0 | random |" in markdown


def test_a_tiny_real_transformer_plays_through_the_trainer_prompts(tmp_path) -> None:
    from agentgym_envs.models import smollm2_tokenizer
    from trl_plugins.models import tiny_model

    folder = tmp_path / "tiny"
    tokenizer = smollm2_tokenizer()
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    suite = Suite("test", (SuiteEntry("agentgym/TextCraft-v0", tasks=1, kwargs={"max_steps": 2}),))
    rows = run_leaderboard(suite, [f"hf:{folder}"], tmp_path / "out", progress=False, max_new_tokens=8)
    (episode,) = lines(tmp_path / "out" / "episodes.jsonl")
    assert episode["policy"] == f"hf:{folder}" and episode["steps"] == 2 and not episode["won"]
    assert rows[0]["episodes"] == 1

    policy = HFPolicy(str(folder), max_new_tokens=4)
    import gymnasium as gym

    env = gym.make("agentgym/TextCraft-v0", split="test")
    obs, info = env.reset(seed=0)
    policy.reset(0)
    policy.act(obs, info, env)
    messages = policy.conversation.messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert env.unwrapped.parser.instructions() in messages[1]["content"] and obs.strip() in messages[1]["content"]
    env.close()


def test_bad_models_and_endpoints_give_clear_errors(tmp_path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        HFPolicy(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="no config.json"):
        HFPolicy(str(tmp_path / "empty"))
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PolicyError, match="cannot reach the endpoint"):
        OpenAIPolicy(f"http://127.0.0.1:{port}/v1", model="m", timeout=2)
    with pytest.raises(PolicyError, match="unknown policy"):
        make_policy("genius")
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "leaderboard", "--policy", f"hf:{tmp_path / 'missing'}",
         "--out", str(tmp_path / "out"), "--tasks", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_suites_and_pass_at_k(tmp_path) -> None:
    quick = load_suite("quick")
    import agentgym_envs

    registered = {r.env_id for r in agentgym_envs.list_environments()}
    assert all(e.env_id in registered for e in quick.entries)
    assert load_suite("quick", tasks=1, samples=3).samples == 3
    suite_file = tmp_path / "suite.json"
    suite_file.write_text(json.dumps({"name": "mine", "samples": 2, "environments": [{"env_id": "x", "tasks": 4}]}))
    assert load_suite(str(suite_file)) == Suite("mine", (SuiteEntry("x", 4),), 2)
    with pytest.raises(SuiteError, match="quick"):
        load_suite("nope")
    suite_file.write_text("{}")
    with pytest.raises(SuiteError, match="not a valid suite"):
        load_suite(str(suite_file))
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 1, 2) == 0.5
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)


TEXTCRAFT = Suite("test", (SuiteEntry("agentgym/TextCraft-v0", tasks=2, kwargs={"max_steps": 8}),), samples=1)


def test_resume_reuses_only_episodes_with_the_same_settings_and_says_so(tmp_path, capsys) -> None:
    run_leaderboard(TEXTCRAFT, ["random"], tmp_path, progress=False)
    assert len(lines(tmp_path / "episodes.jsonl")) == 2
    capsys.readouterr()
    run_leaderboard(TEXTCRAFT, ["random"], tmp_path, progress=False, temperature=0.0)  # no effect on a scripted policy
    assert "reused 2 episodes" in capsys.readouterr().out
    assert len(lines(tmp_path / "episodes.jsonl")) == 2
    rows = run_leaderboard(TEXTCRAFT, ["random"], tmp_path, progress=False, seed=5)
    assert "2 episodes in" in capsys.readouterr().out  # ... were played with other settings
    episodes = lines(tmp_path / "episodes.jsonl")
    assert len(episodes) == 4 and {e["settings"]["seed"] for e in episodes} == {0, 5}
    assert {e["seed"] for e in episodes} == {0, 1, 5, 6}
    assert {r["policy"] for r in rows} == {"random [seed=0]", "random [seed=5]"}
    assert "reused 2 episodes already in episodes.jsonl" not in (tmp_path / "leaderboard.md").read_text()


def test_merge_keeps_runs_with_different_settings_apart_and_counts_duplicates(tmp_path) -> None:
    run_leaderboard(TEXTCRAFT, ["random"], tmp_path / "a", progress=False, seed=0)
    run_leaderboard(TEXTCRAFT, ["random"], tmp_path / "b", progress=False, seed=5)
    files = [str(tmp_path / "a" / "episodes.jsonl"), str(tmp_path / "b" / "episodes.jsonl")]
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "leaderboard", "--merge", *files, files[0],
         "--out", str(tmp_path / "merged")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "merged" / "leaderboard.md").read_text()
    assert "| agentgym/TextCraft-v0 | random [seed=0] | 2 |" in markdown
    assert "| agentgym/TextCraft-v0 | random [seed=5] | 2 |" in markdown
    assert "merged 4 episodes from 3 file(s)" in markdown and "2 duplicate episodes" in markdown


def test_model_settings_and_files_are_part_of_an_episodes_key(tmp_path) -> None:
    entry = TEXTCRAFT.entries[0]
    scripted = [results.episode_settings("random", entry, 0, t, 48) for t in (0.0, 0.7)]
    assert scripted[0] == scripted[1]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"1234")
    spec = f"hf:{folder}"
    first = results.episode_settings(spec, entry, 0, 0.7, 48)
    assert first != results.episode_settings(spec, entry, 0, 0.0, 48)
    assert first != results.episode_settings(spec, entry, 0, 0.7, 32)
    (folder / "model.safetensors").write_bytes(b"123456")  # retrained weights
    assert results.settings_key(first) != results.settings_key(results.episode_settings(spec, entry, 0, 0.7, 48))
    other_format = SuiteEntry(entry.env_id, 2, {"max_steps": 8, "action_format": "json"})
    assert results.episode_settings("random", other_format, 0, 0.7, 48)["action_format"] == "json"


def test_a_suite_skips_an_environment_whose_data_is_missing(tmp_path) -> None:
    suite = Suite("test", (
        SuiteEntry("agentgym/ALFWorld-v0", tasks=1, kwargs={"data": str(tmp_path / "no-games")}),
        SuiteEntry("agentgym/TextCraft-v0", tasks=1),
    ))
    rows = run_leaderboard(suite, ["expert"], tmp_path / "out", progress=False)
    assert [r["environment"] for r in rows] == ["agentgym/TextCraft-v0"]
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "skipped agentgym/ALFWorld-v0" in markdown


def test_episodes_keep_their_transcripts_and_load_as_a_hugging_face_dataset(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    run_leaderboard(TEXTCRAFT, ["expert", "random"], tmp_path, progress=False)
    episodes = lines(tmp_path / "episodes.jsonl")
    expert = next(e for e in episodes if e["policy"] == "expert")
    transcript = expert["transcript"]
    assert transcript["instruction"] and transcript["first_observation"]
    assert len(transcript["turns"]) == expert["steps"]
    last = transcript["turns"][-1]
    assert last["reward"] == 1.0 and last["action"] and last["parse_error"] is None and last["observation"]
    assert sum(t["reward"] for t in transcript["turns"]) == expert["return"]
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "leaderboard", "--merge", str(tmp_path / "episodes.jsonl"),
         "--out", str(tmp_path / "merged"), "--hf-dataset", str(tmp_path / "hf")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    dataset = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(dataset) == len(episodes)
    row = next(r for r in dataset if r["policy"] == "expert")
    assert len(row["transcript"]["turns"]) == row["steps"] and json.loads(row["settings"])["seed"] == 0


def test_the_chart_shows_zero_bars_and_colours_each_policys_error_bars(tmp_path) -> None:
    rows = run_leaderboard(TEXTCRAFT, ["expert", "random"], tmp_path, progress=False)
    by = {r["policy"]: r for r in rows}
    random_rate = by["random"]["success_rate"]
    fig = report.chart_figure([r for r in rows if r["level"] == "environment"], "test")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "100%" in labels and f"{random_rate:.0%}" in labels
    colours = {tuple(c.get_color()[0][:3]) for c in ax.collections}  # the error bars
    assert len(colours) == 2
    assert len(ax.lines) >= 2  # a marker at 0 for every bar, visible even when the bar has no length


def test_the_progress_bar_names_the_policy_and_the_environment(tmp_path, capsys) -> None:
    run_leaderboard(TEXTCRAFT, ["random"], tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "test: random" in err and "TextCraft-v0" in err


def test_a_bad_policy_or_id_fails_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(PolicyError, match="unknown policy"):
        run_leaderboard(TEXTCRAFT, ["expert", "genius"], tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(SuiteError, match="did you mean 'agentgym/TextCraft-v0'"):
        run_leaderboard(Suite("t", (SuiteEntry("TextCraft-v0", 1),)), ["expert"], tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(str(tmp_path / "missing.json"))


def test_results_lines_that_are_not_episode_records_are_set_aside(tmp_path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"policy": "x"}\n[1, 2]\n{"policy": "expert", "env_id": "e", "task_index": "a", "sample": 0}\n')
    with pytest.warns(UserWarning, match="3 line"):
        loaded = results.load_results([path])
    assert loaded.records == [] and loaded.set_aside == 3


def test_the_batch_path_gives_the_same_results_as_the_sequential_path_for_a_greedy_policy(tmp_path) -> None:
    import torch

    from agentgym_envs.models import smollm2_tokenizer
    from trl_plugins.models import tiny_model

    folder = tmp_path / "tiny"
    tokenizer = smollm2_tokenizer()
    model = tiny_model(tokenizer, seed=0, initializer_range=0.1)
    with torch.no_grad():  # newlines just likely enough that some replies stop after a few words, some at once
        model.get_output_embeddings().weight[tokenizer("\n", add_special_tokens=False)["input_ids"][0]] *= 1.95
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    suite = Suite(
        "test",
        (
            SuiteEntry("agentgym/TextCraft-v0", tasks=2, kwargs={"max_steps": 3}),
            SuiteEntry("agentgym/TextWorld-w2-o3-q4-v0", tasks=2, kwargs={"max_steps": 3}),
        ),
        samples=2,
    )
    spec = f"hf:{folder}"
    kwargs = dict(progress=False, temperature=0.0, max_new_tokens=12)
    run_leaderboard(suite, [spec], tmp_path / "batch", batch=True, **kwargs)
    run_leaderboard(suite, [spec], tmp_path / "sequential", batch=False, **kwargs)
    fields = ("won", "return", "steps", "invalid_actions", "truncated", "task_id", "seed")

    def outcomes(name):
        records = lines(tmp_path / name / "episodes.jsonl")
        return {(r["env_id"], r["task_index"], r["sample"]): tuple(r[f] for f in fields) for r in records}

    batch, sequential = outcomes("batch"), outcomes("sequential")
    assert len(batch) == 8 and batch == sequential
    assert any(outcome[2] == 3 for outcome in batch.values())  # steps
    # The conversations themselves are the same, reply by reply (two episodes in one batch vs one at a time).
    import gymnasium as gym

    from agentgym_envs.engine import RolloutConfig, run_episodes
    from agentgym_envs.eval.episodes import play_episode

    policy = HFPolicy(str(folder), temperature=0.0, max_new_tokens=12)
    envs = [gym.make("agentgym/TextWorld-w2-o3-q4-v0", split="test", max_steps=3) for _ in range(4)]
    backend, fmt = policy.engine_backend(single_line=True)
    config = RolloutConfig(max_new_tokens=12, max_context_tokens=8192, reply="text", first_line_only=True)
    batched = run_episodes(envs, [(envs[0].unwrapped.task_ids[i], i, i) for i in range(4)], backend, fmt, config)
    for i, ep in enumerate(batched):
        play_episode(runner._FixedTask(envs[0], envs[0].unwrapped.task_ids[i]), policy, i)
        assert ep.messages[:-1] == policy.conversation.messages
    replies = [t for ep in batched for t in ep.turns]
    assert any(t.hit_token_limit for t in replies)  # ran to max_new_tokens
    assert any(not t.hit_token_limit and t.text.strip() for t in replies)  # cut at a newline after some words
    for env in envs:
        env.close()


def test_environments_in_worker_processes_give_the_same_episodes_and_leave_no_process(tmp_path, monkeypatch) -> None:
    import psutil
    import torch

    import agentgym_envs.workers
    from agentgym_envs.models import smollm2_tokenizer
    from trl_plugins.models import tiny_model

    folder = tmp_path / "tiny"
    tokenizer = smollm2_tokenizer()
    model = tiny_model(tokenizer, seed=0, initializer_range=0.1)
    with torch.no_grad():  # newlines likely enough that replies differ in length (as in the batch-path test)
        model.get_output_embeddings().weight[tokenizer("\n", add_special_tokens=False)["input_ids"][0]] *= 1.95
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    suite = Suite(
        "test",
        (
            SuiteEntry("agentgym/ScienceWorld-v0", tasks=2, kwargs={"max_steps": 3}),  # auto: worker processes
            SuiteEntry("agentgym/TextCraft-v0", tasks=1, kwargs={"max_steps": 3}),  # auto: this process
        ),
        samples=2,
    )
    real_make_workers, started = agentgym_envs.workers.make_workers, []

    def spy(env_id, n, **kwargs):  # the real make_workers; it notes which workers and processes were started
        group = real_make_workers(env_id, n, **kwargs)
        # Holding the group keeps its finalizer from stopping the processes: only the leaderboard's close() can.
        started.append((env_id, n, kwargs["kind"], {worker.pid for worker in group}, group))
        return group

    monkeypatch.setattr(agentgym_envs.workers, "make_workers", spy)
    before = descendants()
    spec, kwargs = f"hf:{folder}", dict(progress=False, temperature=0.0, max_new_tokens=12)
    run_leaderboard(suite, [spec], tmp_path / "inprocess", env_workers="inprocess", **kwargs)
    assert started == []
    run_leaderboard(suite, [spec], tmp_path / "auto", env_workers="auto", env_processes=2, **kwargs)
    ((env_id, n, kind, pids, group),) = started
    assert (env_id, n, kind) == ("agentgym/ScienceWorld-v0", 4, "process") and len(pids) == 2
    assert psutil.Process().pid not in pids
    assert descendants() == before  # every worker process (and its JVM) is gone
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert all(worker.pid is None for worker in group)  # closed

    fields = ("won", "return", "steps", "invalid_actions", "truncated", "truncation_reason", "task_id", "seed",
              "family", "transcript")

    def outcomes(name):
        records = lines(tmp_path / name / "episodes.jsonl")
        return {(r["env_id"], r["task_index"], r["sample"]): tuple(r[f] for f in fields) for r in records}

    inprocess, workers = outcomes("inprocess"), outcomes("auto")
    assert len(inprocess) == 6 and workers == inprocess
    transcripts = [o[-1] for key, o in workers.items() if key[0] == "agentgym/ScienceWorld-v0"]
    assert all(t["instruction"] and t["turns"] for t in transcripts)  # read from the worker processes

    with pytest.raises(ValueError, match="env_workers"):
        run_leaderboard(suite, [spec], tmp_path / "bad", env_workers="threads", **kwargs)


def poisoned_copies(record: dict) -> list[str]:
    """Lines of a results file that hold a real record with all its fields, but of the wrong types.

    Each has a settings key of its own, so that none is dropped as a duplicate of the real record.
    """
    keys = iter(range(100))

    def line(**changes) -> str:
        return json.dumps({**record, "settings_key": f"poisoned-{next(keys)}", **changes})

    deep = "[" * 100_000 + "]" * 100_000
    return [
        line(settings_key=["a", "b"]),  # unhashable: an episode key cannot be built from it
        line(policy=["random"]),
        line(task_index=float("inf")),  # json.dumps writes Infinity, which json.loads reads back
        line(task_index=-1),
        line(**{"return": "lots"}),
        line(env_id=7),
        line(won="yes"),  # bool("yes") would count as a win
        line(sample=True),
        line(steps=1.5),
        line(policy="random\ud800"),  # an escaped lone surrogate, which no table can be written with
        deep,
        '{"policy": ' + deep + "}",
    ]


def test_resume_and_merge_set_aside_records_of_the_wrong_types_and_count_them(tmp_path) -> None:
    run_leaderboard(TEXTCRAFT, ["random"], tmp_path / "run", progress=False)
    path = tmp_path / "run" / "episodes.jsonl"
    good = lines(path)
    poisoned = poisoned_copies(good[0])
    beyond_suite = json.dumps({**good[0], "sample": 5, "won": True})  # valid, but TEXTCRAFT has 1 sample per task
    with path.open("ab") as handle:
        handle.write(("\n".join(poisoned) + "\n").encode())
        not_utf8 = json.dumps({**good[0], "policy": "POLICY"}).encode().replace(b"POLICY", b"\xff\xfe")
        handle.write(not_utf8 + b"\n")
        handle.write((beyond_suite + "\n").encode())
    bad = len(poisoned) + 1

    with pytest.warns(UserWarning, match=f"{bad} line"):
        loaded = results.load_results([path])
    assert loaded.set_aside == bad and loaded.duplicates == 0
    assert loaded.records == good + [json.loads(beyond_suite)]  # without a suite, any sample is an episode
    assert loaded.reasons["nested too deep"] == 2 and loaded.reasons["won is not true or false"] == 1
    assert loaded.reasons["text that is not valid Unicode"] == 2  # the escaped surrogate and the non-UTF-8 bytes
    with pytest.warns(UserWarning):
        in_suite = results.load_results([path], TEXTCRAFT)
    assert in_suite.records == good and in_suite.outside_suite == 1

    # Resume: nothing replayed, nothing crashes, the beyond-the-suite win does not count, the notes say why.
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=f"{bad} line"):
        rows = run_leaderboard(TEXTCRAFT, ["random"], tmp_path / "run", progress=False)
    assert path.read_bytes() == before
    (row,) = rows
    assert row["episodes"] == 2 and row["success_rate"] == sum(r["won"] for r in good) / 2
    markdown = (tmp_path / "run" / "leaderboard.md").read_text()
    assert f"set aside {bad} line(s) of episodes.jsonl that are not valid episode records" in markdown
    assert "left out 1 episodes in episodes.jsonl beyond this suite's tasks or samples" in markdown

    # Merge: the same lines are set aside and counted under the table; won="yes" is not a win.
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "leaderboard", "--merge", str(path), "--out", str(tmp_path / "m")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    merged = (tmp_path / "m" / "leaderboard.md").read_text()
    assert f"{bad} line(s) that are not valid episode records were set aside" in merged
    assert "merged 3 episodes from 1 file(s)" in merged


def test_a_results_file_with_only_invalid_records_merges_into_a_clear_error(tmp_path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"policy": [1], "env_id": 2}\n' + "[" * 100_000 + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "agentgym_envs.cli", "leaderboard", "--merge", str(path), "--out", str(tmp_path / "m")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "no episode records" in result.stderr and "Traceback" not in result.stderr


def test_the_old_leaderboard_module_still_imports_its_names_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="import run_leaderboard from agentgym_envs.eval.runner"):
        from agentgym_envs.eval.leaderboard import run_leaderboard as old

    assert old is run_leaderboard
    with pytest.raises(ImportError):
        from agentgym_envs.eval.leaderboard import no_such_name  # noqa: F401
