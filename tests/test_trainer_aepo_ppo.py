"""AEPO's dynamic entropy-balanced rollout on a real env (DeepSearch) with a tiny real transformer."""

from __future__ import annotations

import random

import gymnasium as gym
import pytest
import torch

import agentgym_envs  # noqa: F401 - registers the ids
from agentgym_envs.core import SupportsSnapshot, as_text_env
from agentgym_envs.engine import ChatFormat, RolloutConfig
from agentgym_envs.generation.sampling import sample_batch
from trl_plugins.aepo import AEPOBranchConfig, BranchingStats, action_entropies, run_branching_episodes
from trl_plugins.models import tiny_model, tiny_tokenizer

K = 4


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _replay(env, ep) -> list[str]:
    """Observations a fresh environment gives for the episode's recorded actions."""
    env.reset(seed=ep.seed, options={"task": ep.task_id})
    return [env.step(turn.text)[0] for turn in ep.turns]


def test_aepo_branching_shares_prefix_then_continues_independently(tok):
    torch.manual_seed(0)
    model = tiny_model(tok).eval()
    fmt = ChatFormat(tok)
    envs = [gym.make("agentgym/DeepSearch-h1-v0", split="train", max_steps=6) for _ in range(2 * K)]
    tasks_ids = list(as_text_env(envs[0]).task_ids)[:2]
    tasks = [(tasks_ids[g], g, g) for g in range(2) for _ in range(K)]

    def generate(contexts, max_new_tokens):
        return sample_batch(model, contexts, max_new_tokens, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id)

    def entropy(contexts, actions):
        return action_entropies(model, contexts, actions, pad_id=tok.pad_token_id)

    config = RolloutConfig(max_turns=4, max_new_tokens=12)
    stats = BranchingStats()
    episodes = run_branching_episodes(
        envs, tasks, generate, fmt, config, entropy_fn=entropy, branching=AEPOBranchConfig(p_branch=0.05, seed=0),
        stats=stats, rng=random.Random(0),
    )

    # Every group still has exactly k samples: m independent ones plus branches.
    assert len(episodes) == 2 * K
    for g in range(2):
        assert sum(ep.group == g for ep in episodes) == K
    assert stats.branches > 0 and stats.branch_decisions >= stats.branches
    assert stats.independent + stats.branches == 2 * K
    assert len(stats.root_entropy) == 2 and len(stats.tool_entropy) == 2

    branched = [ep for ep in episodes if ep.parent is not None]
    assert len(branched) == stats.branches
    fresh = gym.make("agentgym/DeepSearch-h1-v0", split="train", max_steps=6)
    for ep in branched:
        parent = episodes[ep.parent]
        t = ep.branch_turn
        assert t >= 1 and ep.group == parent.group and ep.task_id == parent.task_id
        # The shared prefix is token-for-token the parent's, up to the branching step ...
        assert ep.prompt_ids == parent.prompt_ids
        shared = sum(len(x.action_ids) + len(x.env_ids) for x in parent.turns[:t])
        assert ep.completion()[0][:shared] == parent.completion()[0][:shared]
        assert [x.text for x in ep.turns[:t]] == [x.text for x in parent.turns[:t]]
        # ... and from there each samples its own action in its own copy of the environment state:
        # replaying either episode from a fresh reset reproduces exactly the observations it saw.
        assert len(ep.turns) > t
        assert _replay(fresh, ep) == [x.observation for x in ep.turns]
        assert _replay(fresh, parent) == [x.observation for x in parent.turns]
    # At least one branch took a different action than its parent at the branching step.
    assert any(
        len(episodes[ep.parent].turns) <= ep.branch_turn
        or ep.turns[ep.branch_turn].action_ids != episodes[ep.parent].turns[ep.branch_turn].action_ids
        for ep in branched
    )
    for env in [*envs, fresh]:
        env.close()


def test_trainer_with_aepo_branching_logs_branch_counts(tmp_path, tok):
    from trainer_toys import toy_run_settings

    from trl_plugins.config import AgentGRPOConfig
    from trl_plugins.trainer import AgentGRPOTrainer

    args = AgentGRPOConfig(
        **toy_run_settings(
            tmp_path,
            env_id="agentgym/DeepSearch-h1-v0",
            env_kwargs={"max_steps": 4},
            max_tasks=2,
            max_steps=1,
            max_new_tokens_per_turn=8,
            max_context_tokens=4096,
            aepo={"branching": {"p_branch": 0.05}},
            loss_hooks=["aepo"],
        )
    )
    trainer = AgentGRPOTrainer(tiny_model(tok), args=args, processing_class=tok)
    try:
        trainer.train()
    finally:
        trainer.close_envs()
    logs = [entry for entry in trainer.state.log_history if "aepo/branches" in entry]
    assert logs and logs[0]["aepo/branches"] > 0
    assert logs[0]["aepo/independent_rollouts"] + logs[0]["aepo/branches"] == 4
    assert any(ep.parent is not None for ep in trainer.last_episodes)


@pytest.mark.parametrize(("level", "critic"), [("token", "head"), ("turn", "head"), ("token", "separate")])
def test_trainer_ppo_trains_value_head_and_policy(tmp_path, tok, level, critic):
    from trainer_toys import letter_env, toy_run_settings

    from trl_plugins.config import AgentPPOConfig
    from trl_plugins.ppo_trainer import AgentPPOTrainer

    args = AgentPPOConfig(
        **toy_run_settings(tmp_path, learning_rate=1e-2, ppo={"level": level, "critic": critic}, beta=0.0)
    )
    model = tiny_model(tok)
    trainer = AgentPPOTrainer(model, args=args, processing_class=tok, env_factory=lambda: letter_env(target=2))
    head = trainer.value_head if critic == "head" else trainer.critic.value_head
    assert head is not None and any(p is head.summary.weight for p in trainer.model.parameters())
    critic_names = ("value_head", "agentgym_critic")
    policy_before = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if not any(c in n for c in critic_names)
    }
    head_before = head.summary.weight.detach().clone()
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "value_loss" in entry]
    assert len(logs) == 2 and all(entry["value_loss"] >= 0 for entry in logs)
    assert "value_clip_fraction" in logs[0]
    assert not torch.equal(head.summary.weight.detach(), head_before)  # the critic learns
    changed = [n for n, p in trainer.model.named_parameters() if n in policy_before and not torch.equal(p, policy_before[n])]
    assert changed  # and so does the policy


def test_aepo_branching_deepcopies_envs_without_snapshot(tok):
    from trainer_toys import letter_env

    torch.manual_seed(1)
    model = tiny_model(tok).eval()
    envs = [letter_env(target=9, max_steps=4) for _ in range(K)]
    assert not isinstance(envs[0].unwrapped, SupportsSnapshot)

    def generate(contexts, max_new_tokens):
        return sample_batch(model, contexts, max_new_tokens, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id)

    def entropy(contexts, actions):
        return action_entropies(model, contexts, actions, pad_id=tok.pad_token_id)

    config = RolloutConfig(max_turns=4, max_new_tokens=4, max_context_tokens=600)
    stats = BranchingStats()
    episodes = run_branching_episodes(
        envs, [(0, 3, 0)] * K, generate, ChatFormat(tok), config, entropy_fn=entropy,
        branching=AEPOBranchConfig(p_branch=0.0), stats=stats,
    )
    assert len(episodes) == K and stats.branches > 0
    fresh = letter_env(target=9, max_steps=4)
    for ep in episodes:  # points carried over correctly into each copy: replays match
        assert _replay(fresh, ep) == [x.observation for x in ep.turns]


def test_grpo_config_points_ppo_users_at_the_ppo_trainer(tmp_path, tok):
    from trl_plugins.config import AgentGRPOConfig, AgentPPOConfig
    from trl_plugins.errors import TrainerConfigError
    from trl_plugins.trainer import AgentGRPOTrainer

    with pytest.raises(TrainerConfigError, match="AgentPPOConfig"):
        AgentGRPOConfig(output_dir=str(tmp_path), advantage_estimator="ppo")
    with pytest.raises(TrainerConfigError, match="AgentGRPOConfig"):
        AgentPPOConfig(output_dir=str(tmp_path), advantage_estimator="rloo")
    with pytest.raises(TrainerConfigError, match="context_mode"):
        AgentPPOConfig(output_dir=str(tmp_path), context_mode="stepwise")
    # The old spelling still selects the critic's advantages.
    assert AgentPPOConfig(output_dir=str(tmp_path), advantage_estimator="ppo").advantage_estimator == "gae"
    with pytest.raises(TypeError, match="AgentPPOTrainer"):
        AgentGRPOTrainer(tiny_model(tok), args=AgentPPOConfig(output_dir=str(tmp_path)), processing_class=tok)
