"""``async_rollouts``: batches played in a background thread with bounded staleness (trl_plugins.async_rollouts).

Real pieces throughout: a tiny random Llama, the toy LetterEnv (and TextCraft in worker processes for shutdown).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from datasets import Dataset
from trainer_toys import LetterEnv, letter_env, toy_run_settings

from agentgym_envs.wrappers import apply_reward_wrappers
from trl_plugins.async_rollouts import BackgroundRolloutError, check_one_process, start_async_rollouts
from trl_plugins.config import AgentGRPOConfig
from trl_plugins.errors import TrainerConfigError
from trl_plugins.models import tiny_model, tiny_tokenizer
from trl_plugins.trainer import AgentGRPOTrainer
from trl_plugins.vllm_colocate import importance_sampling_ratio

THREAD = "agentgym-async-rollouts"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def make_args(tmp_path, **overrides) -> AgentGRPOConfig:
    return AgentGRPOConfig(**toy_run_settings(tmp_path, **{"learning_rate": 1e-2, **overrides}))


class RecordingTrainer(AgentGRPOTrainer):
    """Keeps every generation batch it trained on (with the global step it was taken at)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.batches = [*getattr(self, "batches", []), (int(self.state.global_step), list(self.last_episodes), out)]
        return out


def trainer_for(tok, args, env=None, cls=RecordingTrainer, **kw):
    return cls(tiny_model(tok), args=args, processing_class=tok,
               env_factory=env or (lambda: letter_env(target=2, max_steps=3)), **kw)


def background_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def test_max_staleness_zero_is_the_synchronous_trainer(tok, tmp_path):
    runs = {}
    for name, extra in (("sync", {}), ("async0", {"async_rollouts": True, "max_staleness": 0})):
        trainer = trainer_for(tok, make_args(tmp_path / name, max_steps=3, **extra))
        trainer.train()
        runs[name] = trainer
    sync, async0 = runs["sync"], runs["async0"]
    assert len(sync.batches) == len(async0.batches) == 3
    for (step_a, eps_a, out_a), (step_b, eps_b, out_b) in zip(sync.batches, async0.batches, strict=True):
        assert step_a == step_b
        assert [(e.task_id, e.seed, e.completion()) for e in eps_a] == [(e.task_id, e.seed, e.completion()) for e in eps_b]
        assert all(e.info["policy_version"] == step_b for e in eps_b)  # played with the learner's current weights
        assert set(out_a) == set(out_b) and "importance_sampling_ratio" not in out_b
        for key, value in out_a.items():
            assert torch.equal(value, out_b[key]), key
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (sync, async0)]
    assert losses[0] == losses[1]
    for (name, p), q in zip(sync.model.named_parameters(), async0.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert background_threads() == []


def test_staleness_is_bounded_recorded_and_corrected_for(tok, tmp_path):
    # reuse_sampling_logprobs=False: the batch carries the old log-probs and the ratio (with reuse they come from
    # the loss's own forward, the path tests/test_reuse_sampling_logprobs.py checks for vLLM)
    trainer = trainer_for(tok, make_args(tmp_path, max_steps=4, async_rollouts=True, max_staleness=1,
                                         vllm_importance_sampling_mode="token_truncate",
                                         reuse_sampling_logprobs=False))
    trainer.train()
    staleness = [h["async/staleness"] for h in trainer.state.log_history if "loss" in h]
    assert len(staleness) == 4 and max(staleness) == 1 and min(staleness) >= 0
    stale = 0
    for step, episodes, out in trainer.batches:
        versions = {e.info["policy_version"] for e in episodes}
        assert len(versions) == 1 and 0 <= step - versions.pop() <= 1
        mask = out["completion_mask"] * out["tool_mask"]
        expected = importance_sampling_ratio(
            out["old_per_token_logps"], out["sampling_per_token_logps"], mask, mode="token_truncate", clip_max=3.0
        )
        assert torch.equal(out["importance_sampling_ratio"], expected)
        if step > episodes[0].info["policy_version"]:
            stale += 1
            assert not torch.allclose(expected[mask.bool()], torch.ones(())), "an older policy yet no correction"
    assert stale >= 2
    # The ratio weighs the loss: the same batch with ratios of 1 gives another loss.
    out = trainer.batches[-1][2]
    trainer.model.eval()
    with torch.no_grad():
        weighted = trainer.compute_loss(trainer.model, out)
        plain = trainer.compute_loss(trainer.model, {**out, "importance_sampling_ratio": torch.ones_like(
            out["importance_sampling_ratio"])})
    assert not torch.isclose(weighted, plain)
    assert background_threads() == []


def test_stale_batches_are_dropped_and_counted(tok, tmp_path):
    trainer = trainer_for(tok, make_args(tmp_path, async_rollouts=True, max_staleness=1))
    engine = start_async_rollouts(trainer)
    try:
        first, staleness = engine.next_batch(version=0)
        assert (first.index, first.version, staleness) == (0, 0, 0)
        deadline = time.monotonic() + 60
        while engine.queued < 1 and time.monotonic() < deadline:  # batch 1, played ahead with version 0
            time.sleep(0.02)
        assert engine.queued == 1
        # A learner three steps on: batch 1 is too old and is dropped; the producer, seeing the learner wait,
        # plays batch 2 at once with the learner's weights.
        batch, staleness = engine.next_batch(version=3)
        assert (batch.index, batch.version, staleness) == (2, 3, 0)
        assert engine.dropped_episodes == 4
        assert all(e.info["policy_version"] == 3 for e in batch.episodes)
    finally:
        engine.close()
    assert background_threads() == []


def test_environments_are_built_in_the_learners_thread_before_the_producer_starts(tok, tmp_path):
    trainer = trainer_for(tok, make_args(tmp_path, async_rollouts=True, max_staleness=1))
    built_by: list[str] = []
    build = trainer.env_pool.factory

    def recording_build():
        built_by.append(threading.current_thread().name)
        return build()

    trainer.env_pool.factory = recording_build
    engine = start_async_rollouts(trainer)
    try:
        assert len(trainer.env_pool.envs) == 4  # one generation batch's environments, before any batch plays
        engine.next_batch(version=0)
        engine.next_batch(version=1)
    finally:
        engine.close()
    # Worker processes (env_workers="process") are started where the environments are built: never in the producer.
    assert built_by and set(built_by) == {threading.main_thread().name}


class CrashingLetterEnv(LetterEnv):
    """LetterEnv whose simulator raises on every action it executes (an unparsable reply is not executed)."""

    def _execute(self, command):
        raise RuntimeError("the simulator crashed")


def test_a_crash_in_a_background_episode_is_a_truncated_episode(tok, tmp_path):
    env = lambda: apply_reward_wrappers(CrashingLetterEnv(target=3, max_steps=3), reward="dense")  # noqa: E731
    trainer = trainer_for(tok, make_args(tmp_path, max_steps=3, async_rollouts=True, max_staleness=1), env=env)
    trainer.train()
    assert trainer.state.global_step == 3
    ahead = [e for step, eps, _ in trainer.batches for e in eps if e.info["policy_version"] < step]
    crashed = [e for e in ahead if e.truncation_reason == "crash"]
    assert crashed and all("the simulator crashed" in e.info["error"] for e in crashed)
    assert all(e.truncation_reason in ("crash", "step_limit") for _, eps, _ in trainer.batches for e in eps)
    assert background_threads() == []


def test_a_failing_producer_raises_in_the_learner(tok, tmp_path):
    rows = Dataset.from_dict({"task_index": [99], "seed": [1]})  # LetterEnv has 8 train tasks
    trainer = trainer_for(tok, make_args(tmp_path, max_steps=2, async_rollouts=True), train_dataset=rows)
    with pytest.raises(BackgroundRolloutError, match="IndexError") as raised:
        trainer.train()
    assert isinstance(raised.value.__cause__, IndexError)
    trainer.close_envs()
    assert background_threads() == []


def test_close_leaves_no_thread_or_process(tok, tmp_path):
    from process_checks import descendants

    before = descendants()
    args = make_args(
        tmp_path, env_id="agentgym/TextCraft-v0", env_workers="process", env_processes=2, max_steps=2,
        max_turns=3, max_new_tokens_per_turn=4, max_context_tokens=4000, async_rollouts=True, max_staleness=1,
    )
    trainer = AgentGRPOTrainer(tiny_model(tok), args=args, processing_class=tok)
    trainer.train()  # its end closes the producer, then the environments
    assert background_threads() == [] and trainer.async_rollouts is None
    # Closed while a batch plays ahead: the producer stops at its next generation call.
    engine = start_async_rollouts(trainer)
    trainer.async_rollouts = engine
    engine.next_batch(version=0)
    trainer.close_envs()
    assert background_threads() == [] and trainer.async_rollouts is None
    deadline = time.monotonic() + 10
    while descendants() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert descendants() <= before, "worker processes left after close_envs()"


def test_bad_settings_fail_with_one_line_errors(tmp_path):
    with pytest.raises(TrainerConfigError, match="max_staleness must be an integer >= 0"):
        make_args(tmp_path, async_rollouts=True, max_staleness=-1)
    with pytest.raises(TrainerConfigError, match="sampler='kv'"):
        make_args(tmp_path, async_rollouts=True, sampler="generate")
    # Several processes would each drop stale batches on their own timing and train on different batches.
    with pytest.raises(TrainerConfigError, match="async_rollouts=True runs in one process, not 2"):
        check_one_process(True, 2)
    check_one_process(True, 1)
    check_one_process(False, 2)
