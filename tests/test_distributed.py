"""Two processes (``accelerate launch``, gloo on CPU) train like one process holding the global batch.

One launch of ``tests/distributed_check.py`` does every multi-process run (each launch costs tens of seconds); this
test replays its probes in one process and compares.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trl_plugins.models import tiny_model, tiny_tokenizer

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from distributed_check import PPO_SETTINGS, ReplayPPOTrainer, replay_probe, seeds_of  # noqa: E402


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    model_dir = root / "model"
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu on a machine without GPUs launches torchrun processes that Accelerate connects with gloo
    # (``--cpu`` would run a single process unless MPI is set up).
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
        str(TESTS / "distributed_check.py"), "--model", str(model_dir), "--out", str(root),
    ]  # fmt: skip
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    records = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return model_dir, root, records


def test_two_processes_run_with_gloo_and_distinct_reproducible_seeds(two_process_run):
    _, _, records = two_process_run
    assert [r["rank"] for r in records] == [0, 1] and all(r["world"] == 2 for r in records)
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" for r in records)
    for record in records:
        torch_seed, aepo_draw = seeds_of(record)
        assert record["torch_seed"] == record["resumed_torch_seed"] == torch_seed
        assert record["aepo_draw"] == aepo_draw
    assert records[0]["torch_seed"] != records[1]["torch_seed"]
    assert records[0]["aepo_draw"] != records[1]["aepo_draw"]


def test_a_checkpoint_saved_by_two_processes_resumes(two_process_run):
    _, root, records = two_process_run
    assert (root / "run" / "checkpoint-1").is_dir()
    for record in records:
        assert record["first_epo_count"] == 1
        assert record["resumed_global_step"] == 2
        assert record["resumed_epo_count"] == 2  # the history of step 1 came back from the checkpoint


def test_aepo_branching_refuses_a_group_split_across_processes(two_process_run):
    _, _, records = two_process_run
    assert all("whole groups per process" in (r["split_branching_error"] or "") for r in records)


@pytest.mark.parametrize("name", ["grpo", "gigpo", "aepo"])
def test_two_processes_give_the_advantages_loss_and_gradients_of_one(two_process_run, tmp_path, name):
    model_dir, _, records = two_process_run
    parts = [r[name] for r in records]
    groups = [{ep.group for ep in part["episodes"]} for part in parts]
    if name != "aepo":
        assert groups[0] & groups[1], "the probe should split a group across the processes"
    else:
        assert not groups[0] & groups[1]
    overrides = {"advantage_estimator": name} if name != "aepo" else {}  # the replay does not branch: no aepo.branching
    one = replay_probe(str(model_dir), tmp_path, parts[0], [ep for p in parts for ep in p["episodes"]], **overrides)

    # Advantages: each process holds its slice of the global batch's (a split group included).
    two = parts[0]["advantages"] + parts[1]["advantages"]
    assert [len(a) for a in two] == [len(a) for a in one["advantages"]]
    assert sum(two, []) == pytest.approx(sum(one["advantages"], []), abs=1e-5)
    assert any(v != 0 for v in sum(one["advantages"], []))
    # Loss: the processes' losses average to the one-process loss (DDP averages their gradients).
    assert (parts[0]["loss"] + parts[1]["loss"]) / 2 == pytest.approx(one["loss"], rel=1e-4, abs=1e-6)
    # Gradients after the all-reduce: the same in both processes and equal to one process's.
    assert parts[0]["grads"].keys() == one["grads"].keys()
    for key, grad in one["grads"].items():
        torch.testing.assert_close(parts[0]["grads"][key], parts[1]["grads"][key])
        # float32 sums in another order (and DDP's fused LM head path): relative to the tensor's largest entry
        torch.testing.assert_close(parts[0]["grads"][key], grad, rtol=1e-3, atol=1e-4 * float(grad.abs().max()) + 1e-8)
    # The logged entropy of each turn: over both processes' tokens.
    assert parts[0]["turn_entropy"] == parts[1]["turn_entropy"]
    assert parts[0]["turn_entropy"] == pytest.approx(one["turn_entropy"], rel=1e-4)
    assert len(one["turn_entropy"]) > 1
    # EPO's history: the step's mean entropy over both processes' tokens.
    assert parts[0]["epo_history"] == parts[1]["epo_history"]
    history = parts[0]["epo_history"]["history"]
    assert history["count"] == one["epo_history"]["history"]["count"]
    assert history["total"] == pytest.approx(one["epo_history"]["history"]["total"], rel=1e-5)


def test_two_ppo_processes_whiten_and_average_the_value_loss_over_the_global_batch(two_process_run, tmp_path):
    model_dir, _, records = two_process_run
    parts = [r["ppo"] for r in records]
    episodes = [ep for p in parts for ep in p["episodes"]]
    one = replay_probe(str(model_dir), tmp_path, parts[0], episodes, cls=ReplayPPOTrainer, **PPO_SETTINGS)

    # GAE runs along each episode; the whitening is over both processes' tokens, so each process's advantages are
    # its slice of the one-process batch's (whitened alone, a process's own tokens would have mean 0 and std 1).
    returns = [x for part in parts for row in part["returns"] for x in row]
    assert returns == pytest.approx([x for row in one["returns"] for x in row], rel=1e-4, abs=1e-5)
    two = parts[0]["token_advantages"] + parts[1]["token_advantages"]
    assert [len(a) for a in two] == [len(a) for a in one["token_advantages"]]
    assert sum(two, []) == pytest.approx(sum(one["token_advantages"], []), rel=1e-4, abs=1e-4)
    own = torch.tensor(sum(parts[0]["token_advantages"], []))
    assert abs(float(own.mean())) > 1e-3 or abs(float(own.std()) - 1) > 1e-3, "the probe should not whiten per process"
    # Policy + value loss: the processes' shares average to the one-process loss; the all-reduced gradients (the
    # value head's included) are one process's.
    assert (parts[0]["loss"] + parts[1]["loss"]) / 2 == pytest.approx(one["loss"], rel=1e-4, abs=1e-6)
    assert any("agentgym_value_head" in key for key in one["grads"])
    assert parts[0]["grads"].keys() == one["grads"].keys()
    for key, grad in one["grads"].items():
        torch.testing.assert_close(parts[0]["grads"][key], parts[1]["grads"][key])
        torch.testing.assert_close(parts[0]["grads"][key], grad, rtol=1e-3, atol=1e-4 * float(grad.abs().max()) + 1e-8)
