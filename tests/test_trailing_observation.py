"""The final observation (environment tokens after an episode's last action) is not scored: it carries no loss and,
the model being causal, changes nothing before it."""

from __future__ import annotations

import torch
from accelerate import Accelerator

from agentgym_envs.engine import Episode, Turn
from trl_plugins.batch import episode_samples, model_inputs, pad_samples
from trl_plugins.models import tiny_model, tiny_tokenizer
from trl_plugins.scoring import token_logps_and_entropy


def _episode(final_observation: list[int]) -> Episode:
    ep = Episode(group=0, task_id=1, seed=0, prompt_ids=[5, 6, 7], messages=[])
    ep.turns.append(Turn([8, 9], "go", 0.0, "ok", "s0", env_ids=[10, 11, 12], logprobs=[-0.5, -0.25]))
    ep.turns.append(Turn([13], "go", 1.0, "won", "s1", env_ids=final_observation, logprobs=[-0.125]))
    return ep


def test_samples_end_at_the_last_action_and_keep_every_action_token():
    with_final, without = (
        episode_samples([_episode(ids)], [torch.tensor([1.0, 2.0])], with_sampling_logps=True)[0]
        for ids in ([14, 15, 16, 17], [])
    )
    assert with_final == without
    assert with_final["completion"] == [8, 9, 10, 11, 12, 13]
    assert with_final["turn_ids"] == [0, 0, -1, -1, -1, 1]
    assert with_final["advantages"] == [1.0, 1.0, 0.0, 0.0, 0.0, 2.0]
    assert with_final["sampling_logps"] == [-0.5, -0.25, 0.0, 0.0, 0.0, -0.125]


def test_scores_and_gradients_of_the_actions_do_not_depend_on_the_final_observation():
    torch.manual_seed(0)
    model = tiny_model(tiny_tokenizer())
    accelerator = Accelerator(cpu=True)
    ep = _episode([14, 15, 16, 17])
    ids, mask, _ = ep.completion()  # the whole episode, final observation included
    full = pad_samples(
        [
            {
                "prompt": ep.prompt_ids,
                "completion": ids,
                "mask": mask,
                "turn_ids": [0] * len(ids),
                "advantages": [0.0] * len(ids),
            }
        ],
        0,
        "cpu",
    )
    trimmed = pad_samples(episode_samples([ep], [torch.tensor([1.0, 1.0])]), 0, "cpu")
    results = []
    for batch in (full, trimmed):
        model.zero_grad()
        input_ids, attention, keep, loss_mask = model_inputs(batch)
        logps, _ = token_logps_and_entropy(model, input_ids, attention, keep, loss_mask, accelerator=accelerator)
        actions = logps[loss_mask.bool()]
        actions.sum().backward()
        results.append((actions.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (logps_full, grads_full), (logps_trimmed, grads_trimmed) = results
    assert logps_full.shape == (3,)
    torch.testing.assert_close(logps_full, logps_trimmed)
    for a, b in zip(grads_full, grads_trimmed, strict=True):
        torch.testing.assert_close(a, b)
    assert trimmed["completion_ids"].shape[1] == full["completion_ids"].shape[1] - 4
