"""Deep search's corpus: documents, questions, the BM25 index, and user-supplied JSON-lines data.

Example:
    >>> idx = SearchIndex([Document("Varnholt", "Varnholt is a city."), Document("Orvel Press", "A publisher.")])
    >>> idx.get("varnholt").title
    'Varnholt'
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentgym_envs.errors import DataNotFoundError


# ---- documents, questions, index -----------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """One document of the corpus."""

    title: str
    text: str

    @functools.cached_property  # every search result shows it
    def snippet(self) -> str:
        """The first sentence (at most 200 characters)."""
        first = re.split(r"(?<=[.!?])\s", self.text.strip(), maxsplit=1)[0]
        return first if len(first) <= 200 else first[:197] + "..."


@dataclass(frozen=True)
class Question:
    """A question with its gold answers and proof chain (titles of the documents that prove it).

    Example:
        >>> Question("q1", "Who wrote The Silent Harbor?", ("Alva Brennick",), ("The Silent Harbor",)).hops
        1
    """

    id: str
    text: str
    answers: tuple[str, ...]
    proof: tuple[str, ...] = ()
    n_hops: int | None = None

    @property
    def hops(self) -> int:
        return self.n_hops if self.n_hops is not None else max(1, len(self.proof))


class SearchIndex:
    """A BM25 index (``bm25s``) over documents' titles and texts.

    Example:
        >>> idx = SearchIndex([Document("Varnholt", "Varnholt is a city."), Document("Orvel Press", "A publisher.")])
        >>> [d.title for d, _ in idx.search("publisher", k=2)]
        ['Orvel Press']
    """

    def __init__(self, documents: Sequence[Document]):
        import bm25s

        if not documents:
            raise DataNotFoundError("the corpus has no documents")
        self.documents = list(documents)
        self._bm25s = bm25s
        # The title is part of the indexed text so that a document is found by its name.
        corpus = [f"{d.title}. {d.text}" for d in self.documents]
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(corpus, show_progress=False), show_progress=False)
        self._by_title: dict[str, int] = {}
        for i, d in enumerate(self.documents):
            self._by_title.setdefault(_title_key(d.title), i)

    def search(self, query: str, k: int = 5) -> list[tuple[Document, float]]:
        """The top ``k`` documents with a positive BM25 score, best first (ties: corpus order)."""
        tokens = self._bm25s.tokenize([query], return_ids=False, show_progress=False)
        if not tokens or not tokens[0] or k < 1:
            return []
        scores = self._retriever.get_scores(tokens[0])
        # Only documents sharing a term with the query score above 0. BM25.retrieve partitions every score (mostly
        # zeros, a slow case for argpartition) and builds progress bars; the top k of the positive ones is the same
        # result (ties at the k-th score: corpus order) in a fraction of the time.
        ids = np.flatnonzero(scores > 0)
        top = scores[ids]
        if ids.size > k:
            kth = np.partition(top, ids.size - k)[ids.size - k]  # the k-th highest score
            ids, top = ids[top >= kth], top[top >= kth]
        # Plain Python numbers first (one C call each): iterating numpy scalars costs more than the sort.
        hits = sorted(zip((-top).tolist(), ids.tolist(), strict=True))[:k]
        return [(self.documents[i], -s) for s, i in hits]

    def get(self, title: str) -> Document | None:
        """The document whose title matches (case and spacing ignored), or ``None``."""
        i = self._by_title.get(_title_key(title))
        return None if i is None else self.documents[i]


def _title_key(title: str) -> str:
    return " ".join(title.strip().strip("\"'`").casefold().split())


@dataclass(frozen=True)
class Corpus:
    """The documents, their index and the questions per split (read-only; shared by environments)."""

    index: SearchIndex
    questions: Mapping[str, Question]
    splits: Mapping[str, tuple[str, ...]]


# ---- user-supplied data -------------------------------------------------------------------
def _read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.exists():
        raise DataNotFoundError(f"{what} file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object")
            rows.append(row)
    if not rows:
        raise DataNotFoundError(f"{what} file {path} is empty")
    return rows


def _user_document(row: Mapping[str, Any], where: str) -> Document:
    if "title" in row and ("text" in row or "contents" in row):
        return Document(str(row["title"]).strip(), str(row.get("text", row.get("contents", ""))).strip())
    if "contents" in row:  # Search-R1 / FlashRAG wiki format: '"Title"\ntext'
        title, _, text = str(row["contents"]).partition("\n")
        return Document(title.strip().strip('"').strip(), text.strip())
    raise ValueError(f"{where}: a corpus line needs 'title' and 'text' (or 'contents')")


def _user_split(qid: str) -> str:
    bucket = int(hashlib.sha256(f"deepsearch:{qid}".encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


@functools.lru_cache(maxsize=4)
def load_user_corpus(corpus_path: str, questions_path: str, mtimes: tuple[float, float] = (0.0, 0.0)) -> Corpus:
    """A corpus and questions from JSON lines files (see ``docs/deepsearch.md`` for the fields).

    ``mtimes`` only keys the cache, so an edited file is read again.
    """
    cpath, qpath = Path(corpus_path), Path(questions_path)
    docs = [_user_document(row, f"{cpath}:{i + 1}") for i, row in enumerate(_read_jsonl(cpath, "corpus"))]
    titles = {_title_key(d.title): d.title for d in docs}  # proof titles are matched like open(title)
    questions: dict[str, Question] = {}
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, row in enumerate(_read_jsonl(qpath, "questions")):
        where = f"{qpath}:{i + 1}"
        if "question" not in row:
            raise ValueError(f"{where}: a question line needs 'question'")
        raw = row.get("answers", row.get("answer", row.get("golden_answers")))
        answers = tuple(str(a) for a in (raw if isinstance(raw, list) else [raw]) if a is not None)
        if not answers:
            raise ValueError(f"{where}: a question line needs 'answer' (a string or a list of strings)")
        qid = str(row["id"]) if row.get("id") is not None else f"q{i + 1}"  # default: q<line number>
        if qid in questions:
            given = "" if row.get("id") is not None else " (this line's default id: give the lines explicit ids)"
            raise ValueError(f"{where}: duplicate question id {qid!r}{given}")
        proof = row.get("proof", row.get("supporting_titles", ()))
        if isinstance(proof, str) or not isinstance(proof, (list, tuple)):
            raise ValueError(f"{where}: 'proof' must be a list of document titles")
        unknown = [t for t in proof if _title_key(str(t)) not in titles]
        if unknown:
            raise ValueError(f"{where}: proof titles not in the corpus: {unknown[:3]}")
        hops = row.get("hops")
        proof = tuple(titles[_title_key(str(t))] for t in proof)
        questions[qid] = Question(qid, str(row["question"]), answers, proof, int(hops) if hops else None)
        split = row.get("split") or _user_split(qid)
        if split not in splits:
            raise ValueError(f"{where}: split must be train, valid or test, not {split!r}")
        splits[split].append(qid)
    return Corpus(SearchIndex(docs), questions, {k: tuple(v) for k, v in splits.items()})
