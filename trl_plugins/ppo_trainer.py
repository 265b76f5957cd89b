"""``AgentPPOTrainer``: PPO with a critic on multi-turn episodes, beside the GRPO trainer (as TRL has both).

It is :class:`~trl_plugins.trainer.AgentGRPOTrainer` -- the same rollout engine, loss hooks, loss pipeline and TRL
machinery -- with a critic: after each rollout the critic scores the batch, advantages and value targets come from
GAE (:func:`trl_plugins.ppo.compute_advantages`, at token or turn level), and the clipped value loss
(:func:`trl_plugins.ppo.clipped_value_loss`) times ``ppo.vf_coef`` is added to the policy loss.  The critic is a
:class:`~trl_plugins.ppo.ValueHead` on the policy's last hidden state (``ppo.critic="head"``) or a separate
:class:`~trl_plugins.ppo.CriticModel` (``"separate"``); either is added to the policy as a submodule, so the
trainer's optimizer trains it and checkpoints hold it.

Example:
    >>> from trl_plugins import AgentPPOConfig, AgentPPOTrainer
    >>> args = AgentPPOConfig(output_dir="runs/ppo", env_id="agentgym/TextWorld-w2-o3-q4-v0", ppo={"level": "turn"},
    ...                       num_generations=4, per_device_train_batch_size=8, max_steps=100)  # doctest: +SKIP
    >>> AgentPPOTrainer("HuggingFaceTB/SmolLM2-135M-Instruct", args=args).train()           # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import is_peft_model
from torch import nn
from trl.models.utils import disable_gradient_checkpointing

from agentgym_envs.engine import Episode
from trl_plugins.batch import model_inputs
from trl_plugins.config import AgentPPOConfig
from trl_plugins.errors import TrainerConfigError
from trl_plugins.hooks.reductions import masked_mean
from trl_plugins.ppo import CriticModel, ValueHead, clipped_value_loss, compute_advantages
from trl_plugins.scoring import plain_head_model
from trl_plugins.trainer import AgentGRPOTrainer

__all__ = ["AgentPPOTrainer"]


class AgentPPOTrainer(AgentGRPOTrainer):
    """PPO with a value head or a separate critic, GAE and a clipped value loss, on agentgym episodes.

    Args:
        model, processing_class, train_dataset, callbacks, optimizers, peft_config, loss_hooks, env_factory: as for
            :class:`~trl_plugins.trainer.AgentGRPOTrainer`.
        args: an :class:`~trl_plugins.config.AgentPPOConfig`.
        critic_model: with ``ppo.critic="separate"``, the critic's backbone: a causal LM or its base model (a
            module), or a path/id loaded with ``AutoModelForCausalLM``.  Default: a copy of the policy (required
            with PEFT, whose policy has adapter layers in it).

    Example:
        >>> trainer = AgentPPOTrainer(model, args=AgentPPOConfig(output_dir="runs/x", ppo={"critic": "separate"}),
        ...                           processing_class=tokenizer)   # doctest: +SKIP
        >>> trainer.train()                                         # doctest: +SKIP
    """

    _tag_names = ["trl", "ppo", "agentgym"]
    _name = "AgentPPO"
    config_class = AgentPPOConfig
    #: The critic lives on the policy as a submodule; the served model (vLLM) does not have it.
    vllm_weight_exclude = ("agentgym_value_head", "agentgym_critic")

    def __init__(self, model: Any, args: AgentPPOConfig | None = None, *rest: Any, critic_model: Any = None, **kwargs: Any):
        super().__init__(model, args, *rest, **kwargs)
        self.value_head: ValueHead | None = None
        self.critic: CriticModel | None = None
        if self.args.ppo.critic == "head":
            if critic_model is not None:
                raise TrainerConfigError("critic_model= needs ppo.critic='separate' (the value head shares the policy)")
            hidden_size = int(self._policy().config.get_text_config().hidden_size)
            self.value_head = self._attach(ValueHead(hidden_size), "agentgym_value_head")
        else:
            self.critic = self._attach(self._critic_from(critic_model), "agentgym_critic")

    # ---- the critic ---------------------------------------------------------------------
    def _policy(self) -> nn.Module:
        unwrapped = self.accelerator.unwrap_model(self.model)
        return unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped

    def _attach(self, module: nn.Module, name: str) -> Any:
        """Add ``module`` to the policy as a submodule, so the optimizer and checkpoints hold it."""
        policy = self._policy()
        module.to(device=next(policy.parameters()).device)  # a float32 head on a bf16 policy: small-scale regression
        policy.add_module(name, module)
        return module

    def _critic_from(self, critic_model: Any) -> CriticModel:
        if critic_model is None:
            if is_peft_model(self.accelerator.unwrap_model(self.model)):
                raise TrainerConfigError("ppo.critic='separate' with PEFT needs critic_model= (a model or a path)")
            critic_model = copy.deepcopy(self._policy())
        elif isinstance(critic_model, str):
            from transformers import AutoModelForCausalLM

            critic_model = AutoModelForCausalLM.from_pretrained(critic_model)
        return CriticModel.from_causal_lm(critic_model)

    def token_values(self, model: Any, input_ids, attention_mask, logits_to_keep: int) -> torch.Tensor:
        """The critic's value of the state before each completion token, ``(batch, logits_to_keep)``.

        With the value head, a second forward of the policy's backbone (the log-probabilities come from their own
        pass); with a separate critic, the critic's forward.
        """
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with self.accelerator.autocast():
            if self.critic is not None:
                values = self.critic(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
                )
                return values[:, -logits_to_keep - 1 : -1]
            inner = plain_head_model(model, self.accelerator)
            if inner is not None:
                backbone = getattr(inner, inner.base_model_prefix)
                hidden = backbone(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
                ).last_hidden_state
            else:
                hidden = model(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    output_hidden_states=True, use_cache=False,
                ).hidden_states[-1]
        assert self.value_head is not None
        return self.value_head(hidden[:, -logits_to_keep - 1 : -1])

    # ---- advantages -----------------------------------------------------------------------
    def episode_advantages(self, episodes: Sequence[Episode]) -> list[torch.Tensor]:
        """Placeholders: PPO's token advantages come from the critic (:meth:`ppo_targets`)."""
        return [torch.zeros(len(ep.turns)) for ep in episodes]

    def ppo_targets(self, episodes: Sequence[Episode], batch: dict[str, Any], batch_size: int):
        """Old values, GAE advantages and value targets of a fresh batch (rewards on each turn's last token)."""
        input_ids, attention_mask, logits_to_keep, mask = model_inputs(batch)
        chunks = []
        for start in range(0, input_ids.size(0), batch_size):
            sl = slice(start, start + batch_size)
            chunks.append(self.token_values(self.model, input_ids[sl], attention_mask[sl], logits_to_keep).float())
        old_values = torch.cat(chunks, 0) * mask
        n_turns = max(1, max(len(ep.turns) for ep in episodes))
        rewards = torch.zeros(len(episodes), n_turns, device=input_ids.device)
        for i, ep in enumerate(episodes):
            rewards[i, : len(ep.turns)] = torch.tensor(ep.step_rewards, dtype=torch.float32)
        # Whitening is over every process's tokens (GAE itself runs along each episode, in its process).
        advantages, returns = compute_advantages(
            old_values, rewards, batch["turn_ids"], mask, self.args.ppo, ranks=self.ranks
        )
        return old_values, advantages, returns

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            batch["old_values"], batch["advantages"], batch["returns"] = self.ppo_targets(
                self.last_episodes, batch, batch_size
            )
        return batch

    # ---- loss ---------------------------------------------------------------------------
    def token_scores(self, model: Any, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The policy's scores and the critic's ``"values"`` of each completion token."""
        scores = super().token_scores(model, inputs)
        input_ids, attention_mask, logits_to_keep, _ = model_inputs(inputs)
        scores["values"] = self.token_values(model, input_ids, attention_mask, logits_to_keep)
        return scores

    def loss_from_scores(self, inputs: dict[str, Any], scores: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = super().loss_from_scores(inputs, scores)
        mode = "train" if self.model.training else "eval"
        accumulation = self._accumulation_steps() if mode == "train" else 1
        mask = model_inputs(inputs)[3]
        values = scores["values"]
        ranks = self.ranks
        # This process's share of the mean over every process's tokens (data-parallel averaging makes it global).
        value_loss, value_clip = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.ppo.value_clip, ranks=ranks
        )
        metrics = self._metrics[mode]
        metrics["value_loss"].append(float(ranks.sum(value_loss) / ranks.num_processes))
        metrics["value_clip_fraction"].append(value_clip)
        metrics["value_mean"].append(float(masked_mean(values.detach().float(), mask, ranks.sum)))
        return loss + self.args.ppo.vf_coef * value_loss / accumulation
