"""Token-exact rollouts: sequences equal the chat template of the whole conversation; masks; limits."""

from __future__ import annotations

import pytest
import torch
from trainer_toys import LetterEnv, letter_env

from agentgym_envs.engine import ChatFormat, Episode, RolloutConfig, episode_metrics, run_episodes
from trl_plugins.models import smollm2_tokenizer, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def smol_tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def tiny_tok():
    return tiny_tokenizer()


def scripted(tokenizer, words):
    """A generator that 'samples' canonical tokens of fixed replies (the model is not under test here)."""
    calls = {"n": 0}

    def generate(contexts, max_new_tokens):
        word = words[calls["n"] % len(words)]
        calls["n"] += 1
        ids = tokenizer(word, add_special_tokens=False)["input_ids"][: max_new_tokens - 1] + [tokenizer.eos_token_id]
        return [list(ids) for _ in contexts]

    return generate


@pytest.mark.parametrize("tok_name", ["smol_tok", "tiny_tok"])
def test_sequence_equals_template_of_whole_conversation(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    fmt = ChatFormat(tok)
    envs = [letter_env(target=3, max_steps=3) for _ in range(2)]
    episodes = run_episodes(envs, [(0, 1, 0), (1, 2, 1)], scripted(tok, ["hello", "nope", "tree"]), fmt, RolloutConfig())
    for ep in episodes:
        assert len(ep.turns) == 3 and ep.done
        ids, mask, turn_ids = ep.completion()
        full = ep.prompt_ids + ids
        text = fmt.render(ep.messages[:-1])  # the last observation ends the episode and is not in the sequence
        # The sampled end-of-turn token closes the last assistant message; the template adds only the rest.
        assert text.endswith(fmt.close_after_eos)
        expected = fmt.encode(text[: len(text) - len(fmt.close_after_eos)])
        assert full == expected
        assert tok.decode(full) == text[: len(text) - len(fmt.close_after_eos)]
        # Mask: exactly the sampled tokens.
        sampled = [t for turn in ep.turns for t in turn.action_ids]
        assert [t for t, m in zip(ids, mask, strict=True) if m] == sampled
        assert all(m == 0 for m, t in zip(mask, turn_ids, strict=True) if t == -1)
        assert sum(mask) == sum(len(t.action_ids) for t in ep.turns)


def test_random_model_tokens_kept_verbatim(tiny_tok):
    model = tiny_model(tiny_tok)
    fmt = ChatFormat(tiny_tok)
    seen = []

    def generate(contexts, max_new_tokens):
        batch = torch.nn.utils.rnn.pad_sequence([torch.tensor(c).flip(0) for c in contexts], batch_first=True).flip(1)
        attention = (torch.arange(batch.size(1)) >= batch.size(1) - torch.tensor([len(c) for c in contexts])[:, None]).long()
        with torch.no_grad():
            out = model.generate(input_ids=batch, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=True)
        sampled = [row[batch.size(1) :].tolist() for row in out]
        sampled = [s[: s.index(tiny_tok.eos_token_id) + 1] if tiny_tok.eos_token_id in s else s for s in sampled]
        seen.append(sampled)
        return sampled

    torch.manual_seed(0)
    envs = [letter_env(target=3, max_steps=3) for _ in range(3)]
    episodes = run_episodes(envs, [(0, 0, 0)] * 3, generate, fmt, RolloutConfig(max_new_tokens=5))
    for i, ep in enumerate(episodes):
        # Every turn's tokens are exactly what was sampled, and the context of turn t+1 is that of turn t plus them.
        for t, turn in enumerate(ep.turns):
            live = [j for j, e in enumerate(episodes) if len(e.turns) > t]
            assert turn.action_ids == seen[t][live.index(i)]
            assert turn.hit_token_limit == (tiny_tok.eos_token_id not in turn.action_ids)
        ids, mask, _ = ep.completion()
        assert sum(mask) == sum(len(t.action_ids) for t in ep.turns)


def test_limits_give_defined_outcomes(tiny_tok):
    fmt = ChatFormat(tiny_tok)
    gen = scripted(tiny_tok, ["zzz"])  # never an e: never wins
    # max_turns before the environment's own step limit
    ep = run_episodes([letter_env(max_steps=10)], [(0, 0, 0)], gen, fmt, RolloutConfig(max_turns=2))[0]
    assert (ep.truncated, ep.truncation_reason, len(ep.turns)) == (True, "max_turns", 2)
    assert ep.turns[-1].env_ids == []  # nothing is appended after the last turn
    # the environment's step limit
    ep = run_episodes([letter_env(max_steps=2)], [(0, 0, 0)], gen, fmt, RolloutConfig(max_turns=5))[0]
    assert (ep.truncated, ep.truncation_reason) == (True, "step_limit")
    # the context budget: the first turn fits, the second does not
    probe = run_episodes([letter_env(max_steps=3)], [(0, 0, 0)], gen, fmt, RolloutConfig(max_turns=1))[0]
    budget = len(probe.prompt_ids) + 8 + 4
    ep = run_episodes([letter_env(max_steps=5)], [(0, 0, 0)], gen, fmt, RolloutConfig(max_turns=5, max_new_tokens=8, max_context_tokens=budget))[0]
    assert (ep.truncated, ep.truncation_reason, len(ep.turns)) == (True, "context_budget", 1)
    assert len(ep.prompt_ids) + len(ep.completion()[0]) <= budget and ep.turns[-1].env_ids == []
    metrics = episode_metrics([ep])
    assert metrics["truncation_rate"] == 1.0 and metrics["truncated_context_budget"] == 1.0
    # an opening prompt that cannot fit ends its episode before the first turn (the run goes on)
    episodes = run_episodes([letter_env(), letter_env()], [(0, 0, 0), (1, 0, 1)], gen, fmt, RolloutConfig(max_context_tokens=10))
    for ep in episodes:
        assert (ep.done, ep.truncated, ep.truncation_reason, ep.turns) == (True, True, "context_budget", [])
        assert "max_context_tokens=10" in ep.info["error"] and 1 <= len(ep.prompt_ids) <= 10


def test_invalid_action_is_an_in_episode_outcome(tiny_tok):
    fmt = ChatFormat(tiny_tok)
    ep = run_episodes([letter_env(max_steps=2)], [(0, 0, 0)], scripted(tiny_tok, ["two\nlines"]), fmt, RolloutConfig())[0]
    assert ep.turns[0].parse_error is not None
    assert episode_metrics([ep])["invalid_action_rate"] == 1.0


def test_stepwise_context_holds_opening_and_last_k_turns(tiny_tok):
    fmt = ChatFormat(tiny_tok)
    cfg = RolloutConfig(context_mode="stepwise", history_turns=1, max_turns=3)
    ep = run_episodes([letter_env(target=9, max_steps=3)], [(0, 0, 0)], scripted(tiny_tok, ["a", "b", "c"]), fmt, cfg)[0]
    assert len(ep.turns) == 3
    t0, t1, t2 = ep.turns
    assert t0.context_ids == ep.prompt_ids
    assert t1.context_ids == ep.prompt_ids + t0.action_ids + t0.env_ids
    assert t2.context_ids == ep.prompt_ids + t1.action_ids + t1.env_ids  # turn 0 dropped from the window


def test_non_prefix_preserving_template_is_rejected(tiny_tok):
    tok = tiny_tokenizer()
    # Renders only the last message: earlier messages change once later ones follow.
    tok.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
    with pytest.raises(ValueError, match="prefix-preserving"):
        ChatFormat(tok)


def test_episode_completion_layout():
    ep = Episode(group=0, task_id=0, seed=0, prompt_ids=[1], messages=[])
    assert ep.completion() == ([], [], [])
    assert isinstance(LetterEnv().reset(seed=0)[0], str)


def test_kv_sampler_matches_teacher_forced_argmax(tiny_tok):
    """Greedy sampling with cache pruning equals the argmax of full forwards on each finished sequence."""
    from agentgym_envs.generation.sampling import sample_batch

    torch.manual_seed(3)
    model = tiny_model(tiny_tok, hidden_size=64, initializer_range=0.5)  # a peaky random model: varied argmax
    model.eval()
    contexts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [30, 31, 32]]
    free = sample_batch(model, contexts, 10, eos_ids=[tiny_tok.eos_token_id], pad_id=0, do_sample=False)
    # Declare a token that one row produces early as end-of-turn, so that rows leave the batch mid-way.
    stop = free[1][2]
    out = sample_batch(model, contexts, 10, eos_ids=[stop], pad_id=0, do_sample=False)
    assert any(len(o) < 10 for o in out) and any(len(o) == 10 for o in out)
    for ctx, ids in zip(contexts, out, strict=True):
        assert stop not in ids[:-1]
        full = torch.tensor([ctx + ids])
        with torch.no_grad():
            argmax = model(input_ids=full).logits[0, len(ctx) - 1 : -1].argmax(-1).tolist()
        assert argmax == ids
