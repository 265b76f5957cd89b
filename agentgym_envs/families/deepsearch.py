"""Deep search: answer multi-hop questions with ``search``, ``open`` and ``answer`` tools over a local corpus.

The deep-search scenario of AgentGym-RL (and the domain of AEPO) made local: no internet and no
multi-GB corpus.  By default the corpus is a knowledge base generated from a seed (fictional people,
cities, organisations, works and inventions with typed attributes and relations; one encyclopedia-style
document per entity, several thousand documents) and the questions are composed over its relations
with 1 to 4 hops, each with its gold answer and the chain of documents that proves it:

    "In which city was the founder of the publisher of The Silent Harbor born?"   (3 hops)

Tools (through the project's tool-call parsing, any action format):

* ``search(query)`` — the top-k documents (title and first sentence) from a BM25 index (``bm25s``);
* ``open(title)`` — the whole document with that title;
* ``answer(text)`` — the final answer; ends the episode.

Rewards: ``info["score"]`` is the token F1 of the answer (so ``reward="dense"`` pays F1) and
``info["won"]`` is the exact match after normalization (so ``reward="sparse"``, the default, pays EM);
malformed tool calls are parse errors, which ``format_penalty=`` penalizes.  A user-supplied corpus
and question file (JSON lines) replace the generated world: ``gym.make("agentgym/DeepSearch-v0",
corpus="wiki.jsonl", questions="nq.jsonl")``.

Branching (AEPO): ``env.unwrapped.snapshot()`` / ``restore(snap)`` save and reload an episode at any
tool-call step, and ``copy.deepcopy(env)`` copies it; both share the read-only corpus and index.

Example:
    >>> import gymnasium as gym, agentgym_envs
    >>> env = gym.make("agentgym/DeepSearch-h2-v0", split="test", expert_actions=True)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                                   # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(info["expert_action"])       # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import random
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym_envs.core import TaskSplits, TaskStart, TextEnv, Transition
from agentgym_envs.errors import DataNotFoundError, ExpertUnavailableError, UnknownTaskError
from agentgym_envs.parsing import ToolCall, ToolSpec
from agentgym_envs.registry import Family, Registration

FAMILY = Family(
    "deepsearch",
    extra="deepsearch",
    requires=("bm25s",),
    description="Multi-hop question answering with search/open/answer tools over a local corpus.",
)

SEARCH_TOOL = ToolSpec("search", ("query",), "Search the knowledge base; returns the top documents' titles and snippets.")
OPEN_TOOL = ToolSpec("open", ("title",), "Open the document with this exact title and read all of it.")
ANSWER_TOOL = ToolSpec("answer", ("text",), "Give the final answer (a short phrase); ends the episode.")
TOOLS = (SEARCH_TOOL, OPEN_TOOL, ANSWER_TOOL)
HOPS = (1, 2, 3, 4)
DEFAULT_MAX_STEPS = 20


# ---- answers -------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed (the SQuAD normalization).

    Example:
        >>> normalize_answer("The  Silent Harbor!")
        'silent harbor'
    """
    return " ".join(_ARTICLES.sub(" ", str(text).lower().translate(_PUNCT)).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals a normalized gold answer.

    Example:
        >>> exact_match("the varnholt", ["Varnholt"])
        1.0
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best token-level F1 between the normalized prediction and a gold answer.

    Example:
        >>> round(token_f1("Alva Brennick Junior", ["Alva Brennick"]), 3)
        0.8
    """
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if not pred or not ref or not common:
            best = max(best, float(pred == ref))
            continue
        p, r = common / len(pred), common / len(ref)
        best = max(best, 2 * p * r / (p + r))
    return best


# ---- corpus and questions -----------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """One document of the corpus."""

    title: str
    text: str

    @property
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
        if not tokens or not tokens[0]:
            return []
        k = min(k, len(self.documents))
        ids, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)  # n_threads=0: no thread pool
        hits = sorted(((float(s), int(i)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0), key=lambda h: (-h[0], h[1]))
        return [(self.documents[i], s) for s, i in hits]

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


# ---- the generated world ------------------------------------------------------------------
@dataclass(frozen=True)
class WorldConfig:
    """Size and seed of the generated knowledge base and question sets.

    Example:
        >>> WorldConfig(seed=3, people=200).seed
        3
    """

    seed: int = 0
    people: int = 1500
    cities: int = 400
    organisations: int = 600
    works: int = 1200
    inventions: int = 500
    train_per_hop: int = 1000
    valid_per_hop: int = 50
    test_per_hop: int = 100


@dataclass
class Entity:
    """One entity of the generated world."""

    id: str
    type: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    rels: dict[str, str] = field(default_factory=dict)


_ONSETS = "b br c d dr f g gr h k l m n p r s st t th v w z sh ch kl fr j".split()
_VOWELS = "a e i o u ae ei ou y ea".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "st", "ll"]
_CITY_SUFFIX = ["", "", "ford", "holm", "wick", "port", "burg", "dale", "mouth", "stead", "haven"]
_COUNTRY_SUFFIX = ["ia", "land", "mark", "or", "ava", "istan"]
_OCCUPATIONS = (
    "cartographer botanist composer engineer novelist painter physician astronomer chemist architect "
    "mathematician poet historian sculptor glassmaker clockmaker philosopher shipwright geologist "
    "lawyer printer weaver surveyor linguist"
).split()
_ADJECTIVES = (
    "silent golden hidden broken distant northern last quiet crimson hollow bright winter iron pale "
    "forgotten endless wandering burning silver patient narrow secret lonely ancient restless emerald "
    "frozen scarlet gentle bitter"
).split()
_NOUNS = (
    "harbor garden river lantern mirror orchard tower voyage meadow archive compass season island "
    "bridge forest letter kingdom circle shadow engine harvest threshold chronicle valley canal lighthouse "
    "atlas feather citadel"
).split()
_WORK_KINDS = ["novel", "poem cycle", "symphony", "treatise", "play", "atlas", "essay collection"]
_DEVICES = (
    "loom telescope barometer printing press compass lamp pump sextant chronometer kiln lathe "
    "microscope calculator semaphore engine valve"
).split(" ")
_PURPOSES = ["measuring", "weaving", "navigation", "printing", "lighting", "surveying", "timekeeping", "signalling"]
_RIVERS_SUFFIX = ["", "water", "brook", "flow"]


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


class _Names:
    """Globally unique entity names."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def new(self, make: Any) -> str:
        for _ in range(10_000):
            name = make()
            if name.casefold() not in self.used:
                self.used.add(name.casefold())
                return name
        raise RuntimeError("could not find a fresh name; the world is too large for the name generator")


def generate_world(config: WorldConfig) -> dict[str, Entity]:
    """The entities of the knowledge base of ``config`` (deterministic in ``config.seed``)."""
    rng = random.Random(f"deepsearch-world-{config.seed}")
    names = _Names(rng)
    firsts = sorted({_word(rng, rng.choice((1, 2))) for _ in range(400)})
    lasts = sorted({_word(rng, rng.choice((2, 2, 3))) for _ in range(900)})
    countries = [names.new(lambda: _word(rng, 2) + rng.choice(_COUNTRY_SUFFIX)) for _ in range(24)]
    ents: dict[str, Entity] = {}

    def add(etype: str, i: int, name: str, **attrs: str) -> Entity:
        e = Entity(f"{etype}:{i}", etype, name, dict(attrs))
        ents[e.id] = e
        return e

    people = [
        add(
            "person", i, names.new(lambda: f"{rng.choice(firsts)} {rng.choice(lasts)}"),
            birth_year=str(rng.randint(1700, 1950)), occupation=rng.choice(_OCCUPATIONS),
        )
        for i in range(config.people)
    ]
    cities = [
        add(
            "city", i, names.new(lambda: _word(rng, rng.choice((1, 2))) + rng.choice(_CITY_SUFFIX)),
            country=rng.choice(countries), founded_year=str(rng.randint(900, 1690)),
            population=f"{rng.randint(8, 2400) * 1000:,}", river=_word(rng, 2) + rng.choice(_RIVERS_SUFFIX),
        )
        for i in range(config.cities)
    ]
    kinds = ["university", "publisher", "company", "observatory", "society"]
    orgs: list[Entity] = []
    for i in range(config.organisations):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        city = rng.choice(cities)
        makers = {
            "university": [lambda c=city: f"University of {c.name}", lambda: f"{rng.choice(lasts)} College"],
            "publisher": [lambda: f"{rng.choice(lasts)} Press", lambda: f"{rng.choice(lasts)} & {rng.choice(lasts)}"],
            "company": [lambda: f"{rng.choice(lasts)} Works", lambda: f"{rng.choice(lasts)} Instrument Company"],
            "observatory": [lambda c=city: f"{c.name} Observatory", lambda: f"{rng.choice(lasts)} Observatory"],
            "society": [lambda c=city: f"Royal Society of {c.name}", lambda: f"{rng.choice(lasts)} Society"],
        }[kind]
        org = add("organisation", i, names.new(lambda m=makers: rng.choice(m)()), kind=kind)
        org.rels["headquarters"] = city.id
        orgs.append(org)
    by_kind = {k: [o for o in orgs if o.attrs["kind"] == k] for k in kinds}
    works = [
        add(
            "work", i,
            names.new(lambda: rng.choice([
                lambda: f"The {rng.choice(_ADJECTIVES).capitalize()} {rng.choice(_NOUNS).capitalize()}",
                lambda: f"{rng.choice(_NOUNS).capitalize()} of the {rng.choice(_ADJECTIVES).capitalize()} "
                f"{rng.choice(_NOUNS).capitalize()}",
                lambda: f"{_a(rng.choice(_NOUNS)).capitalize()} in {rng.choice(cities).name}",
            ])()),
            kind=rng.choice(_WORK_KINDS),
        )
        for i in range(config.works)
    ]
    inventions = [
        add("invention", i, names.new(lambda: f"{rng.choice(lasts)} {rng.choice(_DEVICES)}"), purpose=rng.choice(_PURPOSES))
        for i in range(config.inventions)
    ]
    for p in people:
        p.rels.update(
            birthplace=rng.choice(cities).id, employer=rng.choice(orgs).id, alma_mater=rng.choice(by_kind["university"]).id
        )
    for c in cities:
        c.rels["mayor"] = rng.choice(people).id
    for o in orgs:
        founder = rng.choice(people)
        o.rels["founder"] = founder.id
        o.attrs["founded_year"] = str(int(founder.attrs["birth_year"]) + rng.randint(25, 65))
    for w in works:
        author = rng.choice(people)
        w.rels.update(author=author.id, publisher=rng.choice(by_kind["publisher"]).id)
        w.attrs["year"] = str(int(author.attrs["birth_year"]) + rng.randint(20, 70))
    for inv in inventions:
        inventor = rng.choice(people)
        inv.rels.update(inventor=inventor.id, manufacturer=rng.choice(by_kind["company"]).id)
        inv.attrs["year"] = str(int(inventor.attrs["birth_year"]) + rng.randint(20, 60))
    return ents


def _pick(rng: random.Random, *variants: str) -> str:
    return rng.choice(variants)


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article (``an astronomer``)."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def write_documents(ents: Mapping[str, Entity], seed: int = 0) -> list[Document]:
    """One encyclopedia-style document per entity, with phrasing varied by ``seed``."""
    rng = random.Random(f"deepsearch-docs-{seed}")
    n = {e.id: e.name for e in ents.values()}
    works_by: dict[str, list[Entity]] = {}
    staff: dict[str, list[Entity]] = {}
    hq_of: dict[str, list[Entity]] = {}
    for e in ents.values():
        if e.type == "work":
            works_by.setdefault(e.rels["author"], []).append(e)
        if e.type == "person":
            staff.setdefault(e.rels["employer"], []).append(e)
        if e.type == "organisation":
            hq_of.setdefault(e.rels["headquarters"], []).append(e)
    docs = []
    for e in ents.values():
        a, r = e.attrs, {k: n[v] for k, v in e.rels.items()}
        if e.type == "person":
            first = _pick(
                rng,
                f"{e.name} was {_a(a['occupation'])} born in {r['birthplace']} in {a['birth_year']}.",
                f"{e.name} (born {a['birth_year']} in {r['birthplace']}) was {_a(a['occupation'])}.",
                f"Born in {r['birthplace']} in {a['birth_year']}, {e.name} became {_a(a['occupation'])}.",
            )
            rest = [
                _pick(rng, f"{e.name} studied at the {r['alma_mater']}.", f"{e.name} was educated at the {r['alma_mater']}."),
                _pick(rng, f"Later {e.name} worked for {r['employer']}.", f"{e.name} was employed by {r['employer']}."),
            ]
            own = works_by.get(e.id, [])[:2]
            if own:
                rest.append(f"{e.name} is remembered for " + " and ".join(w.name for w in own) + ".")
        elif e.type == "city":
            first = _pick(
                rng,
                f"{e.name} is a city in {a['country']}, founded in {a['founded_year']}.",
                f"Founded in {a['founded_year']}, {e.name} is a city of {a['country']}.",
            )
            rest = [
                f"It lies on the {a['river']} river and has about {a['population']} inhabitants.",
                _pick(rng, f"The mayor of {e.name} is {r['mayor']}.", f"{r['mayor']} serves as the mayor of {e.name}."),
            ]
            based = hq_of.get(e.id, [])[:2]
            if based:
                rest.append("It is home to " + " and ".join(o.name for o in based) + ".")
        elif e.type == "organisation":
            first = _pick(
                rng,
                f"{e.name} is {_a(a['kind'])} founded in {a['founded_year']} by {r['founder']}.",
                f"{e.name}, {_a(a['kind'])}, was founded by {r['founder']} in {a['founded_year']}.",
            )
            rest = [
                _pick(rng, f"It is headquartered in {r['headquarters']}.", f"Its headquarters are in {r['headquarters']}."),
            ]
            people = staff.get(e.id, [])[:2]
            if people:
                rest.append("People who worked there include " + " and ".join(p.name for p in people) + ".")
        elif e.type == "work":
            first = _pick(
                rng,
                f"{e.name} is {_a(a['kind'])} written by {r['author']} and first published in {a['year']}.",
                f"{e.name} is {_a(a['kind'])} by {r['author']}, first published in {a['year']}.",
                f"First published in {a['year']}, {e.name} is {_a(a['kind'])} by {r['author']}.",
            )
            rest = [_pick(rng, f"It was published by {r['publisher']}.", f"The publisher was {r['publisher']}.")]
        else:
            first = _pick(
                rng,
                f"The {e.name} is {_a(a['purpose'])} device invented by {r['inventor']} in {a['year']}.",
                f"The {e.name}, a device for {a['purpose']}, was invented in {a['year']} by {r['inventor']}.",
            )
            rest = [_pick(rng, f"It was first manufactured by {r['manufacturer']}.",
                          f"{r['manufacturer']} built the first ones.")]
        rng.shuffle(rest)
        docs.append(Document(e.name, " ".join([first, *rest])))
    return docs


#: How a relation turns a noun phrase into the phrase for the related entity.
_HOP_PHRASES = {
    ("work", "author"): "the author of {}",
    ("work", "publisher"): "the publisher of {}",
    ("invention", "inventor"): "the inventor of {}",
    ("invention", "manufacturer"): "the company that first manufactured {}",
    ("organisation", "founder"): "the founder of {}",
    ("organisation", "headquarters"): "the city where {} is headquartered",
    ("person", "birthplace"): "the birthplace of {}",
    ("person", "employer"): "the employer of {}",
    ("person", "alma_mater"): "the university where {} studied",
    ("city", "mayor"): "the mayor of {}",
}
#: Final questions: (type, fact) -> template.  A fact is an attribute or a relation (answer: an entity name).
_FINAL_QUESTIONS = {
    ("person", "birthplace"): "In which city was {} born?",
    ("person", "birth_year"): "In which year was {} born?",
    ("person", "occupation"): "What was the occupation of {}?",
    ("person", "employer"): "Which organisation employed {}?",
    ("person", "alma_mater"): "At which university did {} study?",
    ("city", "country"): "In which country is {}?",
    ("city", "mayor"): "Who is the mayor of {}?",
    ("city", "founded_year"): "In which year was {} founded?",
    ("organisation", "founder"): "Who founded {}?",
    ("organisation", "headquarters"): "In which city is {} headquartered?",
    ("organisation", "founded_year"): "In which year was {} founded?",
    ("work", "author"): "Who wrote {}?",
    ("work", "publisher"): "Which organisation published {}?",
    ("work", "year"): "In which year was {} first published?",
    ("invention", "inventor"): "Who invented {}?",
    ("invention", "manufacturer"): "Which company first manufactured {}?",
    ("invention", "year"): "In which year was {} invented?",
}


def _mention(e: Entity) -> str:
    return f"the {e.name}" if e.type == "invention" or (e.type == "organisation" and e.name.startswith("University")) else e.name


def generate_questions(ents: Mapping[str, Entity], config: WorldConfig) -> tuple[dict[str, Question], dict[str, list[str]]]:
    """Questions with 1-4 hops and their train / valid / test split (disjoint by construction).

    Each question is a random walk over relations from a named entity, ending in a fact of the last
    entity; the proof chain is the walk's documents.  Walks are drawn until every split is full;
    a (start, relations, fact) walk is used at most once.
    """
    rng = random.Random(f"deepsearch-questions-{config.seed}")
    by_type: dict[str, list[Entity]] = {}
    for e in ents.values():
        by_type.setdefault(e.type, []).append(e)
    starts = sorted(by_type)
    questions: dict[str, Question] = {}
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    sizes = [("test", config.test_per_hop), ("valid", config.valid_per_hop), ("train", config.train_per_hop)]
    for hops in HOPS:
        seen: set[tuple] = set()
        made = 0
        need = sum(k for _, k in sizes)
        attempts = 0
        while made < need:
            attempts += 1
            if attempts > 200 * need + 10_000:
                raise RuntimeError(f"could not compose {need} distinct {hops}-hop questions; enlarge the world")
            e = rng.choice(by_type[rng.choice(starts)])
            chain, path = [e], []
            phrase = _mention(e)
            while len(chain) < hops:
                options = [(k, v) for k, v in sorted(chain[-1].rels.items()) if ents[v] not in chain]
                if not options:
                    break
                rel, target = rng.choice(options)
                phrase = _HOP_PHRASES[(chain[-1].type, rel)].format(phrase)
                path.append(rel)
                chain.append(ents[target])
            if len(chain) < hops:
                continue
            last = chain[-1]
            facts = sorted(f for (t, f) in _FINAL_QUESTIONS if t == last.type)
            fact = rng.choice(facts)
            key = (e.id, tuple(path), fact)
            if key in seen:
                continue
            seen.add(key)
            answer = ents[last.rels[fact]].name if fact in last.rels else last.attrs[fact]
            text = _FINAL_QUESTIONS[(last.type, fact)].format(phrase)
            text = text[0].upper() + text[1:]
            split = next(name for name, upto in _accumulate(sizes) if made < upto)
            qid = f"h{hops}-{made:05d}"
            questions[qid] = Question(qid, text, (answer,), tuple(c.name for c in chain), hops)
            splits[split].append(qid)
            made += 1
    return questions, splits


def _accumulate(sizes: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    total, out = 0, []
    for name, k in sizes:
        total += k
        out.append((name, total))
    return out


@functools.lru_cache(maxsize=2)
def build_world(config: WorldConfig = WorldConfig()) -> Corpus:
    """The generated corpus, index and questions of ``config``.

    Cached per process: the result is read-only and building it (generation and BM25 indexing) is the
    costly part of creating an environment, so a vector of environments shares one copy.

    Example:
        >>> corpus = build_world(WorldConfig(people=60, cities=20, organisations=30, works=40, inventions=20,
        ...                                  train_per_hop=20, valid_per_hop=2, test_per_hop=5))
        >>> len(corpus.splits["test"])
        20
    """
    ents = generate_world(config)
    docs = write_documents(ents, config.seed)
    questions, splits = generate_questions(ents, config)
    return Corpus(SearchIndex(docs), questions, {k: tuple(v) for k, v in splits.items()})


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
        qid = str(row.get("id", f"q{i}"))
        if qid in questions:
            raise ValueError(f"{where}: duplicate question id {qid!r}")
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


# ---- the environment ---------------------------------------------------------------------
@dataclass
class SearchState:
    """The mutable state of one deep-search episode (what :meth:`DeepSearchEnv.snapshot` saves)."""

    question: Question | None = None
    queries: list[str] = field(default_factory=list)
    surfaced: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    answer: str | None = None


class DeepSearchEnv(TextEnv):
    """Multi-hop question answering with ``search`` / ``open`` / ``answer`` tools.

    Args:
        hops: only questions with this many hops (``None``: all).
        world: the generated world's :class:`WorldConfig` (ignored with a user corpus).
        corpus: JSON lines of documents (``{"title", "text"}``, or ``{"contents"}`` as in Search-R1).
        questions: JSON lines of questions (``{"id"?, "question", "answer" | "answers", "proof"?, "hops"?,
            "split"?}``); required with ``corpus``.
        top_k: how many documents ``search`` returns.
        max_document_chars: ``open`` shows at most this much of a document.
        **kwargs: see :class:`~agentgym_envs.core.TextEnv` (``max_steps`` defaults to 20).

    Example:
        >>> env = DeepSearchEnv(hops=1, split="test", expert_actions=True)  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)                                   # doctest: +SKIP
        >>> env.step(info["expert_action"])[0].startswith("Search results")  # doctest: +SKIP
        True
    """

    family = "deepsearch"
    tools = TOOLS
    default_max_steps = DEFAULT_MAX_STEPS
    _SHARED = ("corpus", "parser", "observation_space", "action_space")

    def __init__(
        self,
        hops: int | None = None,
        world: WorldConfig | Mapping[str, Any] | None = None,
        corpus: str | Path | None = None,
        questions: str | Path | None = None,
        top_k: int = 5,
        max_document_chars: int = 4000,
        **kwargs: Any,
    ):
        if (corpus is None) != (questions is None):
            raise ValueError("a user-supplied corpus needs both corpus= and questions= (JSON lines files)")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if corpus is not None and questions is not None:
            cpath, qpath = Path(corpus).resolve(), Path(questions).resolve()
            mtimes = (cpath.stat().st_mtime if cpath.exists() else 0.0, qpath.stat().st_mtime if qpath.exists() else 0.0)
            self.corpus = load_user_corpus(str(cpath), str(qpath), mtimes)
        else:
            config = world if isinstance(world, WorldConfig) else WorldConfig(**dict(world or {}))
            self.corpus = build_world(config)
        self.hops = hops
        self.top_k = int(top_k)
        self.max_document_chars = int(max_document_chars)
        self.state = SearchState()
        super().__init__(**kwargs)

    # ---- hooks -------------------------------------------------------------------------
    def _task_splits(self) -> TaskSplits:
        def pick(split: str) -> list[str]:
            ids = self.corpus.splits[split]
            return [q for q in ids if self.hops is None or self.corpus.questions[q].hops == self.hops]

        splits = TaskSplits(train=pick("train"), valid=pick("valid"), test=pick("test"))
        if self.hops is not None and not any(splits.get(s) for s in ("train", "valid", "test")):
            raise UnknownTaskError(f"no question has {self.hops} hops")
        return splits

    def _start(self, task_id: Hashable) -> TaskStart:
        question = self.corpus.questions[str(task_id)]
        self.state = SearchState(question=question)
        usage = (
            "Use search(query) to find documents in the knowledge base, open(title) to read a document, "
            "and answer(text) to give your final answer (a short phrase)."
        )
        return TaskStart(observation=f"Question: {question.text}\n{usage}", instruction=question.text)

    def _execute(self, command: str) -> Transition:
        return self._execute_call(self.parser.to_call(command))

    def _execute_call(self, call: ToolCall) -> Transition:
        extra: dict[str, Any] = {"tool": call.name, "tool_error": None, "retrieved": None, "em": None, "f1": None}
        value = next(iter(call.arguments.values()), "").strip()
        if call.name == "answer":
            return self._answer(value, extra)
        if not value:
            message = f"{call.name} needs a non-empty {call.name == 'search' and 'query' or 'title'}."
            extra["tool_error"] = message
            return Transition(message, 0.0, extra=extra)
        if call.name == "search":
            return Transition(self._search(value, extra), 0.0, extra=extra)
        return Transition(self._open(value, extra), 0.0, extra=extra)

    def _search(self, query: str, extra: dict[str, Any]) -> str:
        hits = self.corpus.index.search(query, k=self.top_k)
        self.state.queries.append(query)
        titles = [d.title for d, _ in hits]
        extra["retrieved"] = titles
        known = set(self.state.surfaced)
        self.state.surfaced.extend(t for t in titles if t not in known)
        if not hits:
            extra["tool_error"] = "no results"
            return f"No documents match {query!r}. Try other words."
        lines = [f"{i}. {d.title}: {d.snippet}" for i, (d, _) in enumerate(hits, 1)]
        return f"Search results for {query!r}:\n" + "\n".join(lines)

    def _open(self, title: str, extra: dict[str, Any]) -> str:
        doc = self.corpus.index.get(title)
        if doc is None:
            close = [d.title for d, _ in self.corpus.index.search(title, k=3)]
            extra["tool_error"] = "no such document"
            hint = f" Similar titles: {'; '.join(close)}." if close else ""
            return f"There is no document titled {title!r}.{hint}"
        if doc.title not in self.state.opened:
            self.state.opened.append(doc.title)
        text = doc.text if len(doc.text) <= self.max_document_chars else doc.text[: self.max_document_chars] + " [...]"
        return f"{doc.title}\n{text}"

    def _answer(self, text: str, extra: dict[str, Any]) -> Transition:
        assert self.state.question is not None
        golds = self.state.question.answers
        em, f1 = exact_match(text, golds), token_f1(text, golds)
        self.state.answer = text
        extra.update(em=em, f1=f1)
        return Transition(f"You answered {text!r}. The episode is over.", f1, won=em == 1.0, lost=em != 1.0, extra=extra)

    # ---- expert ------------------------------------------------------------------------
    def _expert(self) -> str | None:
        """Follow the gold chain: search for the next document of the proof, open it, then answer."""
        q = self.state.question
        if q is None:
            raise ExpertUnavailableError("reset() the environment before asking for the expert")
        if self.state.answer is not None:
            return None
        for title in q.proof:
            if title in self.state.opened:
                continue
            if title in self.state.surfaced or title in self.state.queries:
                return self._call("open", title)
            return self._call("search", title)
        return self._call("answer", q.answers[0])

    def expert_query(self, title: str) -> str:
        """The query the expert searches to find ``title`` (the title itself)."""
        return title

    def _call(self, tool: str, value: str) -> str:
        return f"{tool}({json.dumps(value)})"

    # ---- branching (AEPO) --------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The episode state (question, queries, opened documents, step count, RNG, ...) at this step.

        Restore it with :meth:`restore` as often as needed to branch rollouts at a tool call; the
        corpus and index are shared, not copied.

        Example:
            >>> env = DeepSearchEnv(hops=1, split="test"); _ = env.reset(seed=0)  # doctest: +SKIP
            >>> snap = env.snapshot(); _ = env.step('search("x")'); env.restore(snap)  # doctest: +SKIP
        """
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in self._SHARED}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Return to a :meth:`snapshot`."""
        self.__dict__.update(copy.deepcopy(dict(snapshot)))

    def __deepcopy__(self, memo: dict[int, Any]) -> DeepSearchEnv:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = v if k in self._SHARED else copy.deepcopy(v, memo)
        return new


def iter_questions(env: DeepSearchEnv) -> Iterable[Question]:
    """The questions of an environment's task list, in order."""
    return (env.corpus.questions[str(t)] for t in env.task_ids)


def registrations() -> list[Registration]:
    entry = "agentgym_envs.families.deepsearch:DeepSearchEnv"
    regs = [Registration("DeepSearch", FAMILY, entry, {}, "Deep search, 1-4 hop questions over a generated KB; 20 steps")]
    regs += [
        Registration(f"DeepSearch-h{h}", FAMILY, entry, {"hops": h}, f"Deep search, {h}-hop questions; 20 steps")
        for h in HOPS
    ]
    return regs
