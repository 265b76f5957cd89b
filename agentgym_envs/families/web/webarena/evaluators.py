"""WebArena's evaluators, rewritten from ``evaluation_harness/evaluators.py`` with the same rules.

A task config's ``eval`` block names one or more ``eval_types``; the task's score is the
product of their scores (so every check must pass):

``string_match``
    The agent's ``stop`` answer against ``reference_answers``: ``exact_match`` (one string,
    equal after :func:`clean_answer`), ``must_include`` (every listed string is a substring of
    the answer; when the list has one entry of one character, a whole token instead, so ``"0"``
    is not found in ``"10"``) and ``fuzzy_match`` (a judge model decides; see :class:`Judge`).
``url_match``
    The last page's URL against ``reference_url`` (alternatives joined by `` |OR| ``): some
    reference's host+path is a substring of the page's host+path, and for every query key of the
    references one of its values is among the page's.
``program_html``
    For each target: open its ``url`` (``"last"``: stay on the last page; ``"func:..."``: a helper
    of the harness, of which :func:`reddit_get_post_url` is provided), run its ``locator`` (empty:
    the page's HTML; ``document....``: a JavaScript expression run in the page, after its
    ``prep_actions``) and compare the text with ``required_contents`` (``exact_match`` or
    ``must_include`` whose entries may hold `` |OR| `` alternatives).

What the harness would ask a model or a site's REST API (``fuzzy_match`` without a judge,
``func:`` locators other than the provided helpers) is reported as *unavailable*: the check
scores 0 and its name is listed in :attr:`EvalOutcome.unavailable`, never passed silently.

Example:
    >>> string_match({"must_include": ["Quest Lumaflex", "Sprite Stasis Ball"]},
    ...              "Quest Lumaflex Band and Sprite Stasis Ball 65 cm", intent="top-2?").score
    1.0
    >>> string_match({"exact_match": "Quest Lumaflex Band"}, "Quest Lumaflex Band and more", intent="top-1?").score
    0.0
"""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from agentgym_envs.errors import AgentGymError

OR = " |OR| "


class EvaluationConfigError(AgentGymError, ValueError):
    """A task's ``eval`` block names an evaluator, a rule or a locator that WebArena does not define."""


@dataclass
class EvalOutcome:
    """The score of one check (or of a whole task) and what could not be checked here.

    Example:
        >>> EvalOutcome(1.0).passed, EvalOutcome(0.0, ["fuzzy_match"]).passed
        (True, False)
    """

    score: float
    unavailable: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.score >= 1.0 and not self.unavailable

    def times(self, other: EvalOutcome) -> EvalOutcome:
        """Both checks (scores multiplied, as WebArena's ``EvaluatorComb`` does)."""
        return EvalOutcome(self.score * other.score, self.unavailable + other.unavailable, self.details + other.details)


# ---- string rules --------------------------------------------------------------------------------
def clean_answer(answer: str) -> str:
    """Stripped, one pair of enclosing quotes removed, lower-cased (WebArena's ``clean_answer``).

    Example:
        >>> clean_answer(' "Sprite" ')
        'sprite'
    """
    answer = answer.strip()
    if len(answer) >= 2 and answer[0] == answer[-1] and answer[0] in "'\"":
        answer = answer[1:-1]
    return answer.lower()


#: Approximates NLTK's ``word_tokenize`` for the one case the harness tokenizes (a one-character
#: reference): numbers with their decimal/thousand separators stay one token, as in NLTK.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|\w+|[^\w\s]")


def exact_match(ref: str, pred: str) -> float:
    """1.0 when ``pred`` and ``ref`` are equal after :func:`clean_answer`.

    Example:
        >>> exact_match("Sprite", "'sprite'"), exact_match("Sprite", "Sprite brand")
        (1.0, 0.0)
    """
    return float(clean_answer(pred) == clean_answer(ref))


def must_include(ref: str, pred: str, tokenize: bool = False) -> float:
    """1.0 when cleaned ``ref`` is in cleaned ``pred``; with ``tokenize`` a one-character ref must be a whole token.

    Example:
        >>> must_include("0", "10 orders", tokenize=True), must_include("0", "10 orders")
        (0.0, 1.0)
    """
    clean_ref, clean_pred = clean_answer(ref), clean_answer(pred)
    if tokenize and len(clean_ref) == 1 and len(_TOKEN.findall(clean_ref)) == 1:
        return float(clean_ref in _TOKEN.findall(clean_pred))
    return float(clean_ref in clean_pred)


class Judge(Protocol):
    """What grades ``fuzzy_match`` (and the reason of an ``N/A`` answer): 1.0 or 0.0."""

    def fuzzy_match(self, pred: str, reference: str, question: str) -> float: ...

    def ua_match(self, pred: str, reference: str, question: str) -> float: ...


@dataclass(frozen=True)
class OpenAIJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint, asked WebArena's judge prompts.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000/v1"`` (a local vLLM server) or ``"https://api.openai.com/v1"``.
        model: the model name the endpoint expects.
        api_key: sent as a bearer token when given.
        timeout_s: per request.

    An unreachable endpoint or an unreadable reply raises :class:`JudgeUnavailableError`
    (the check is then reported unavailable).

    Example:
        >>> judge = OpenAIJudge("http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
        >>> judge.model
        'Qwen/Qwen2.5-7B-Instruct'
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0

    def _ask(self, message: str) -> str:
        body = json.dumps({
            "model": self.model, "temperature": 0, "max_tokens": 768, "top_p": 1.0,
            "messages": [{"role": "system", "content": "You are a helpful assistant"},
                         {"role": "user", "content": message}],
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url.rstrip('/')}/chat/completions", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:  # noqa: S310 - user-chosen endpoint
                return str(json.load(reply)["choices"][0]["message"]["content"]).lower()
        except (OSError, urllib.error.URLError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise JudgeUnavailableError(f"the judge at {self.base_url} did not answer: {exc}") from exc

    def fuzzy_match(self, pred: str, reference: str, question: str) -> float:
        reply = self._ask(
            "Help a teacher to grade the answer of a student given a question. Keep in mind that the student may use "
            "different phrasing or wording to answer the question. The goal is to evaluate whether the answer is "
            f"semantically equivalent to the reference answer.\nquestion: {question}\nreference answer: {reference}\n"
            "all the string 'N/A' that you see is a special sequence that means 'not achievable'\n"
            f"student answer: {pred}\nConclude the judgement by correct/incorrect/partially correct."
        )
        if "partially correct" in reply or "incorrect" in reply:
            return 0.0
        if "correct" in reply:
            return 1.0
        raise JudgeUnavailableError(f"the judge's reply names no verdict: {reply[:100]!r}")

    def ua_match(self, pred: str, reference: str, question: str) -> float:
        reply = self._ask(
            f"task: {question}\nactual unachievable reason: {reference}\nreported unachievable reason: {pred}\n"
            "The task described above is inherently unachievable due to the reason specified under 'actual "
            "unachievable reason'. An individual previously attempted this task and was unable to complete it. They "
            "provided a reason for their failure, which is listed under 'reported unachievable reason'. Your role is "
            "to review both the actual and reported reasons. Determine if the reported reason aligns with the actual "
            "reason, even if implicitly. If the stated reason is in line with the actual reason, respond with 'same'. "
            "Otherwise, respond with 'different'."
        )
        if "different" in reply:
            return 0.0
        if "same" in reply:
            return 1.0
        raise JudgeUnavailableError(f"the judge's reply names no verdict: {reply[:100]!r}")


class JudgeUnavailableError(AgentGymError, RuntimeError):
    """The fuzzy-match judge could not be asked (the check counts as unavailable)."""


def string_match(
    reference_answers: Mapping[str, Any], answer: str, intent: str, judge: Judge | None = None, string_note: str = ""
) -> EvalOutcome:
    """WebArena's ``StringEvaluator`` on the agent's answer.

    Example:
        >>> string_match({"fuzzy_match": ["about 5 km"]}, "5 km", intent="How far?").unavailable
        ['fuzzy_match']
    """
    pred = clean_answer(answer)
    score, unavailable = 1.0, []
    for approach, value in reference_answers.items():
        if approach == "exact_match":
            score *= exact_match(str(value), pred)
        elif approach == "must_include":
            values = _string_list(value, approach)
            for must in values:
                score *= must_include(must, pred, tokenize=len(values) == 1)
        elif approach == "fuzzy_match":
            if value == "N/A":
                score *= exact_match("N/A", pred)
                if score != 1:
                    # Only a judge can tell whether the reported reason is the real one.
                    if judge is None:
                        unavailable.append("ua_match")
                        score = 0.0
                    else:
                        try:
                            score = judge.ua_match(pred, string_note, intent)
                        except JudgeUnavailableError:
                            unavailable.append("ua_match")
                            score = 0.0
            else:
                for reference in _string_list(value, approach):
                    if judge is None:
                        unavailable.append("fuzzy_match")
                        score = 0.0
                        continue
                    try:
                        score *= judge.fuzzy_match(pred, reference, intent)
                    except JudgeUnavailableError:
                        unavailable.append("fuzzy_match")
                        score = 0.0
        else:
            raise EvaluationConfigError(f"unknown reference_answers rule {approach!r}")
    return EvalOutcome(score, sorted(set(unavailable)), [{"eval": "string_match", "score": score, "answer": answer}])


def _string_list(value: Any, rule: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EvaluationConfigError(f"{rule} expects a list of strings, got {value!r}")
    return value


# ---- url_match -----------------------------------------------------------------------------------
def url_match(reference_url: str, page_url: str, url_note: str = "GOLD in PRED") -> EvalOutcome:
    """WebArena's ``URLEvaluator`` on the last page's URL.

    Example:
        >>> url_match("http://h/f/books |OR| http://h/f/Books", "http://h/f/books/").score
        1.0
        >>> url_match("http://h/search?q=boots", "http://h/search?q=shoes&page=2").score
        0.0
    """
    if url_note != "GOLD in PRED":
        raise EvaluationConfigError(f"unknown url_note {url_note!r} (WebArena defines 'GOLD in PRED')")
    refs = [u.rstrip("/") for u in str(reference_url).split(OR)]
    pred = str(page_url).rstrip("/")

    def parts(url: str) -> tuple[str, dict[str, list[str]]]:
        parsed = urlparse(url)
        return parsed.netloc + parsed.path, parse_qs(parsed.query)

    ref_queries: dict[str, set[str]] = defaultdict(set)
    ref_paths = []
    for ref in refs:
        path, query = parts(ref)
        ref_paths.append(path)
        for key, values in query.items():
            ref_queries[key].update(values)
    pred_path, pred_query = parts(pred)
    # The harness tests ``ref in pred_path`` on strings: a substring test, kept as it is.
    score = float(any(ref in pred_path for ref in ref_paths))
    for key, values in ref_queries.items():
        score *= float(any(v in pred_query.get(key, []) for v in values))
    return EvalOutcome(score, [], [{"eval": "url_match", "score": score, "url": page_url}])


# ---- program_html --------------------------------------------------------------------------------
class PageProbe(Protocol):
    """The page ``program_html`` reads: its URL, navigation, scripts and HTML."""

    @property
    def url(self) -> str: ...

    def goto(self, url: str) -> None: ...

    def evaluate(self, expression: str) -> Any: ...

    def content(self) -> str: ...


def reddit_get_post_url(url: str) -> str:
    """The post URL ``scheme://host/f/<forum>/<id>/`` of a post or comment URL (else ``url`` unchanged).

    Example:
        >>> reddit_get_post_url("http://h:9999/f/books/12/a-title/comment/3")
        'http://h:9999/f/books/12/'
    """
    parsed = urlparse(url)
    tokens = parsed.path.split("/")
    if len(tokens) < 4 or tokens[1] != "f":
        return url
    return f"{parsed.scheme}://{parsed.netloc}/f/{tokens[2]}/{tokens[3]}/"


_URL_HELPERS = {"reddit_get_post_url": reddit_get_post_url}
_HELPER_CALL = re.compile(r"^\s*(\w+)\(\s*(['\"])(.*)\2\s*\)\s*$")


def _target_url(spec: str, last_url: str) -> str | None:
    """The URL of a ``func:`` target, or ``None`` when the helper is not provided here."""
    call = _HELPER_CALL.match(spec.split("func:", 1)[1].replace("__last_url__", last_url))
    if call is None or call.group(1) not in _URL_HELPERS:
        return None
    return _URL_HELPERS[call.group(1)](call.group(3))


def program_html(targets: Sequence[Mapping[str, Any]], page: PageProbe) -> EvalOutcome:
    """WebArena's ``HTMLContentEvaluator``: every target's located text holds its required contents.

    Example:
        >>> class Page:  # a recorded page
        ...     url = "http://h/f/books/3/x"
        ...     def goto(self, url): self.url = url
        ...     def evaluate(self, expression): return "Great read"
        ...     def content(self): return "<p>Great read</p>"
        >>> program_html([{"url": "last", "locator": "document.querySelector('p').outerText",
        ...                "required_contents": {"must_include": ["great |OR| good"]}}], Page()).score
        1.0
    """
    outcome = EvalOutcome(1.0)
    for target in targets:
        url = str(target.get("url", "last"))
        locator = str(target.get("locator", ""))
        required = target.get("required_contents") or {}
        if url.startswith("func"):
            resolved = _target_url(url, page.url)
            if resolved is None:
                outcome = outcome.times(EvalOutcome(0.0, [f"program_html url {url}"]))
                continue
            url = resolved
        if url != "last":
            page.goto(url)
        if not locator.strip():
            selected = page.content()
        elif locator.startswith("document.") or locator.startswith("[...document."):
            for prep in target.get("prep_actions", []) or []:
                try:
                    page.evaluate(f"() => {prep}")
                except Exception:  # noqa: BLE001 - the harness ignores failed preparations
                    break
            try:
                selected = str(page.evaluate(f"() => {locator}") or "")
            except Exception:  # noqa: BLE001 - "the page is wrong, return empty"
                selected = ""
        elif locator.startswith("func:"):
            outcome = outcome.times(EvalOutcome(0.0, [f"program_html locator {locator[:60]}"]))
            continue
        else:
            raise EvaluationConfigError(f"unknown program_html locator {locator!r}")
        selected = html.unescape(selected)
        if "exact_match" in required:
            score = exact_match(str(required["exact_match"]), selected)
        elif "must_include" in required:
            score = 1.0
            for content in _string_list(required["must_include"], "must_include"):
                score *= float(any(must_include(alt, selected) for alt in content.split(OR)))
        else:
            raise EvaluationConfigError(f"unknown required_contents {sorted(required)}")
        outcome = outcome.times(EvalOutcome(score, [], [{"eval": "program_html", "url": url, "locator": locator,
                                                          "score": score, "selected": selected[:200]}]))
    return outcome


# ---- the whole eval block --------------------------------------------------------------------------
def evaluate(config: Mapping[str, Any], answer: str, page: PageProbe, judge: Judge | None = None) -> EvalOutcome:
    """Every evaluator of the task config's ``eval_types``, scores multiplied (WebArena's ``evaluator_router``).

    ``program_html`` runs last: it may navigate the page away from the one ``url_match`` reads.

    Example:
        >>> config = {"intent": "?", "eval": {"eval_types": ["string_match"],
        ...           "reference_answers": {"exact_match": "3"}}}
        >>> evaluate(config, "3", page=None).score
        1.0
    """
    spec = config.get("eval") or {}
    types = list(spec.get("eval_types") or [])
    unknown = [t for t in types if t not in ("string_match", "url_match", "program_html")]
    if unknown or not types:
        raise EvaluationConfigError(f"eval_types must name string_match, url_match or program_html, got {types}")
    outcome = EvalOutcome(1.0)
    if "string_match" in types:
        outcome = outcome.times(string_match(spec.get("reference_answers") or {}, answer, str(config.get("intent", "")),
                                             judge, str(spec.get("string_note", ""))))
    if "url_match" in types:
        outcome = outcome.times(url_match(str(spec.get("reference_url") or ""), page.url,
                                          spec.get("url_note") or "GOLD in PRED"))
    if "program_html" in types:
        outcome = outcome.times(program_html(spec.get("program_html") or [], page))
    return outcome
