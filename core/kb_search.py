"""Knowledge-base suggestions: an in-memory, CJK-aware, typo-tolerant index over articles.

Pure (no I/O): ``KbIndex.build(articles)`` once, then ``index.suggest(text, language)``. An empty
list is the explicit "no article matched" outcome: the future KB-gap KPI counts exactly those.

Scoring a question against an article (0-100):

- text -> terms: NFKC + casefold; words minus stop words, lightly stemmed; runs of Han, Kana or
  Hangul (written without spaces) become overlapping character bigrams (忘记密码 -> 忘记 记密
  密码), so no segmenter is needed and a bigram hit means two characters in a row matched.
- every term weighs its IDF: "password" is evidence, "account" (in half the KB) barely is.
- typos: a query word the KB never uses is looked up with ``rapidfuzz.process.extract``
  (``fuzz.ratio`` >= FUZZY_CUTOFF) among KB words of similar length ("pasword" -> "password");
  the match counts with its similarity.
- headline = the best of: title recall (IDF share of the title's terms the question mentions),
  keyword recall (the best single keyword phrase: keywords are alternatives, not a checklist),
  body coverage x BODY_WEIGHT. It says what the article is *about*; ``why`` names that field.
- coverage = IDF share of the question the article answers (title/keywords fully, body at
  BODY_WEIGHT; words the KB never uses weigh OOV_WEIGHT, so chatty text dilutes only a little).
- score = 100 x (HEAD_SHARE x headline + (1 - HEAD_SHARE) x coverage), x OTHER_LANGUAGE_FACTOR
  when the article is not in the customer's language; below MIN_SCORE nothing is suggested.

Why not whole-string scorers (token_set_ratio / partial_ratio / WRatio over title+body): they have
no notion of term rarity (sharing "account" counts like sharing "password"; token_set_ratio is 100
whenever one side's words are a subset of the other's), and unsegmented Chinese drowns in the
noise of a conversational question (我忘记了密码怎么办 vs 如何重置密码: token_set_ratio 27,
partial_ratio 36, WRatio 33). So rapidfuzz does what it is exact and fast at: word similarity.

Speed: postings (term -> article ids + field bits) accumulate a cheap estimate of the score, with
the same head/body weights; only the best CANDIDATES articles get the exact score. Terms in more
than COMMON_SHARE of the articles don't pull in candidates (they still count when scoring), so a
question of common words stays cheap.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rapidfuzz import fuzz, process

from core.kb import Article

Field = Literal["title", "keywords", "body"]

MIN_SCORE = 55.0  # below: no suggestion (a "KB gap"); see tests for the calibration cases
HEAD_SHARE = 0.6
BODY_WEIGHT = 0.7  # a body hit is weaker evidence than a title or keyword hit
OOV_WEIGHT = 0.3  # of the rarest term's IDF, for query words no article uses
OTHER_LANGUAGE_FACTOR = 0.8  # another language must be 25% better to outrank the customer's
FUZZY_CUTOFF = 82.0  # fuzz.ratio: one typo in a 6+ letter word, a dropped letter in 5
FUZZY_MIN_LENGTH = 5  # shorter words have too many neighbours ("last" ~ "late")
FUZZY_PER_TERM = 2
CANDIDATES = 40
COMMON_SHARE = 0.1
MAX_QUERY_TERMS = 64  # a pasted log or e-mail thread must not make suggest() slow

_TITLE, _KEYWORDS, _BODY = 1, 2, 4
_HEAD = _TITLE | _KEYWORDS

_CJK = (
    "\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff"
)
# CJK runs first; words are letters/digits of any other script (apostrophes kept: "can't").
_TOKEN = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+(?:['’][^\W_{_CJK}]+)*)")

_STOP_WORDS = """
    a about after again all also am an and any anymore are as at be because been before being but
    by can can't cannot could did didn't do does doesn't doing don't for from get gets got had has
    have having he hello her here hey hi him his how i i'd i'm i've if in into is isn't it it's its
    just let's me more my no not now of on once only or other our out over please same she should
    so some still such than thank thanks that that's the their them then there there's these they
    this those to too under until up us very was wasn't we were what what's when where which while
    who why will with won't would you you're your yours
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
# Function-word bigrams of a Chinese question; they say nothing about the topic.
_CJK_STOP_BIGRAMS = (
    "怎么 怎样 如何 什么 可以 能否 是否 我们 你们 他们 一个 这个 那个 没有 已经 现在 "
    "请问 谢谢 您好 你好 一下 还是 或者 因为 所以 但是 如果 的话 不能 无法 不了"
)
CJK_STOP_BIGRAMS = frozenset(_CJK_STOP_BIGRAMS.split())


@dataclass(frozen=True, slots=True)
class Suggestion:
    slug: str
    title: str
    score: float  # 0-100, rounded to one decimal
    why: Field  # the field that matched best


def _stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed, final e): only has to be consistent."""
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if word[-1] == word[-2] and word[-1] not in "lsz":  # resetting -> reset
                word = word[:-1]
            break
    if word.endswith("e") and len(word) > 3:  # charge/charged/charging -> charg
        word = word[:-1]
    return word


def words(text: str) -> list[tuple[str, str]]:
    """(surface form, index term) pairs of ``text`` in order, duplicates kept. The surface form is
    what a typo is compared with: "lodaing" is close to "loading", not to its stem "load"."""
    found: list[tuple[str, str]] = []
    for cjk, word in _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()):
        if cjk:
            if len(cjk) == 1:
                found.append((cjk, cjk))
            else:
                found.extend(
                    (bigram, bigram)
                    for bigram in (cjk[i : i + 2] for i in range(len(cjk) - 1))
                    if bigram not in CJK_STOP_BIGRAMS
                )
        elif word not in STOP_WORDS:
            word = word.replace("’", "'")
            found.append((word, _stem(word)))
    return found


def terms(text: str) -> list[str]:
    """Index terms of ``text`` in order (duplicates kept)."""
    return [term for _, term in words(text)]


def _primary_language(tag: str | None) -> str | None:
    return tag.split("-")[0].split("_")[0].strip().lower() or None if tag else None


@dataclass(frozen=True, slots=True)
class _Doc:
    slug: str
    title: str
    language: str | None
    fields: dict[str, int]  # term -> _TITLE | _KEYWORDS | _BODY bits
    title_terms: tuple[tuple[str, float], ...]  # (term, IDF)
    title_weight: float  # sum of the title terms' IDF
    phrases: tuple[tuple[tuple[tuple[str, float], ...], float], ...]  # keyword phrases, alike


@dataclass(frozen=True, slots=True)
class _QueryTerm:
    weight: float
    matches: tuple[tuple[str, float], ...]  # KB term, similarity 0-1


class KbIndex:
    """Built once from all articles; rebuilt (cheaply) when the KB changes. Read-only after."""

    def __init__(
        self,
        docs: Sequence[_Doc],
        postings: dict[str, tuple[int, ...]],  # term -> (article id << 3 | field bits), ...
        idf: dict[str, float],
        surfaces: dict[str, str],
    ) -> None:
        self._docs = docs
        self._postings = postings
        self._idf = idf
        self._surfaces = surfaces  # KB word as written -> its term, for typo look-ups
        self._fuzzy_pools = _fuzzy_pools(surfaces)
        self._oov_weight = OOV_WEIGHT * _idf(len(docs), 1)
        self._common_df = max(1, int(len(docs) * COMMON_SHARE))

    def __len__(self) -> int:
        return len(self._docs)

    @classmethod
    def build(cls, articles: Iterable[Article]) -> KbIndex:
        parsed: list[tuple[Article, dict[str, int], list[str], list[tuple[str, ...]]]] = []
        df: dict[str, int] = defaultdict(int)
        surfaces: dict[str, str] = {}
        for article in articles:
            title = words(article.title)
            phrases = [words(p) for p in re.split(r"[,;，、；\n]", article.keywords)]
            body = words(article.body)
            for pairs in (title, body, *phrases):
                surfaces.update(pairs)
            fields: dict[str, int] = defaultdict(int)
            for _, term in title:
                fields[term] |= _TITLE
            for phrase in phrases:
                for _, term in phrase:
                    fields[term] |= _KEYWORDS
            for _, term in body:
                fields[term] |= _BODY
            for term in fields:
                df[term] += 1
            unique = [tuple(dict.fromkeys(t for _, t in p)) for p in phrases]
            parsed.append(
                (
                    article,
                    dict(fields),
                    list(dict.fromkeys(t for _, t in title)),
                    [p for p in dict.fromkeys(unique) if p],
                )
            )

        n = len(parsed)
        idf = {term: _idf(n, count) for term, count in df.items()}
        docs: list[_Doc] = []
        postings: dict[str, list[int]] = defaultdict(list)
        for doc_id, (article, fields, title_terms, phrase_terms) in enumerate(parsed):
            for term, bits in fields.items():
                postings[term].append(doc_id << 3 | bits)
            docs.append(
                _Doc(
                    slug=article.slug,
                    title=article.title,
                    language=_primary_language(article.language),
                    fields=fields,
                    title_terms=tuple((t, idf[t]) for t in title_terms),
                    title_weight=sum(idf[t] for t in title_terms),
                    phrases=tuple(
                        (tuple((t, idf[t]) for t in p), sum(idf[t] for t in p))
                        for p in phrase_terms
                    ),
                )
            )
        return cls(docs, {t: tuple(ids) for t, ids in postings.items()}, idf, surfaces)

    def suggest(self, text: str, language: str | None = None, limit: int = 3) -> list[Suggestion]:
        """At most ``limit`` articles scoring >= MIN_SCORE, best first; [] = no article fits."""
        query = self._query(text)
        if limit <= 0 or not any(q.matches for q in query):
            return []
        wanted = _primary_language(language)
        scored: list[tuple[float, float, str, Suggestion]] = []
        for doc_id in self._candidates(query):
            doc = self._docs[doc_id]
            score, why, title_recall = self._score(doc, query)
            if wanted and doc.language != wanted:
                score *= OTHER_LANGUAGE_FACTOR
            if score >= MIN_SCORE:
                suggestion = Suggestion(doc.slug, doc.title, round(score, 1), why)
                scored.append((-score, -title_recall, doc.slug, suggestion))
        return [s for *_, s in heapq.nsmallest(limit, scored)]

    # -- internals ----------------------------------------------------------------------------

    def _query(self, text: str) -> list[_QueryTerm]:
        query: list[_QueryTerm] = []
        for term, surface in list(dict((t, s) for s, t in words(text)).items())[:MAX_QUERY_TERMS]:
            if term in self._idf:
                query.append(_QueryTerm(self._idf[term], ((term, 1.0),)))
                continue
            matches = self._fuzzy(surface)
            if matches:
                weight = max(self._idf[t] * sim for t, sim in matches)
                query.append(_QueryTerm(weight, matches))
            else:
                query.append(_QueryTerm(self._oov_weight, ()))
        return query

    def _fuzzy(self, surface: str) -> tuple[tuple[str, float], ...]:
        pool = self._fuzzy_pools.get(len(surface))
        if pool is None or len(surface) < FUZZY_MIN_LENGTH or not surface.isascii():
            return ()
        best: dict[str, float] = {}
        for match, score, _ in process.extract(
            surface, pool, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF, limit=FUZZY_PER_TERM
        ):
            term = self._surfaces[match]
            best[term] = max(best.get(term, 0.0), score / 100.0)
        return tuple(best.items())

    def _candidates(self, query: list[_QueryTerm]) -> list[int]:
        """Article ids worth the exact score: best by IDF-weighted hits on uncommon terms."""
        hits = [(t, sim, q.weight) for q in query for t, sim in q.matches]
        uncommon = [h for h in hits if len(self._postings[h[0]]) <= self._common_df]
        if not uncommon:  # only common words: the rarest of them still finds something
            uncommon = [min(hits, key=lambda h: len(self._postings[h[0]]))]
        bound: dict[int, float] = defaultdict(float)
        for term, sim, weight in uncommon:
            head_gain = weight * sim
            body_gain = BODY_WEIGHT * head_gain  # as in _score, so the cut agrees with it
            for code in self._postings[term]:
                bound[code >> 3] += head_gain if code & _HEAD else body_gain
        if len(bound) <= CANDIDATES:
            return list(bound)
        return heapq.nlargest(CANDIDATES, bound, key=bound.__getitem__)

    def _score(self, doc: _Doc, query: list[_QueryTerm]) -> tuple[float, Field, float]:
        """(score 0-100, the field that matched best, title recall for tie-breaks)."""
        fields = doc.fields
        matched: dict[str, float] = {}  # article term -> best similarity to a query term
        total = answered = body = 0.0
        for q in query:
            total += q.weight
            head_sim = body_sim = 0.0
            for term, sim in q.matches:
                bits = fields.get(term, 0)
                if not bits:
                    continue
                if sim > matched.get(term, 0.0):
                    matched[term] = sim
                if bits & _HEAD and sim > head_sim:
                    head_sim = sim
                if bits & _BODY and sim > body_sim:
                    body_sim = sim
            answered += q.weight * (
                head_sim if head_sim > BODY_WEIGHT * body_sim else BODY_WEIGHT * body_sim
            )
            body += q.weight * body_sim
        if not matched:
            return 0.0, "body", 0.0
        title = 0.0
        if doc.title_weight:
            title = sum(w * matched.get(t, 0.0) for t, w in doc.title_terms) / doc.title_weight
        keywords = 0.0
        for phrase, weight in doc.phrases:
            if weight:
                keywords = max(keywords, sum(w * matched.get(t, 0.0) for t, w in phrase) / weight)
        body = BODY_WEIGHT * body / total
        why: Field
        head, why = (title, "title") if title >= keywords else (keywords, "keywords")
        if body > head:
            head, why = body, "body"
        score = 100.0 * (HEAD_SHARE * head + (1.0 - HEAD_SHARE) * answered / total)
        return score, why, title


def _idf(n: int, df: int) -> float:
    """BM25's IDF, kept positive so a term in every article still counts a little."""
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _fuzzy_pools(surfaces: dict[str, str]) -> dict[int, list[str]]:
    """For each query word length, the KB words a typo of that length could be (the cutoff
    bounds the length difference); precomputed so a look-up is one rapidfuzz call."""
    by_length: dict[int, list[str]] = defaultdict(list)
    for word in surfaces:
        if len(word) >= FUZZY_MIN_LENGTH - 1 and word.isascii() and word.isalpha():
            by_length[len(word)].append(word)
    pools: dict[int, list[str]] = {}
    for n in range(FUZZY_MIN_LENGTH, max(by_length, default=0) + 2):
        spread = max(1, n // 4)
        pools[n] = [w for m in range(n - spread, n + spread + 1) for w in by_length.get(m, ())]
    return pools
