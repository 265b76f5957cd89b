"""Deep-search throughput: the environment's tool steps against raw ``bm25s`` on the same queries.

The native column calls the retrieval library the environment wraps (``bm25s.tokenize`` + ``BM25.retrieve``)
on the same index and queries, so the ratio is the cost of parsing the tool call, formatting results and
the environment's bookkeeping.  Ours scores with ``BM25.get_scores`` and takes the top k of the positive scores
itself (the hits ``retrieve`` returns, ties in corpus order), which is faster than ``retrieve``'s partition of every
score.  Episodes replay the expert's tool calls (hermes format).
"""

from __future__ import annotations

import time

import bm25s
import gymnasium as gym

import agentgym_envs  # noqa: F401 - registers the environments
from agentgym_envs.families.deepsearch import WorldConfig, build_world
from benchmarks.throughput.common import Row, head_to_head, measured


def rows(quick: bool) -> list[Row]:
    start = time.perf_counter()
    corpus = build_world.__wrapped__(WorldConfig())  # uncached: measure a cold build
    build_s = time.perf_counter() - start
    env = gym.make("agentgym/DeepSearch-v0", split="test", action_format="hermes", expert_actions=True)
    inner = env.unwrapped
    tasks = inner.task_ids[: 40 if quick else 400]
    episodes = []
    for i, task in enumerate(tasks):
        _, info = env.reset(seed=i, options={"task": task})
        texts = []
        while True:
            texts.append(inner.parser.format_command(info["expert_action"]))
            _, _, term, trunc, info = env.step(texts[-1])
            if term or trunc:
                break
        episodes.append((task, i, texts))
    n_steps = sum(len(t) for _, _, t in episodes)
    queries = [inner.parser.parse(t).call.arguments["query"] for _, _, ts in episodes for t in ts if '"search"' in t]
    plain = gym.make("agentgym/DeepSearch-v0", split="test", action_format="hermes")
    retriever = corpus.index._retriever

    def ours_episodes() -> int:
        for task, seed, texts in episodes:
            plain.reset(seed=seed, options={"task": task})
            for t in texts:
                plain.step(t)
        return n_steps

    calls = [f'<tool_call>{{"name": "search", "arguments": {{"query": "{q}"}}}}</tool_call>' for q in queries]

    def ours_search() -> int:
        for i, call in enumerate(calls):
            if i % 8 == 0:  # episodes of realistic length (the step limit is 20)
                plain.reset(seed=i, options={"task": tasks[0]})
            plain.step(call)
        return len(calls)

    def native_search() -> int:
        for q in queries:
            tokens = bm25s.tokenize([q], return_ids=False, show_progress=False)
            retriever.retrieve(tokens, k=5, show_progress=False)
        return len(queries)

    repeats = 3 if quick else 5
    search_pair = head_to_head(ours_search, native_search, repeats)
    episodes_side = measured(ours_episodes, repeats)
    docs = len(corpus.index.documents)
    return [
        Row.compared("deepsearch", "search(query) step", search_pair,
                     note=f"{len(queries)} expert queries, {docs} docs; native = bm25s tokenize+retrieve; ours = bm25s "
                     "tokenize+get_scores and its own top k of the positive scores (the same hits)",
                     leaves_out="native: parsing the tool call, the results text, the info dict; resets every "
                                "8 calls on our side only (a reset is a dict lookup)"),
        Row.compared("deepsearch", "expert episodes (search/open/answer)", episodes_side,
                     note=f"{len(episodes)} test questions, {n_steps} steps; world build {build_s:.2f} s",
                     leaves_out="no native counterpart (opening and answering have no bm25s call)"),
    ]
