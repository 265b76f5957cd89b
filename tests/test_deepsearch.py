"""Deep search on the generated knowledge base and on a user-supplied corpus: tools, rewards, expert, branching."""

from __future__ import annotations

import copy
import json

import gymnasium as gym
import pytest

import agentgym_envs
from agentgym_envs.errors import DataNotFoundError, UnknownTaskError
from agentgym_envs.families.deepsearch import (
    HOPS,
    DeepSearchEnv,
    WorldConfig,
    build_world,
    exact_match,
    normalize_answer,
    token_f1,
)

SMALL = WorldConfig(
    seed=7, people=120, cities=30, organisations=40, works=60, inventions=30,
    train_per_hop=30, valid_per_hop=3, test_per_hop=10,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path / "cache"))


def _play_expert(env, info, limit: int = 30):
    inner = env.unwrapped
    total, steps, queries = 0.0, 0, []
    while True:
        command = inner.expert_action()
        text = inner.parser.format_command(command)
        obs, reward, term, trunc, info = env.step(text)
        assert info["parse_error"] is None, text
        if info["tool"] == "search":
            queries.append((inner.parser.to_call(command).arguments["query"], info["retrieved"]))
        total += reward
        steps += 1
        if term or trunc or steps >= limit:
            return total, info, steps, queries


def test_answer_normalization_and_scores():
    assert normalize_answer("  The Silent-Harbor, an atlas! ") == "silentharbor atlas"
    assert exact_match("the University of Kelm.", ["University of Kelm"]) == 1.0
    assert exact_match("Kelm", ["University of Kelm"]) == 0.0
    assert token_f1("Kelm", ["University of Kelm"]) == pytest.approx(0.5)  # precision 1, recall 1/3
    assert token_f1("", ["x"]) == 0.0 and token_f1("1924", ["1925", "1924"]) == 1.0


def test_registrations_and_disjoint_splits():
    ids = {row.env_id for row in agentgym_envs.list_environments("deepsearch")}
    assert ids == {"agentgym/DeepSearch-v0"} | {f"agentgym/DeepSearch-h{h}-v0" for h in HOPS}
    corpus = build_world(WorldConfig())
    assert len(corpus.index.documents) >= 4000  # several thousand documents
    split_ids = {k: set(v) for k, v in corpus.splits.items()}
    texts = {k: {corpus.questions[q].text for q in v} for k, v in corpus.splits.items()}
    for a, b in (("train", "test"), ("train", "valid"), ("valid", "test")):
        assert not split_ids[a] & split_ids[b] and not texts[a] & texts[b]
    for hops in HOPS:
        env = DeepSearchEnv(hops=hops, split="test")
        qs = [corpus.questions[t] for t in env.task_ids]
        assert len(qs) == 100 and {q.hops for q in qs} == {hops} and all(len(q.proof) == hops for q in qs)


def test_world_is_deterministic_in_its_seed():
    a, b = build_world(SMALL), build_world.__wrapped__(SMALL)
    assert [d.text for d in a.index.documents] == [d.text for d in b.index.documents]
    assert a.questions == b.questions
    other = build_world.__wrapped__(WorldConfig(**{**SMALL.__dict__, "seed": 8}))
    assert [d.title for d in other.index.documents] != [d.title for d in a.index.documents]


def test_expert_answers_every_test_question_and_retrieval_finds_the_gold_documents():
    env = gym.make("agentgym/DeepSearch-v0", split="test", action_format="hermes")
    inner = env.unwrapped
    assert len(inner.task_ids) == 400
    for i, task in enumerate(inner.task_ids):
        obs, info = env.reset(seed=i, options={"task": task})
        question = inner.corpus.questions[task]
        assert question.text in obs
        total, info, steps, queries = _play_expert(env, info)
        assert info["won"] and info["em"] == 1.0 and total == 1.0, task
        # One open per proof document; a search is skipped when an earlier one already surfaced the document.
        assert question.hops + 2 <= steps <= 2 * question.hops + 1
        # Every expert query is a proof document's title and retrieves that document.
        assert queries and {q for q, _ in queries} <= set(question.proof)
        assert all(q in retrieved for q, retrieved in queries), task


def test_dense_reward_is_f1_and_wrong_answers_lose():
    env = gym.make("agentgym/DeepSearch-h1-v0", split="test", reward="dense")
    env.reset(seed=0)
    gold = env.unwrapped.state.question.answers[0]
    obs, reward, term, trunc, info = env.step(f'answer("{gold} and more words")')
    assert term and not info["won"] and info["lost"] and 0 < reward < 1 and reward == pytest.approx(info["f1"])
    sparse = gym.make("agentgym/DeepSearch-h1-v0", split="test")
    sparse.reset(seed=0)
    assert sparse.step(f'answer("{gold} and more words")')[1] == 0.0


@pytest.mark.parametrize(
    ("fmt", "bad"),
    [
        ("plain", "search for the city"),
        ("plain", "find(Varnholt)"),
        ("plain", 'search("a", "b")'),
        ("plain", 'search("a")\nopen("b")'),
        ("hermes", 'search("Varnholt")'),
        ("hermes", '<tool_call>{"name": "search", "arguments": {"q": "Varnholt"}}</tool_call>'),
        ("hermes", '<tool_call>{"name": "search", "arguments": {"query": "x"}</tool_call>'),
        ("hermes", '<tool_call>{"name": "lookup", "arguments": {"query": "x"}}</tool_call>'),
        ("openai", '{"name": "open"}'),
    ],
)
def test_malformed_tool_calls_get_the_format_penalty(fmt, bad):
    env = gym.make("agentgym/DeepSearch-h2-v0", split="test", action_format=fmt, format_penalty=0.25)
    env.reset(seed=0)
    before = copy.deepcopy(env.unwrapped.state)
    obs, reward, term, trunc, info = env.step(bad)
    assert info["parse_error"] and obs.startswith("Invalid action") and reward == -0.25 and not term
    assert env.unwrapped.state == before


def test_tool_errors_are_observations_not_crashes():
    env = DeepSearchEnv(hops=1, split="test", max_steps=4)
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step('open("Nowhere Land At All")')
    assert obs.startswith("There is no document titled") and info["tool_error"] == "no such document" and not term
    obs, *_, info = env.step('search("")')
    assert "non-empty query" in obs and info["tool_error"]
    obs, *_, info = env.step('search("zzzqqq")')
    assert obs.startswith("No documents match") and info["retrieved"] == []
    obs, reward, term, trunc, info = env.step('search("city")')
    assert trunc and info["truncation_reason"] == "step_limit" and len(info["retrieved"]) == 5


def test_snapshot_restore_and_deepcopy_branch_at_a_tool_call():
    env = gym.make("agentgym/DeepSearch-h3-v0", split="test", reward="dense")
    inner = env.unwrapped
    obs, info = env.reset(seed=0)
    env.step(inner.expert_action())  # search
    snap = inner.snapshot()
    branch = copy.deepcopy(env)
    assert branch.unwrapped.corpus is inner.corpus  # the index is shared, not copied
    first = env.step('search("lighthouse")')[0]
    inner.restore(snap)
    assert inner.state.queries == [inner.state.question.proof[0]] and inner._steps == 1
    assert env.step('search("lighthouse")')[0] == first
    inner.restore(snap)
    total, info, *_ = _play_expert(env, info)
    assert info["won"] and total == 1.0
    # The deep copy is independent and still at the branching point.
    assert branch.unwrapped._steps == 1 and not branch.unwrapped.state.opened
    total, info, *_ = _play_expert(branch, info)
    assert info["won"]


def test_user_supplied_corpus_end_to_end(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    questions = tmp_path / "questions.jsonl"
    docs = [
        {"title": "Marie Curie", "text": "Marie Curie was a physicist born in Warsaw. She won two Nobel Prizes."},
        {"title": "Warsaw", "text": "Warsaw is the capital of Poland, on the Vistula river."},
        {"contents": '"Vistula"\nThe Vistula is the longest river in Poland.'},
        {"title": "Pierre Curie", "text": "Pierre Curie was a physicist from Paris."},
        {"title": "Paris", "text": "Paris is the capital of France."},
    ]
    corpus.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    qs = [
        {"id": "a", "question": "Which river flows through the birthplace of Marie Curie?", "answer": ["Vistula",
         "Vistula River"], "proof": ["marie curie", "Warsaw"], "split": "test"},
        {"id": "b", "question": "Where was Pierre Curie from?", "golden_answers": ["Paris"], "split": "test"},
        {"id": "c", "question": "What is the capital of France?", "answer": "Paris", "split": "train"},
    ]
    questions.write_text("\n".join(json.dumps(q) for q in qs) + "\n")
    env = gym.make("agentgym/DeepSearch-v0", corpus=str(corpus), questions=str(questions), split="test",
                   action_format="react")
    assert sorted(env.unwrapped.task_ids) == ["a", "b"]
    for task in ("a", "b"):
        obs, info = env.reset(seed=0, options={"task": task})
        total, info, steps, queries = _play_expert(env, info)
        assert info["won"] and total == 1.0
        assert all(q in retrieved for q, retrieved in queries)
    env.reset(seed=0, options={"task": "a"})
    assert "The Vistula is the longest river" in env.step('Thought: read it\nAction: open("vistula")')[0]
    assert env.step('Action: answer("the vistula river")')[1] == 1.0
    with pytest.raises(UnknownTaskError):
        env.reset(options={"task": "c"})


def test_bad_user_data_raises_typed_errors(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text(json.dumps({"title": "A", "text": "a"}) + "\n")
    with pytest.raises(DataNotFoundError):
        DeepSearchEnv(corpus=tmp_path / "missing.jsonl", questions=good)
    with pytest.raises(ValueError):
        DeepSearchEnv(corpus=good)
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="answer"):
        DeepSearchEnv(corpus=good, questions=bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="JSON"):
        DeepSearchEnv(corpus=good, questions=bad)
    bad.write_text('{"question": "x", "answer": "a", "proof": ["No Such Title"]}\n')
    with pytest.raises(ValueError, match="not in the corpus"):
        DeepSearchEnv(corpus=good, questions=bad)
    with pytest.raises(UnknownTaskError):
        DeepSearchEnv(hops=9)


def test_search_returns_bm25s_top_k_scores_and_breaks_ties_by_corpus_order():
    import bm25s

    from agentgym_envs.families.deepsearch import WorldConfig, build_world
    from agentgym_envs.families.deepsearch.corpus import Document, SearchIndex

    index = build_world(WorldConfig()).index
    queries = [d.title for d in index.documents[:150]] + ["the city of the press", "founded in", "zzzz unknown"]
    for query in queries:
        for k in (1, 5):
            tokens = bm25s.tokenize([query], return_ids=False, show_progress=False)
            _, scores = index._retriever.retrieve(tokens, k=k, show_progress=False)
            expected = sorted((float(s) for s in scores[0] if s > 0), reverse=True)
            assert [s for _, s in index.search(query, k)] == expected
    twins = SearchIndex([Document(f"Twin {i}", "The same lighthouse keeper.") for i in range(4)])
    assert [d.title for d, _ in twins.search("lighthouse keeper", k=2)] == ["Twin 0", "Twin 1"]
    assert twins.search("lighthouse", k=0) == [] and twins.search("", k=3) == []
