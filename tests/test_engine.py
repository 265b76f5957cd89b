"""The rollout engine and its backends: carried KV cache, one set of stop ids, robustness, the OpenAI client."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gymnasium as gym
import pytest
import torch
from trainer_toys import letter_env

from agentgym_envs.engine import (
    ChatFormat,
    RolloutConfig,
    RolloutStats,
    as_worker,
    fork_episode,
    record_turn,
    run_episodes,
    start_episodes,
    stop_ids_for,
)
from agentgym_envs.generation import GenerationRequest, SamplingSettings
from agentgym_envs.generation.openai import OpenAIBackend
from agentgym_envs.generation.transformers import TransformersBackend
from trl_plugins.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(3)
    m = tiny_model(tok, hidden_size=64, initializer_range=0.5)  # peaky: varied replies, some stop early
    return m.eval()


def play(model, tok, carry: bool, temperature: float = 1.0, stats: RolloutStats | None = None):
    # A tenth of the vocabulary ends a turn, so rows leave the batch at different steps.
    fmt = ChatFormat(tok, stop_ids=(tok.eos_token_id, *range(100, 140)))
    backend = TransformersBackend(
        model, tok.pad_token_id, SamplingSettings(temperature=temperature, stop_ids=fmt.stop_ids, seed=0), carry_cache=carry
    )
    envs = [letter_env(target=9, max_steps=n) for n in (2, 4, 3, 4)]
    tasks = [(i, i, i) for i in range(4)]
    episodes = run_episodes(envs, tasks, backend, fmt, RolloutConfig(max_new_tokens=6, max_turns=4), stats)
    return episodes, backend


def test_carried_kv_cache_samples_the_same_ids_logprobs_and_entropies_as_a_fresh_forward(model, tok):
    carried, backend = play(model, tok, carry=True, temperature=0.9)
    fresh, plain = play(model, tok, carry=False, temperature=0.9)
    assert backend.reused_tokens > 0 and plain.reused_tokens == 0  # the cache was really carried
    assert backend.prefilled_tokens < plain.prefilled_tokens / 2
    assert backend.cached_keys == []  # every episode was released
    assert len({len(ep.turns) for ep in carried}) > 1  # episodes of different lengths left the batch
    assert any(t.hit_token_limit for ep in carried for t in ep.turns)
    assert any(not t.hit_token_limit for ep in carried for t in ep.turns)
    for a, b in zip(carried, fresh, strict=True):
        assert [t.action_ids for t in a.turns] == [t.action_ids for t in b.turns]
        for ta, tb in zip(a.turns, b.turns, strict=True):
            assert torch.allclose(torch.tensor(ta.logprobs), torch.tensor(tb.logprobs), atol=1e-5)
            assert torch.allclose(torch.tensor(ta.entropies), torch.tensor(tb.entropies), atol=1e-5)
    # ... and the log-probabilities and entropies are those of one teacher-forced forward over the whole sequence.
    for ep in carried:
        ids, mask, _ = ep.completion()
        full = torch.tensor([ep.prompt_ids + ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0].float() / 0.9, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        start = len(ep.prompt_ids)
        positions = [(start + j - 1, tok_id) for j, (tok_id, m) in enumerate(zip(ids, mask, strict=True)) if m]
        expected = [logp[pos, tok_id].item() for pos, tok_id in positions]
        got = [lp for t in ep.turns for lp in t.logprobs]
        assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-4)
        got_entropy = torch.tensor([h for t in ep.turns for h in t.entropies])
        assert torch.allclose(got_entropy, torch.tensor([entropy[pos].item() for pos, _ in positions]), atol=1e-4)
        assert got_entropy.std() > 0.01  # the model's, position by position, not a constant


def test_a_context_that_does_not_extend_the_cache_reuses_only_the_common_prefix(model, tok):
    backend = TransformersBackend(model, tok.pad_token_id, SamplingSettings(do_sample=False, stop_ids=(tok.eos_token_id,)))
    first = backend.generate([GenerationRequest("a", [5, 6, 7, 8])], 4)[0]
    # The same episode continues with a different history: only [5, 6] can come from the cache.
    changed = [5, 6, 30, 31, 32]
    carried = backend.generate([GenerationRequest("a", changed), GenerationRequest("b", [9, 10])], 5)
    fresh = TransformersBackend(model, tok.pad_token_id, backend.settings, carry_cache=False).generate(
        [GenerationRequest("a", changed), GenerationRequest("b", [9, 10])], 5
    )
    assert first.ids and [o.ids for o in carried] == [o.ids for o in fresh]
    assert backend.reused_tokens == 2
    backend.release(["a", "b"])
    assert backend.cached_keys == []


def test_a_batch_prefills_identical_contexts_and_their_common_prefix_once(model, tok):
    # A GRPO-like batch: three rollouts of one prompt, two of another that shares its first 12 ids.
    common = list(range(10, 22))
    prompt_a, prompt_b = common + [40, 41, 42, 43], common + [50, 51]
    requests = [GenerationRequest(k, p) for k, p in enumerate([prompt_a, prompt_b, prompt_a, prompt_a, prompt_b])]
    outputs = {}
    for share in (True, False):
        settings = SamplingSettings(temperature=0.9, stop_ids=(tok.eos_token_id,), seed=5)
        backend = TransformersBackend(model, tok.pad_token_id, settings, share_prefixes=share)
        outputs[share] = (backend.generate(requests, 6), backend)
    (shared, with_sharing), (separate, without) = outputs[True], outputs[False]
    assert without.prefilled_tokens == 3 * len(prompt_a) + 2 * len(prompt_b) and without.shared_tokens == 0
    # prompt_a and prompt_b once each, their common 12 ids once: 12 + 4 + 2
    assert with_sharing.prefilled_tokens == len(common) + 4 + 2
    assert with_sharing.shared_tokens == without.prefilled_tokens - with_sharing.prefilled_tokens
    for a, b in zip(shared, separate, strict=True):
        assert a.ids == b.ids and a.finish_reason == b.finish_reason
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert len({tuple(o.ids) for o in shared}) > 2  # the copies of one prompt still sample separately
    # ... and each row's carried cache (copied from a shared row) continues its own reply.
    follow = [GenerationRequest(r.key, r.context_ids + o.ids + [7, 8]) for r, o in zip(requests, shared, strict=True)]
    greedy = dataclasses.replace(with_sharing.settings, do_sample=False)
    with_sharing.settings = greedy
    again = with_sharing.generate(follow, 4)
    assert with_sharing.reused_tokens == sum(len(f.context_ids) - 3 for f in follow)
    fresh = TransformersBackend(model, tok.pad_token_id, greedy, carry_cache=False, share_prefixes=False)
    for a, b in zip(again, fresh.generate(follow, 4), strict=True):
        assert a.ids == b.ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_one_set_of_stop_ids_with_two_end_ids(tok):
    """A generation config listing two end ids: a turn ending on the second is neither flagged nor closed twice."""
    generation_config = type("GC", (), {"eos_token_id": [tok.eos_token_id, tok.pad_token_id]})()
    stops = stop_ids_for(tok, generation_config)
    assert stops == (tok.eos_token_id, tok.pad_token_id)
    fmt = ChatFormat(tok, stop_ids=stops)
    secondary = tok.pad_token_id  # <|endoftext|>

    def generate(contexts, max_new_tokens):
        return [tok("hello", add_special_tokens=False)["input_ids"] + [secondary] for _ in contexts]

    (ep,) = run_episodes([letter_env(target=9, max_steps=2)], [(0, 0, 0)], generate, fmt, RolloutConfig())
    first = ep.turns[0]
    assert first.action_ids[-1] == secondary and not first.hit_token_limit
    before, after = fmt.observation_frame
    assert first.env_ids == fmt.encode(fmt.close_after_eos + before + ep.messages[3]["content"] + after)
    assert tok.eos_token_id not in first.env_ids[:1]  # no second end token after the sampled one
    # The sampler stops on the same set: on whichever stop id comes first.
    torch.manual_seed(3)
    model = tiny_model(tok, hidden_size=64, initializer_range=0.5).eval()
    free = TransformersBackend(model, tok.pad_token_id, SamplingSettings(do_sample=False, stop_ids=(tok.eos_token_id,)))
    ids = free.generate([GenerationRequest(0, [5, 6, 7])], 6)[0].ids
    second = ids[2]
    stop_on = TransformersBackend(model, tok.pad_token_id, SamplingSettings(do_sample=False, stop_ids=(tok.eos_token_id, second)))
    out = stop_on.generate([GenerationRequest(0, [5, 6, 7])], 6)[0]
    assert out.ids == ids[: ids.index(second) + 1] and out.finish_reason == "stop"
    # A backend and a chat format with different sets are refused.
    with pytest.raises(ValueError, match="one set of stop ids"):
        run_episodes([letter_env()], [(0, 0, 0)], stop_on, fmt, RolloutConfig())


class FailingStep(gym.Wrapper):
    """A real environment whose ``step`` raises on its ``fail_at``-th call (a simulator bug, not a crash error)."""

    def __init__(self, env, fail_at: int):
        super().__init__(env)
        self.fail_at, self.calls = fail_at, 0

    def step(self, action):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyError("no such room")
        return self.env.step(action)


def test_an_exception_in_step_truncates_that_episode_and_the_run_goes_on(tok):
    fmt = ChatFormat(tok)

    def generate(contexts, max_new_tokens):
        return [tok("tree", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _ in contexts]

    envs = [FailingStep(letter_env(target=9, max_steps=4), fail_at=2), letter_env(target=9, max_steps=4)]
    broken, healthy = run_episodes(envs, [(0, 0, 0), (1, 1, 1)], generate, fmt, RolloutConfig(max_turns=4))
    assert (broken.done, broken.truncated, broken.truncation_reason, len(broken.turns)) == (True, True, "crash", 2)
    assert broken.info["error"] == "KeyError: 'no such room'"
    assert broken.turns[-1].env_ids == []
    assert (healthy.truncation_reason, len(healthy.turns)) == ("step_limit", 4)


class _ScriptedChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint with scripted answers; records requests and the most in flight at once."""

    seen: list[dict] = []
    lock = threading.Lock()
    in_flight = 0
    most_in_flight = 0
    gate = threading.Barrier(3, timeout=5)

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"data": [{"id": "scripted"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.seen.append(body)
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        if turn == 0:
            cls.gate.wait()  # the three first turns must be in flight together
        with cls.lock:
            cls.in_flight -= 1
        self._send({"choices": [{"message": {"content": "tree\nand more"}, "finish_reason": "stop"}]})


def test_openai_backend_sends_each_turn_of_a_batch_concurrently():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{server.server_port}/v1", "scripted", settings=SamplingSettings(temperature=0.5))
        envs = [letter_env(target=9, max_steps=n) for n in (2, 3, 2)]
        cfg = RolloutConfig(max_new_tokens=12, reply="text", first_line_only=True)
        episodes = run_episodes(envs, [(i, 10 * i, i) for i in range(3)], backend, None, cfg)
        backend.close()
    finally:
        server.shutdown()
        server.server_close()
    assert _ScriptedChat.most_in_flight == 3
    assert [len(ep.turns) for ep in episodes] == [2, 3, 2]
    assert all(t.text == "tree" and t.parse_error is None and t.action_ids == [] for ep in episodes for t in ep.turns)
    requests = _ScriptedChat.seen
    assert len(requests) == 7 and all(r["stop"] == ["\n"] and r["max_tokens"] == 12 for r in requests)
    assert all(r["temperature"] == 0.5 and r["model"] == "scripted" for r in requests)
    # The last request of episode 1 holds the whole conversation, with the cut replies, and seed = episode seed + turn.
    last = max((r for r in requests if "Game 1." in r["messages"][1]["content"]), key=lambda r: len(r["messages"]))
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last["messages"][2]["content"] == "tree" and last["seed"] == 12
    assert last["messages"] == episodes[1].messages[:6]


def test_fork_episode_continues_one_episode_twice_from_a_turn():
    """The branching seam: a fork shares the history up to its turn, then plays on in its own environment state."""
    config = RolloutConfig(max_turns=3)
    env, spare = letter_env(target=9, max_steps=3), letter_env(target=9, max_steps=3)

    def play(ep, env, text):
        record_turn(ep, env.step(text), None, [], text, False, False, None, config)

    (ep,) = start_episodes([as_worker(env)], [(0, 5, 0)], None, config)
    play(ep, env, "tree")
    branch, branch_env = fork_episode(ep, 0, env, spare)
    assert (branch.parent, branch.branch_turn) == (0, 1) and branch.messages == ep.messages
    play(ep, env, "tree")
    play(branch, branch_env, "moon")
    # the branch's environment carried the point scored before the fork, and the parent's did not see "moon"
    assert [t.observation for t in ep.turns] == ["Yes, that has an e. Points: 1.", "Yes, that has an e. Points: 2."]
    assert [t.observation for t in branch.turns] == ["Yes, that has an e. Points: 1.", "No e in that. Points: 1."]
    assert len(ep.messages) == len(branch.messages) and ep.messages[-1] != branch.messages[-1]


@pytest.mark.parametrize("bad_id", [-1, 10**6], ids=["negative", "out_of_vocabulary"])
def test_a_reply_with_ids_that_name_no_token_ends_that_episode_with_a_generation_error(tok, bad_id):
    fmt = ChatFormat(tok)
    tree = tok("tree", add_special_tokens=False)["input_ids"]

    def generate(contexts, max_new_tokens):  # the second context's second turn gets a broken reply
        replies = []
        for row, ctx in enumerate(contexts):
            broken = row == 1 and ctx.count(tok.eos_token_id) >= 3  # one earlier turn closed
            replies.append([*tree[:1], bad_id, tok.eos_token_id] if broken else [*tree, tok.eos_token_id])
        return replies

    envs = [letter_env(target=9, max_steps=3), letter_env(target=9, max_steps=3)]
    stats = RolloutStats()
    healthy, broken = run_episodes(envs, [(0, 0, 0), (1, 1, 1)], generate, fmt, RolloutConfig(max_turns=3), stats)
    assert (broken.done, broken.truncated, broken.truncation_reason) == (True, True, "generation_error")
    assert len(broken.turns) == 1 and str(bad_id) in broken.info["error"]
    assert broken.turns[-1].env_ids == []  # the sequence ends with the model's last good turn
    assert (healthy.truncation_reason, len(healthy.turns)) == ("step_limit", 3)
    # The synchronous one-episode path (apply_action) gives the same outcome.
    from agentgym_envs.engine import apply_action

    env = letter_env(target=9, max_steps=3)
    (episode,) = start_episodes([as_worker(env)], [(0, 0, 0)], fmt, RolloutConfig())
    apply_action(episode, env, [], [bad_id], fmt, RolloutConfig())
    env.close()
    assert episode.truncation_reason == "generation_error" and not episode.turns
