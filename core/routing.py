"""Routing rules: ordered (conditions -> actions), evaluated purely and deterministically.

A rule file is TOML::

    [[rules]]
    name = "vip-eu"
    stop = true                       # default: the first matching rule ends evaluation
    [rules.when]                      # every key must hold; a list inside a key is any-of
    channel = ["email", "slack"]
    customer = { tier = "vip", region = ["eu", "uk"] }
    [rules.then]
    team = "vip"
    assign = "least_loaded"

Everything costly is done once when a rule is built (regexes compiled, keywords folded and
classified, zones looked up) and once per ticket (text folded and split into words, lazily, only
when a rule gets as far as a text condition). Conditions run cheapest first. The explanation of
why a rule fired is only worked out for rules that fired, for the ticket's history.

Per ticket, the costly steps are splitting the text into words and regex searches, so: ASCII
text (most tickets) is lowered and split in one bytes.translate, and only the words some keyword
uses are kept; a regex runs only in a text holding the literal it requires and as many digits as
it needs (for a pattern of digits and separators, in one run of them), starting at its leading
literal, and for ASCII text compiled with re.ASCII when that means the same
(``required_literal``, ``min_digits``, ``digit_run``, ``literal_prefix``, ``ascii_variant``).
"""

from __future__ import annotations

import re
import re._constants as _sre  # the literal prefilter reads parsed patterns
import re._parser as _sre_parser
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from datetime import datetime
from itertools import filterfalse
from operator import attrgetter
from pathlib import Path
from string import Template
from typing import Any, ClassVar, NamedTuple, Protocol

from core.assign import DAYS, STRATEGIES, WorkingHours, parse_days, parse_hours, zone
from core.errors import ConfigError
from core.tickets import Priority

# Routing looks at this much of a body: a pasted log must not make every ticket slow to route
# (the intake cap is 100,000 characters; what decides routing is near the top).
MAX_SCAN_CHARS = 20_000
PLACEHOLDERS = frozenset({"number", "name", "subject"})
NOTIFY_KINDS = ("slack", "telegram", "email")

# Scripts written without spaces between words: a keyword in them matches as a substring.
_CJK = (
    "\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff"
)
# A word is a run of word characters of the other scripts, so "iPhone退款" holds "iphone".
_WORD = re.compile(rf"[^\W{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]+")
_NOT_AFTER_WORD = rf"(?<![^\W{_CJK}])"
_NOT_BEFORE_WORD = rf"(?![^\W{_CJK}])"


def fold(text: str) -> str:
    """Case- and width-insensitive form (NFKC, casefold): "ＲＥＦＵＮＤ" == "refund"."""
    if text.isascii():
        return text.lower()  # the same result, without the normalizer
    if not unicodedata.is_normalized("NFKC", text):
        # CJK text is rarely NFKC only for its fullwidth punctuation, and normalizing a whole
        # text is slow: replaced first by its NFKC form (which leaves the text's NFKC as it
        # is), the text often passes the normalizer's quick check instead
        for wide, narrow in _FULLWIDTH:
            if wide in text:
                text = text.replace(wide, narrow)
        text = unicodedata.normalize("NFKC", text)
    return text.casefold().replace("\u2019", "'")


_FULLWIDTH = tuple((c, unicodedata.normalize("NFKC", c)) for c in "，？！：；（）")


# ASCII non-word characters -> space: for ASCII text, splitting this is _WORD.findall, faster
_ASCII_SPACES = bytes(c if c > 127 or chr(c).isalnum() or c == ord("_") else 32 for c in range(256))
# the same, also lowering A-Z: the words of ASCII text without folding it first (fold is lower())
_ASCII_WORDS = _ASCII_SPACES.translate(
    bytes.maketrans(_UPPER := bytes(range(65, 91)), _UPPER.lower())
)


HAS_CJK = "\x00cjk"  # in the words of a text with CJK characters: CJK keywords are possible


def words_of(folded: str) -> frozenset[str]:
    """The words of folded text (runs of non-CJK word characters; CJK is matched by substring,
    and ``HAS_CJK`` says there is some)."""
    return frozenset(_tokens(folded))


def _tokens(folded: str) -> list[str] | set[str]:
    """``words_of`` without the frozenset (a caller intersecting with keywords needs none)."""
    # Blank out ASCII punctuation at C speed (UTF-8 bytes of other characters are >= 0x80 and
    # pass through), split; only tokens with other characters need the regex.
    raw = folded.encode("utf-8", "surrogatepass").translate(_ASCII_SPACES)
    tokens = raw.decode("utf-8", "surrogatepass").split()
    if folded.isascii():
        return tokens
    # CJK characters are U+1100 and above, whose UTF-8 starts with a byte >= 0xE1: most
    # non-ASCII text (accented Latin letters) has none, and then a token of word characters
    # only (isalnum, which is re's \w but "_") is one word, without the regex
    cjk = _may_hold_cjk(raw) and _CJK_RUN.search(folded) is not None
    if not cjk and "".join(tokens).replace("_", "").isalnum():
        # every token is alphanumeric but for "_" (accented Latin text, identifiers in a
        # pasted log): each is one run of re's \w, which is isalnum or "_"; one C pass tells
        return tokens
    if not cjk:
        words = set()
        for token in tokens:
            if token.isascii() or token.isalnum():
                words.add(token)
            else:
                words.update(_WORD.findall(token))
        return words
    # CJK: the words of the ASCII tokens as they are, of the others in one regex pass (a
    # space between them separates words as the text's own separators did)
    words = set(filter(str.isascii, tokens))
    words.update(_WORD.findall(" ".join(filterfalse(str.isascii, tokens))))
    words.add(HAS_CJK)
    return words


def _leads_from(low: int) -> Callable[[bytes], bool]:
    """A test of UTF-8 bytes: is there a byte >= ``low``, the first byte of every character
    from some code point on (0xD9: U+0640, 0xE1: U+1000)? One translate, at C speed: if not,
    the text holds no such character and the regex looking for one need not run."""
    table = bytes(1 if b >= low else 0 for b in range(256))
    needle = "\x01"
    return lambda data: needle in data.translate(table).decode("ascii")  # see DigitRun.found_in


_may_hold_cjk = _leads_from(0xE1)  # CJK characters are U+1100 and above
_may_hold_other_digits = _leads_from(0xD9)  # re's \d beyond 0-9 starts at U+0660


def _ascii_tokens(text: str) -> list[str]:
    """The words of ASCII ``text``, as ``_tokens(fold(text))`` gives them, in one C pass."""
    return text.encode("ascii").translate(_ASCII_WORDS).decode("ascii").split()


# Bytes that are not ASCII digits, deleted to count the digits of ASCII text (see _min_digits)
_NOT_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)
_NON_ASCII_DIGIT = re.compile(r"[^\D0-9]")  # what else re's \d matches: other scripts' digits
_MANY = 1 << 62  # "any number": a text whose digits are not worth counting


def _digit_count(text: str) -> int:
    """How many characters of ``text`` re's ``\\d`` matches, or ``_MANY`` when counting them
    is not cheap (text with digits of other scripts): a bound for ``_min_digits`` prefilters."""
    data = text.encode("utf-8", "surrogatepass")
    if not text.isascii() and _may_hold_other_digits(data) and _NON_ASCII_DIGIT.search(text):
        return _MANY
    # other characters' UTF-8 bytes are >= 0x80, so they are deleted with the rest
    return len(data.translate(None, _NOT_DIGITS))


class RuleError(ValueError):
    """A bad rule; ``field`` is the rule's key ("when.regex", "then.team") when there is one."""

    def __init__(self, field: str | None, detail: str) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.field = field
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RoutingInput:
    """What evaluation needs to know about a new ticket. ``received_at`` must be aware."""

    channel: str
    received_at: datetime
    subject: str = ""
    body: str = ""
    inbox: str | None = None
    language: str | None = None
    customer: Mapping[str, Any] = field(default_factory=dict)  # Customer.attributes
    priority: str = Priority.NORMAL

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")


class Facts:
    """One input as conditions see it: the folded text, its words, local times and customer
    attributes are worked out at most once per input, and only when a condition asks.

    ``vocabulary`` (``route`` passes every word its rules' keywords use): ``words`` then holds
    only those, which is all a keyword test can ask about, and building it costs a lookup per
    word of the text instead of a set of them all."""

    __slots__ = (
        "_attrs",
        "_digits",
        "_folded",
        "_langs",
        "_local",
        "_lowered",
        "_odd",
        "_shaped",
        "_vocabulary",
        "_words",
        "ascii",
        "channel",
        "found",
        "inbox",
        "input",
        "priority",
        "texts",
    )

    def __init__(self, inp: RoutingInput, vocabulary: frozenset[str] | None = None) -> None:
        self.input = inp
        self.channel = str(inp.channel).lower()
        self.inbox = inp.inbox.lower() if inp.inbox else None
        self.priority = str(inp.priority).lower()
        subject, body = inp.subject, inp.body
        if len(body) > MAX_SCAN_CHARS:
            body = body[:MAX_SCAN_CHARS]
        self.texts = (subject, body)  # SUBJECT, BODY
        self.ascii = ascii = (subject.isascii(), body.isascii())  # SUBJECT, BODY: fast paths
        self._vocabulary = vocabulary
        # by where (SUBJECT, BODY, BOTH); the caches most tickets never use are made when first
        # used (each container made and freed per ticket costs a few hundred instructions).
        # Folding ASCII text is lower(), as lowering is: for an ASCII ticket (most) one cache
        # serves both, so a text is lowered once for keywords and regex prefilters alike.
        folded: list[str | None] = [None, None, None]
        self._folded = folded
        self._lowered: list[str | None] = folded if ascii[0] and ascii[1] else [None, None, None]
        self._words: list[frozenset[str] | None] = [None, None, None]
        self._digits: list[int] | None = None  # SUBJECT, BODY; -1: not counted yet
        self._odd: list[bool | None] | None = None
        self._shaped: list[str | None] | None = None
        self._langs: tuple[str, ...] | None = None
        self._local: dict[str, datetime] | None = None
        self._attrs: dict[str, tuple[Any, ...] | None] | None = None
        # what a condition found while testing (by id), so explaining a fired rule is free
        self.found: dict[int, str] = {}

    def folded(self, where: int) -> str:
        text = self._folded[where]
        if text is None:
            if where == BOTH:
                text = self.folded(SUBJECT) + "\n" + self.folded(BODY)
            else:
                text = fold(self.texts[where])
            self._folded[where] = text
        return text

    def lowered(self, where: int) -> str:
        """The raw text in lower case, for regex literal prefilters (see ``required_literal``)."""
        text = self._lowered[where]
        if text is None:
            if where == BOTH:
                text = self.lowered(SUBJECT) + "\n" + self.lowered(BODY)
            else:
                raw = self.texts[where]
                if raw.isascii():
                    text = raw.lower()
                else:
                    # The only non-ASCII letters re.IGNORECASE equates with ASCII ones whose
                    # lower() is not that ASCII letter: dotless i, long s, and dotted capital I
                    # (lower() gives "i" + a combining dot; re compares the one-letter "i").
                    text = raw.replace("\u0130", "i").lower()
                    text = text.replace("\u0131", "i").replace("\u017f", "s")
            self._lowered[where] = text
        return text

    def shaped(self, part: int) -> str:
        """The ASCII subject (SUBJECT) or body (BODY) lowered, each digit as "0" (see
        ``shape_prefix``)."""
        shaped = self._shaped
        if shaped is None:
            shaped = self._shaped = [None, None]
        text = shaped[part]
        if text is None:
            text = self.texts[part].encode("ascii").translate(_SHAPES).decode("ascii")
            shaped[part] = text
        return text

    def words(self, where: int) -> frozenset[str]:
        """``words_of(self.folded(where))``, restricted to the vocabulary when there is one."""
        words = self._words[where]
        if words is None:
            if where == BOTH:
                # the "\n" joining them separates words: the words of both are the union
                words = self.words(SUBJECT) | self.words(BODY)
            else:
                # ASCII (most tickets): fold is lower(), done by the same translate as the split
                if self.ascii[where]:
                    tokens: Iterable[str] = _ascii_tokens(self.texts[where])
                else:
                    tokens = _tokens(self.folded(where))
                vocabulary = self._vocabulary
                words = frozenset(tokens) if vocabulary is None else vocabulary.intersection(tokens)
            self._words[where] = words
        return words

    def digits(self, part: int) -> int:
        """``_digit_count`` of the subject (SUBJECT) or the body (BODY)."""
        counts = self._digits
        if counts is None:
            counts = self._digits = [-1, -1]
        count = counts[part]
        if count < 0:
            count = counts[part] = _digit_count(self.texts[part])
        return count

    def odd_spaces(self, part: int) -> bool:
        """Whether the subject (SUBJECT) or the body (BODY) has \\x1c-\\x1f (see ascii_variant)."""
        odd = self._odd
        if odd is None:
            odd = self._odd = [None, None]
        found = odd[part]
        if found is None:
            found = odd[part] = _ODD_SPACES.search(self.texts[part]) is not None
        return found

    def languages(self) -> tuple[str, ...]:
        """ "zh-Hant-TW" -> ("zh", "zh-hant", "zh-hant-tw"): a rule for "zh" matches all three."""
        if self._langs is None:
            tag = (self.input.language or "").strip().lower().replace("_", "-")
            if "-" not in tag:
                self._langs = (tag,) if tag else ()
            else:
                parts = tag.split("-")
                self._langs = tuple("-".join(parts[: i + 1]) for i in range(len(parts)))
        return self._langs

    def local(self, hours: WorkingHours) -> datetime:
        local = self._local
        if local is None:
            local = self._local = {}
        found = local.get(hours.tz)
        if found is None:
            found = local[hours.tz] = hours.local(self.input.received_at)
        return found

    def attribute(self, name: str) -> tuple[Any, ...] | None:
        """A customer attribute as comparable values (see ``_norm``); None when unset or empty."""
        attrs = self._attrs
        if attrs is None:
            attrs = self._attrs = {}
        found = attrs.get(name, _UNSET)
        if found is not _UNSET:
            return found
        value = self.input.customer.get(name)
        if type(value) is str:  # the usual case first, without the generic checks
            found = (value.strip().casefold(),) if value else None
        elif value is None or value == "" or (isinstance(value, Sized) and not len(value)):
            found = None
        elif isinstance(value, str):
            found = (value.strip().casefold(),)
        elif isinstance(value, _COLLECTIONS):
            found = tuple(_norm(v) for v in value if isinstance(v, _SCALARS))
        elif isinstance(value, _SCALARS):
            found = (_norm(value),)
        else:
            found = ()  # a nested table is present but equals nothing
        attrs[name] = found
        return found


_UNSET: Any = object()


SUBJECT, BODY, BOTH = 0, 1, 2
_PARTS = ((SUBJECT,), (BODY,), (SUBJECT, BODY))  # the texts searched, by where
_WHERE_NAMES = ("subject", "body", "subject or body")


class Condition(Protocol):
    @property
    def key(self) -> str:  # the rule's field, for errors and explanations ("when.regex")
        ...

    @property
    def cost(self) -> int:  # cheaper conditions run first
        ...

    def test(self, facts: Facts) -> bool: ...

    def explain(self, facts: Facts) -> str: ...


def _strings(key: str, values: Iterable[str]) -> tuple[str, ...]:
    out = tuple(values)
    if not out or any(not isinstance(v, str) or not v.strip() for v in out):
        raise RuleError(key, "expected a non-empty list of non-empty strings")
    return out


@dataclass(frozen=True, slots=True)
class ChannelIs:
    values: tuple[str, ...]
    _set: frozenset[str] = field(init=False, repr=False, compare=False)
    key: ClassVar[str] = "when.channel"
    cost: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_set", frozenset(v.lower() for v in _strings(self.key, self.values))
        )

    def test(self, facts: Facts) -> bool:
        return facts.channel in self._set

    def explain(self, facts: Facts) -> str:
        return f"channel {facts.channel}"


@dataclass(frozen=True, slots=True)
class InboxIs:
    values: tuple[str, ...]
    _set: frozenset[str] = field(init=False, repr=False, compare=False)
    key: ClassVar[str] = "when.inbox"
    cost: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_set", frozenset(v.lower() for v in _strings(self.key, self.values))
        )

    def test(self, facts: Facts) -> bool:
        return facts.inbox in self._set

    def explain(self, facts: Facts) -> str:
        return f"inbox {facts.input.inbox!r}"


@dataclass(frozen=True, slots=True)
class LanguageIs:
    """Language tags; "zh" matches "zh-CN" and "zh-Hant-TW", "zh-tw" only "zh-TW"."""

    values: tuple[str, ...]
    _set: frozenset[str] = field(init=False, repr=False, compare=False)
    key: ClassVar[str] = "when.language"
    cost: ClassVar[int] = 1

    def __post_init__(self) -> None:
        tags = frozenset(
            v.strip().lower().replace("_", "-") for v in _strings(self.key, self.values)
        )
        object.__setattr__(self, "_set", tags)

    def test(self, facts: Facts) -> bool:
        return not self._set.isdisjoint(facts.languages())

    def explain(self, facts: Facts) -> str:
        return f"language {facts.input.language}"


@dataclass(frozen=True, slots=True)
class PriorityIs:
    values: tuple[str, ...]
    _set: frozenset[str] = field(init=False, repr=False, compare=False)
    key: ClassVar[str] = "when.priority"
    cost: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_set",
            frozenset(_priority(self.key, v).value for v in _strings(self.key, self.values)),
        )

    def test(self, facts: Facts) -> bool:
        return facts.priority in self._set

    def explain(self, facts: Facts) -> str:
        return f"priority {facts.priority}"


_SCALARS = (str, bool, int, float)
_COLLECTIONS = (list, tuple, set, frozenset)  # a tuple: `list | tuple | ...` is built per use


def _norm(value: Any) -> Any:
    # Strings compare case-insensitively; a bool is never equal to 1 (JSON true vs 1).
    if isinstance(value, str):
        return value.strip().casefold()
    if isinstance(value, bool):
        return ("bool", value)
    return value


@dataclass(frozen=True, slots=True)
class CustomerAttr:
    """A customer attribute (``Customer.attributes``): ``op`` "equals" one value, "in" a list,
    or "exists" (true/false). A list-valued attribute (tags) matches when any item does."""

    name: str
    op: str
    value: Any
    _wanted: frozenset[Any] = field(init=False, repr=False, compare=False)
    _listed: str = field(init=False, repr=False, compare=False)  # "in": the list, for explain
    cost: ClassVar[int] = 2

    def __post_init__(self) -> None:
        key = self.key
        listed = ""
        if self.op == "exists":
            if not isinstance(self.value, bool):
                raise RuleError(key, "exists takes true or false")
            wanted: frozenset[Any] = frozenset()
        elif self.op == "equals":
            if not isinstance(self.value, _SCALARS):
                raise RuleError(key, f"expected a string, number or boolean, got {self.value!r}")
            wanted = frozenset({_norm(self.value)})
        elif self.op == "in":
            if not isinstance(self.value, list | tuple) or not self.value:
                raise RuleError(key, "in takes a non-empty list")
            if any(not isinstance(v, _SCALARS) for v in self.value):
                raise RuleError(key, "in takes strings, numbers or booleans")
            values = tuple(self.value)
            object.__setattr__(self, "value", values)  # hashable, like the rest
            wanted = frozenset(_norm(v) for v in values)
            listed = repr(list(values))
        else:
            raise RuleError(key, f"unknown operator {self.op!r} (equals, in, exists)")
        object.__setattr__(self, "_wanted", wanted)
        object.__setattr__(self, "_listed", listed)

    @property
    def key(self) -> str:
        return f"when.customer.{self.name}"

    def test(self, facts: Facts) -> bool:
        have = facts.attribute(self.name)
        if self.op == "exists":
            return (have is not None) is self.value
        return have is not None and not self._wanted.isdisjoint(have)

    def explain(self, facts: Facts) -> str:
        value = facts.input.customer.get(self.name)
        if self.op == "exists":
            return f"customer {self.name} {'is set' if self.value else 'is not set'}"
        if self.op == "in":
            return f"customer {self.name} {value!r} in {self._listed}"
        return f"customer {self.name} = {value!r}"


class _Compiled(NamedTuple):
    literal: str | None  # see required_literal
    prefix: str | None  # see literal_prefix
    shape: str | None  # see shape_prefix
    digits: int  # see min_digits
    run: DigitRun | None  # see digit_run
    regex: re.Pattern[str]
    ascii: tuple[re.Pattern[str], bool] | None  # see ascii_variant
    shown: str  # in explanations


class _Phrase(NamedTuple):
    keyword: str
    required: frozenset[str]  # words that must all occur before the regex is worth running
    regex: re.Pattern[str]
    first: str  # what every match starts with: the search starts at its first occurrence


@dataclass(frozen=True, slots=True)
class Keywords:
    """Any of ``words`` in the subject, the body or either (case- and width-insensitive).
    A keyword matches whole words ("bill" is not in "billing"); in CJK text, where words are
    not separated, a CJK keyword matches as a substring ("退款" in "我要退款")."""

    where: int
    words: tuple[str, ...]
    _singles: frozenset[str] = field(init=False, repr=False, compare=False)
    _substrings: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _phrases: tuple[_Phrase, ...] = field(init=False, repr=False, compare=False)
    cost: ClassVar[int] = 5

    def __post_init__(self) -> None:
        singles: set[str] = set()
        substrings: list[str] = []
        phrases: list[_Phrase] = []
        for word in _strings(self.key, self.words):
            kw = " ".join(fold(word).split())
            if _WORD.fullmatch(kw):
                singles.add(kw)
            elif _CJK_RUN.fullmatch(kw):
                substrings.append(kw)
            else:
                pattern = r"\s+".join(re.escape(part) for part in kw.split(" "))
                if _WORD.match(kw[0]):
                    pattern = _NOT_AFTER_WORD + pattern
                if _WORD.match(kw[-1]):
                    pattern += _NOT_BEFORE_WORD
                required = frozenset(_WORD.findall(kw))
                first = kw.split(" ")[0]
                phrases.append(_Phrase(kw, required, re.compile(pattern), first))
        object.__setattr__(self, "_singles", frozenset(singles))
        object.__setattr__(self, "_substrings", tuple(substrings))
        object.__setattr__(self, "_phrases", tuple(phrases))

    @property
    def key(self) -> str:
        return ("when.subject_keywords", "when.body_keywords", "when.keywords")[self.where]

    def vocabulary(self) -> frozenset[str]:
        """The words ``test`` and ``explain`` look up in ``Facts.words``."""
        words = set(self._singles)
        for phrase in self._phrases:
            words |= phrase.required
        if self._substrings:
            words.add(HAS_CJK)
        return frozenset(words)

    def _first(self, facts: Facts) -> str | None:
        singles = self._singles
        if singles:
            found = singles & facts.words(self.where)
            if found:
                return min(found)
        substrings = self._substrings
        if substrings:
            text = facts.folded(self.where)
            for kw in substrings:
                if kw in text:
                    return kw
        phrases = self._phrases
        if phrases:
            words = facts.words(self.where)
            for keyword, required, regex, first in phrases:
                if required <= words:
                    # a match starts with the phrase's first part: re finds no literal to skip
                    # to behind the lookbehind, and would try every position before it (a
                    # search from there still sees the characters before, for the lookbehind)
                    text = facts.folded(self.where)
                    start = text.find(first)
                    if start >= 0 and regex.search(text, start):
                        return keyword
        return None

    def test(self, facts: Facts) -> bool:
        if self._singles and not self._singles.isdisjoint(facts.words(self.where)):
            return True
        if self._substrings or self._phrases:
            found = self._first(facts)
            if found is not None:
                facts.found[id(self)] = found
                return True
        return False

    def explain(self, facts: Facts) -> str:
        found = facts.found.get(id(self)) or self._first(facts)
        return f"{_WHERE_NAMES[self.where]} keyword {found!r}"


def required_literal(pattern: str, min_length: int = 2) -> str | None:
    """The longest run of characters every match of ``pattern`` must contain, lowercased for a
    test against ``Facts.lowered`` (None when there is none worth testing). A prefilter may let
    through a text the pattern then rejects, never the other way round: only top-level literals
    count (zero-width assertions between them are skipped), and only characters whose
    case-insensitive matches ``lower()`` maps to the same letter (ASCII, or caseless like CJK)."""
    runs = _literal_runs(pattern)
    best = max(runs, key=len, default="")
    return best if len(best) >= min_length else None


def literal_prefix(pattern: str) -> str | None:
    """The literal every match of ``pattern`` starts with (after zero-width assertions such as
    ``\\b``), lowercased like ``required_literal``'s; None when it does not start with one. In
    ASCII text a search can start where this first occurs: no match starts before."""
    runs = _literal_runs(pattern)
    return runs[0] if runs and runs[0] else None


def caseless_anchor(pattern: str) -> str | None:
    """Characters every match of ``pattern`` contains that match only themselves, even
    case-insensitively (ASCII digits, punctuation, spaces: no other character's case maps to
    them), so they are found in the raw text, not lowered: the longest run of them in the
    pattern's top-level literals (see ``required_literal``), the first one that is not
    common in text on a tie (``\\(`` rather than ``.``). None when there is none."""
    pieces = []
    for run in _literal_runs(pattern):
        piece = ""
        for char in run + "a":  # a letter ends the last piece
            if char.isascii() and not char.isalpha():
                piece += char
            elif piece:
                pieces.append(piece)
                piece = ""
    best = ""
    for piece in pieces:
        if len(piece) > len(best) or (
            len(piece) == len(best) and best in _COMMON_CHARS and piece not in _COMMON_CHARS
        ):
            best = piece
    return best or None


_COMMON_CHARS = frozenset(" .,:;-'\"\n0123456789")  # in most texts: a weak anchor


def _literal_runs(pattern: str) -> list[str]:
    """The runs of literal characters of the top level of ``pattern``, in order (see
    ``required_literal``); the first is "" unless the pattern starts with one (zero-width
    assertions aside)."""
    try:
        parsed = _sre_parser.parse(pattern, re.IGNORECASE)
    except Exception:  # private API: without it there is just no prefilter
        return []
    runs, run = [], ""
    for op, arg in parsed:
        char = chr(arg) if op is _sre.LITERAL else ""
        if char and (char.isascii() or char.lower() == char == char.upper()):
            run += char.lower()
            continue
        if op is _sre.AT:
            continue  # zero-width: the literals either side are adjacent in the text
        runs.append(run)
        run = ""
    runs.append(run)
    return runs


def shape_prefix(pattern: str) -> str | None:
    """What every match of ``pattern`` starts with (after zero-width assertions) in ASCII text
    lowered with each digit as "0" (``Facts.shaped``): its literal prefix and the digits that
    follow (``\\bE\\d{3,5}\\b``: "e000"), so a search starts where a match can. None when that
    says no more than ``literal_prefix``: a prefix that is common alone ("e") is rare with its
    digits, and re finds no literal to skip to in a pattern starting with ``\\b``."""
    try:
        parsed = _sre_parser.parse(pattern, re.IGNORECASE)
    except Exception:  # private API, like required_literal's: no prefilter without it
        return None
    shape = ""
    for op, arg in parsed:
        if op is _sre.AT:
            continue  # zero-width
        if op is _sre.LITERAL and arg < 128:
            # in ASCII text a letter matches itself in either case only
            shape += "0" if 48 <= arg <= 57 else chr(arg).lower()
        elif _is_digit_class(op, arg):
            shape += "0"
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, high, item = arg
            if len(item) != 1 or not _is_digit_class(*item[0]):
                break
            shape += "0" * low
            if high != low:
                break
        else:
            break
    return shape if len(shape) > len(literal_prefix(pattern) or "") else None


# ASCII -> lowered, digits as "0" (see shape_prefix)
_SHAPES = bytes.maketrans(bytes(range(65, 91)) + b"0123456789", bytes(range(97, 123)) + b"0" * 10)


def _is_digit_class(op: Any, arg: Any) -> bool:
    """Whether one parsed element matches only characters re's ``\\d`` matches."""
    if op is _sre.LITERAL:
        return 48 <= arg <= 57
    if op is _sre.IN:
        for item_op, item in arg:
            if item_op is _sre.CATEGORY and item is _sre.CATEGORY_DIGIT:
                continue
            if item_op is _sre.LITERAL and 48 <= item <= 57:
                continue
            if item_op is _sre.RANGE and item[0] >= 48 and item[1] <= 57:
                continue
            return False  # NEGATE, other categories and characters
        return bool(arg)
    return False


def _digits_needed(parsed: Iterable[tuple[Any, Any]]) -> int:
    """A lower bound of the digits every match of a parsed sequence consumes (0: unknown)."""
    total = 0
    for op, arg in parsed:
        if _is_digit_class(op, arg):
            total += 1
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, _, item = arg
            total += low * _digits_needed(item)
        elif op is _sre.SUBPATTERN:
            total += _digits_needed(arg[3])
        elif op is _sre.ATOMIC_GROUP:
            total += _digits_needed(arg)
        elif op is _sre.BRANCH:
            total += min(_digits_needed(branch) for branch in arg[1])
        # anything else (assertions, backreferences, conditionals...) counts as none
    return total


def min_digits(pattern: str) -> int:
    """How many digits (re's ``\\d``: any script's) every match of ``pattern`` contains, at
    least: a text with fewer cannot match, and counting them is much cheaper than a search that
    tries every position (``\\b(?:\\d[ -]?){13,16}\\b``). 0 when unknown."""
    try:
        parsed = _sre_parser.parse(pattern, re.IGNORECASE)
        return _digits_needed(parsed)
    except Exception:  # private API, like required_literal's: no prefilter without it
        return 0


def _inner_sequences(op: Any, arg: Any, *, lookarounds: bool) -> list[Any] | None:
    """The parsed sequences inside a repeat, group or alternation (and a lookaround or atomic
    group when ``lookarounds``); None for any other item."""
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
        return [arg[2]]
    if op is _sre.SUBPATTERN:
        return [arg[3]]
    if op is _sre.BRANCH:
        return list(arg[1])
    if lookarounds and op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return [arg[1]]
    if lookarounds and op is _sre.ATOMIC_GROUP:
        return [arg]
    return None


def _run_alphabet(parsed: Iterable[tuple[Any, Any]]) -> set[str] | None:
    """Every character a match of a parsed sequence can consist of, in ASCII text, when those
    are only digits and ASCII characters that are neither letters nor digits' look-alikes
    (separators: " ", "-", "."); None for any other pattern."""
    chars: set[str] = set()
    for op, arg in parsed:
        if op is _sre.AT:
            continue  # zero width: \b, ^, $
        if op is _sre.LITERAL:
            if not (arg < 128 and not chr(arg).isalpha()):
                return None
            chars.add(chr(arg))
        elif op is _sre.IN:
            for item_op, item in arg:
                if item_op is _sre.CATEGORY and item is _sre.CATEGORY_DIGIT:
                    chars.update(_DIGIT_CHARS)  # \d: in ASCII text, 0-9
                elif item_op is _sre.LITERAL and item < 128 and not chr(item).isalpha():
                    chars.add(chr(item))
                elif item_op is _sre.RANGE and 48 <= item[0] <= item[1] <= 57:
                    chars.update(map(chr, range(item[0], item[1] + 1)))
                else:
                    return None  # NEGATE, other classes, letters
        else:
            inner = _inner_sequences(op, arg, lookarounds=False)
            if inner is None:
                return None
            for sub in inner:
                found = _run_alphabet(sub)
                if found is None:
                    return None
                chars |= found
    return chars


_DIGIT_CHARS = "0123456789"


# bytes -> digits 0-9 as "d", everything else as "x" (other characters' UTF-8 bytes are >= 0x80)
_DIGITS_AS_D = bytes(ord("d") if 48 <= c <= 57 else ord("x") for c in range(256))


class DigitRun(NamedTuple):
    """Text -> its digits as "d", the run's other characters (``separators``) as nothing, the
    rest as "x": a run holding ``len(needle)`` digits is then ``needle`` in the result (C
    speed)."""

    separators: bytes
    needle: str
    loose: bytes  # digits and separators as "d": a faster translate (nothing deleted)
    wide: bytes  # ``loose`` for UTF-8 of any script (see may_be_in)

    def may_be_in(self, text: str) -> bool:
        """Whether ``text`` (any script: re's ``\\d`` may match other digits than 0-9) may hold
        such a run: each character that may be a digit counts as one "d" (its UTF-8 lead byte
        "d" if some digit's UTF-8 starts with it, the following bytes deleted). Rules out most
        non-ASCII text (CJK, accented Latin) without looking for other scripts' digits."""
        data = text.encode("utf-8", "surrogatepass").translate(self.wide, _UTF8_FOLLOWING)
        return self.needle in data.decode("ascii")

    def found_in(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        # such a run is as many "d" in a row at least, separators kept: most texts have none
        if self.needle not in data.translate(self.loose).decode("ascii"):
            return False
        # a str, not bytes: bytes' `in` takes its operand for an int first, raising and clearing
        # a TypeError each time (as long as the rest of the test), and bytes.find parses a tuple
        return self.needle in data.translate(_DIGITS_AS_D, self.separators).decode("ascii")


def digit_run(pattern: str, digits: int) -> DigitRun | None:
    """For a pattern whose matches are made of digits and a few separators only, with at least
    ``digits`` digits (``\\b(?:\\d[ -]?){13,16}\\b``): a test of whether a text (whose only
    digits are 0-9) has a run of those characters holding that many digits. A match lies inside
    one such run, so a text without one cannot match (a text of dates, times and order numbers
    has many digits, but in short runs: a search of it tries every position in vain). None for
    another kind of pattern."""
    if digits < 4:
        return None
    try:
        alphabet = _run_alphabet(_sre_parser.parse(pattern, re.IGNORECASE))
    except Exception:  # private API, like required_literal's: no prefilter without it
        return None
    if not alphabet or not alphabet & set(_DIGIT_CHARS):
        return None
    separators = "".join(sorted(alphabet - set(_DIGIT_CHARS))).encode("ascii")
    loose = bytes(ord("d") if chr(c) in alphabet else ord("x") for c in range(256))
    leads = bytes(ord("d") if c in _DIGIT_LEADS else ord("x") for c in range(128, 256))
    return DigitRun(separators, "d" * digits, loose, loose[:128] + leads)


# The first bytes of the UTF-8 of every non-ASCII character re's \d matches (Unicode decimal
# digits: Arabic-Indic, Devanagari..., Myanmar, fullwidth, the supplementary planes'; a test
# checks the list against the running Python's Unicode database), and the bytes that follow a
# first byte in UTF-8
_DIGIT_LEADS = frozenset(b"\xd9\xdb\xdf\xe0\xe1\xea\xef\xf0")
_UTF8_FOLLOWING = bytes(range(0x80, 0xC0))


_ASCII_SAME = object()  # a pattern that means the same under re.ASCII in ASCII text
_ASCII_SPACES_DIFFER = object()  # the same, unless the text has \x1c-\x1f (Unicode spaces)


def _ascii_sameness(parsed: Iterable[tuple[Any, Any]]) -> object | None:
    """Whether a parsed pattern matches the same in ASCII text with ``re.ASCII`` as without:
    only ASCII characters, and classes whose Unicode and ASCII forms agree on ASCII characters
    (\\d, \\w, \\b; \\s but for \\x1c-\\x1f). None when not, or not sure."""
    verdict = _ASCII_SAME
    for op, arg in parsed:
        if op in (_sre.LITERAL, _sre.NOT_LITERAL):
            if arg > 127:
                return None
        elif op is _sre.IN:
            for item_op, item in arg:
                if item_op is _sre.LITERAL and item > 127:
                    return None
                if item_op is _sre.RANGE and item[1] > 127:
                    return None
                if item_op is _sre.CATEGORY:
                    if item in (_sre.CATEGORY_SPACE, _sre.CATEGORY_NOT_SPACE):
                        verdict = _ASCII_SPACES_DIFFER
                    elif item not in _ASCII_SAME_CATEGORIES:
                        return None
                elif item_op not in (_sre.LITERAL, _sre.RANGE, _sre.NEGATE):
                    return None
        elif op in (_sre.AT, _sre.ANY, _sre.GROUPREF):
            pass
        else:
            inner = _inner_sequences(op, arg, lookarounds=True)
            if inner is None:
                return None  # conditionals and anything newer: not worth the risk
            for sub in inner:
                found = _ascii_sameness(sub)
                if found is None:
                    return None
                if found is _ASCII_SPACES_DIFFER:
                    verdict = found
    return verdict


_ASCII_SAME_CATEGORIES = (
    _sre.CATEGORY_DIGIT,
    _sre.CATEGORY_NOT_DIGIT,
    _sre.CATEGORY_WORD,
    _sre.CATEGORY_NOT_WORD,
)
_ODD_SPACES = re.compile("[\x1c-\x1f]")  # whitespace to str and Unicode \s, not to re.ASCII


def ascii_variant(pattern: str) -> tuple[re.Pattern[str], bool] | None:
    """``pattern`` compiled case-insensitively with ``re.ASCII``, for ASCII text, where it
    matches exactly what the Unicode pattern does but ~1.5x faster (``\\b`` and ``\\w`` test a
    table instead of the Unicode database), and whether text with \\x1c-\\x1f must still use the
    Unicode one; None when the two could differ."""
    try:
        verdict = _ascii_sameness(_sre_parser.parse(pattern, re.IGNORECASE))
        if verdict is None:
            return None
        return re.compile(pattern, re.IGNORECASE | re.ASCII), verdict is _ASCII_SPACES_DIFFER
    except Exception:  # private API, or (?u) in the pattern: the Unicode pattern for all text
        return None


@dataclass(frozen=True, slots=True)
class Matches:
    """Any of ``patterns`` (Python regular expressions, case-insensitive) found in the subject,
    the body or either. Compiled once; an invalid pattern is refused when the rule is built."""

    where: int
    patterns: tuple[str, ...]
    # (a literal every match contains, lowercased, or None; the literal every match starts
    # with, or None; the digits every match contains; the compiled pattern; its ASCII variant)
    _compiled: tuple[_Compiled, ...] = field(init=False, repr=False, compare=False)
    # every pattern's required literal, when each has one (else None): see test
    _literals: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    # every pattern's caseless anchor, when each has one (else None): see test
    _anchors: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    cost: ClassVar[int] = 8

    def __post_init__(self) -> None:
        compiled = []
        for i, pattern in enumerate(_strings(self.key, self.patterns)):
            key = self.key if len(self.patterns) == 1 else f"{self.key}[{i}]"
            try:
                regex = re.compile(pattern, re.IGNORECASE)
            except re.error as err:
                at = f" at position {err.pos}" if err.pos is not None else ""
                raise RuleError(key, f"{err.msg}{at}") from None
            compiled.append(
                _Compiled(
                    required_literal(pattern),
                    literal_prefix(pattern),
                    shape_prefix(pattern),
                    digits := min_digits(pattern),
                    digit_run(pattern, digits),
                    regex,
                    ascii_variant(pattern),
                    f"/{pattern}/",
                )
            )
        object.__setattr__(self, "_compiled", tuple(compiled))
        literals = tuple(c.literal for c in compiled if c.literal is not None)
        object.__setattr__(self, "_literals", literals if len(literals) == len(compiled) else None)
        anchors = tuple(filter(None, map(caseless_anchor, self.patterns)))
        object.__setattr__(self, "_anchors", anchors if len(anchors) == len(compiled) else None)

    @property
    def key(self) -> str:
        return ("when.subject_regex", "when.body_regex", "when.regex")[self.where]

    def test(self, facts: Facts) -> bool:
        anchors = self._anchors
        if anchors is not None:
            # Found in the raw text (the body of most tickets need not be lowered for this):
            # "(" of a stack trace's patterns is in few texts.
            texts, where = facts.texts, self.where
            for anchor in anchors:
                if anchor in texts[where] if where != BOTH else _in_either(anchor, texts):
                    break
            else:
                return False
        literals = self._literals
        if literals is not None:
            # Most texts hold none of the literals: one test each in the lowered text (for
            # both parts, their join: a literal in either part is in it) rules them all out.
            lowered = facts.lowered(self.where)
            for needed in literals:
                if needed in lowered:
                    break
            else:
                return False
        parts = _PARTS[self.where]
        for literal, prefix, shape, digits, run, regex, ascii, shown in self._compiled:
            for part in parts:
                # A match lies in one text and contains the literal and the digits: testing
                # for them is far cheaper than a search that cannot succeed without them.
                if literal is not None and literal not in facts.lowered(part):
                    continue
                text = facts.texts[part]
                if facts.ascii[part]:
                    # re's \d is 0-9 here: a match lies in one run of its characters (see
                    # digit_run); with a shape, looking for it below is the cheaper test
                    if run is not None:
                        if not run.found_in(text):
                            continue
                    elif shape is None and digits > 1 and facts.digits(part) < digits:
                        continue
                    # every match starts with the shape or prefix: none before its first
                    # occurrence (the shaped and lowered texts have the same indices; a search
                    # from there still sees the characters before it, for \b and lookbehinds)
                    start = 0
                    if shape is not None:
                        start = facts.shaped(part).find(shape)
                    elif prefix is not None:
                        start = facts.lowered(part).find(prefix)
                    if start < 0:
                        continue
                    search = regex.search
                    if ascii is not None and not (ascii[1] and facts.odd_spaces(part)):
                        search = ascii[0].search
                    found = search(text, start)
                else:
                    if run is not None:
                        # exactly where re's \d is only 0-9 in the text (no other script's
                        # digits), else counting any character that may be a digit
                        possible = run.may_be_in(text) and (
                            facts.digits(part) == _MANY or run.found_in(text)
                        )
                        if not possible:
                            continue
                    elif digits > 1 and facts.digits(part) < digits:
                        continue
                    found = regex.search(text)
                if found:
                    # the pattern, not the matched text: that may be a card number, and the
                    # explanation goes into the ticket's history
                    facts.found[id(self)] = shown
                    return True
        return False

    def explain(self, facts: Facts) -> str:
        if id(self) not in facts.found:
            self.test(facts)
        return f"{_WHERE_NAMES[self.where]} matches {facts.found.get(id(self), '?')}"


def _in_either(anchor: str, texts: tuple[str, str]) -> bool:
    return anchor in texts[0] or anchor in texts[1]


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    """Received within a weekly window in a time zone; see ``WorkingHours`` (a window crossing
    midnight belongs to the day it starts on). DST is the zone's: 18:00 is 18:00 local."""

    window: WorkingHours
    _within: str = field(init=False, repr=False, compare=False)  # the explanation's end
    key: ClassVar[str] = "when.time"
    cost: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "_within", f" {self.window.tz} (within {self.window.describe()})")

    def test(self, facts: Facts) -> bool:
        return self.window.contains_local(facts.local(self.window))

    def explain(self, facts: Facts) -> str:
        local = facts.local(self.window)
        # "08:05" from a table: a :02d format spec costs as much as the rest of the evaluation
        at = f"{DAYS[local.weekday()]} {_TWO_DIGITS[local.hour]}:{_TWO_DIGITS[local.minute]}"
        return f"received {at}{self._within}"


_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))


def _priority(key: str, value: Any) -> Priority:
    try:
        return Priority(str(value).lower())
    except ValueError:
        known = ", ".join(p.value for p in Priority)
        raise RuleError(key, f"unknown priority {value!r} ({known})") from None


@dataclass(frozen=True)
class Actions:
    """What a matching rule does. Applied in rule order: a later rule's team, priority, assign
    or auto-reply replaces an earlier one's; tags and notifications accumulate."""

    team: str | None = None
    priority: Priority | None = None
    add_tags: tuple[str, ...] = ()
    assign: str | None = None  # a strategy name of core.assign.STRATEGIES
    auto_reply: str | None = None  # string.Template with $number, $name, $subject
    notify: tuple[str, ...] = ()  # "slack:U123", "telegram:-100..", "email:a@b.c"

    def __post_init__(self) -> None:
        if self.team is not None and (not isinstance(self.team, str) or not self.team.strip()):
            raise RuleError("then.team", "expected a non-empty string")
        if self.priority is not None:
            object.__setattr__(self, "priority", _priority("then.priority", self.priority))
        if self.add_tags:
            _strings("then.add_tags", self.add_tags)
        if self.assign is not None and self.assign not in STRATEGIES:
            known = ", ".join(STRATEGIES)
            raise RuleError("then.assign", f"unknown strategy {self.assign!r} ({known})")
        if self.auto_reply is not None:
            _check_template(self.auto_reply)
        for i, who in enumerate(self.notify):
            kind, _, address = who.partition(":") if isinstance(who, str) else ("", "", "")
            if kind not in NOTIFY_KINDS or not address or (kind == "email" and "@" not in address):
                raise RuleError(
                    f"then.notify[{i}]",
                    f"{who!r} is not slack:<user id>, telegram:<chat id> or email:<address>",
                )

    def is_empty(self) -> bool:
        return self == Actions()


def _check_template(text: str) -> None:
    key = "then.auto_reply"
    if not isinstance(text, str) or not text.strip():
        raise RuleError(key, "expected a non-empty string")
    for m in Template.pattern.finditer(text):
        name = m.group("named") or m.group("braced")
        if m.group("invalid") is not None:
            raise RuleError(key, f"stray $ at position {m.start()} (write $$ for a dollar sign)")
        if name is not None and name not in PLACEHOLDERS:
            known = ", ".join(f"${p}" for p in sorted(PLACEHOLDERS))
            raise RuleError(key, f"unknown placeholder ${name} ({known})")


def render_auto_reply(template: str, *, number: int, name: str, subject: str) -> str:
    return Template(template).safe_substitute(number=number, name=name, subject=subject)


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...] = ()
    actions: Actions = field(default_factory=Actions)
    stop: bool = True
    _checks: tuple[Callable[[Facts], bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.conditions, key=lambda c: c.cost)  # stable: ties keep file order
        object.__setattr__(self, "conditions", tuple(ordered))
        object.__setattr__(self, "_checks", tuple(c.test for c in ordered))

    def matches(self, facts: Facts) -> bool:
        return all(check(facts) for check in self._checks)

    def explain(self, facts: Facts) -> str:
        conditions = self.conditions
        if len(conditions) == 1:
            return conditions[0].explain(facts)
        if not conditions:
            return "always (no conditions)"
        # a loop, not a list comprehension: that builds a function object per call
        parts = []
        for condition in conditions:
            parts.append(condition.explain(facts))
        return "; ".join(parts)


class Fired(NamedTuple):
    """A rule that fired, and why, in words for the ticket's history."""

    rule: str
    reason: str


@dataclass(frozen=True)
class RoutingDecision:
    team: str | None = None
    priority: Priority | None = None
    tags: tuple[str, ...] = ()
    assign: str | None = None
    auto_reply: str | None = None
    notify: tuple[str, ...] = ()
    fired: tuple[Fired, ...] = ()

    @property
    def matched(self) -> bool:
        return bool(self.fired)

    def history(self) -> list[str]:
        """One line per fired rule, for the ticket's history."""
        return [f"routing rule {f.rule!r} fired: {f.reason}" for f in self.fired]


class _Index:
    """Which rules one kind of condition lets through, by the input's value(s) of that kind."""

    __slots__ = ("decides", "mode", "source", "table")

    def __init__(self, source: Any, mode: int) -> None:
        self.decides = 0  # rules whose condition of this kind is settled here
        self.table: dict[Any, int] = {}  # value -> rules that accept it
        self.source = source  # ONE, SEVERAL: facts -> value(s); CUSTOMER: the name; MANY: where
        self.mode = mode

    def add(self, bit: int, accepted: Iterable[Any]) -> None:
        self.decides |= bit
        for value in accepted:
            self.table[value] = self.table.get(value, 0) | bit

    def others(self, everything: int) -> int:
        """The rules of ``everything`` not decided here. Masks stay non-negative: ``&`` with a
        negative int first copies it into its two's complement (an allocation per operation)."""
        return everything & ~self.decides

    def baked(self, everything: int) -> dict[Any, int]:
        """The table with the rules not decided here added to every entry: one lookup is then
        what the input leaves possible of this kind (``others`` when the value is not there)."""
        others = self.others(everything)
        return {value: bits | others for value, bits in self.table.items()}


# How an index gets the input's value(s): ONE value (a Facts attribute), SEVERAL (language
# tags), a CUSTOMER attribute, whether one is set (EXISTS: True/False), or MANY (the words of a
# text, splitting it only when needed)
ONE, SEVERAL, CUSTOMER, EXISTS, MANY = 0, 1, 2, 3, 4


def _index_of(cond: Condition) -> tuple[Any, Iterable[Any], Any, int, bool] | None:
    """(kind, values the condition accepts, source, mode, exact) for a condition an index can
    decide (see ``_Index``); None for the others (they run per rule). Not exact: the index only
    rules the rule out when none of the values is there, and the condition still runs (keyword
    phrases: indexed by one of their words; CJK keywords: by "has CJK")."""
    if isinstance(cond, ChannelIs):
        return "channel", cond._set, attrgetter("channel"), ONE, True
    if isinstance(cond, InboxIs):
        return "inbox", cond._set, attrgetter("inbox"), ONE, True
    if isinstance(cond, PriorityIs):
        return "priority", cond._set, attrgetter("priority"), ONE, True
    if isinstance(cond, LanguageIs):
        return "language", cond._set, Facts.languages, SEVERAL, True
    if isinstance(cond, CustomerAttr):
        if cond.op == "exists":
            return ("exists", cond.name), (cond.value,), cond.name, EXISTS, True
        return ("customer", cond.name), cond._wanted, cond.name, CUSTOMER, True
    if isinstance(cond, Keywords):
        if any(not p.required for p in cond._phrases):
            return None  # a phrase of punctuation only: nothing to index it by
        keys = set(cond._singles)
        keys.update(max(p.required, key=len) for p in cond._phrases)
        if cond._substrings:
            keys.add(HAS_CJK)
        exact = not (cond._substrings or cond._phrases)
        return ("words", cond.where), keys, cond.where, MANY, exact
    return None


class _Plan:
    """Rules as bits of an int: each index turns the input's channel, inbox, priority, language,
    customer attribute values and words into the set of rules still possible, in a few dict
    lookups; only those rules run their remaining conditions, in rule order.

    The first rule is the highest bit: the next rule to run is then ``possible.bit_length()``,
    a small int, instead of ``possible & -possible``, two operations on big ints (each
    allocates, and ``&`` copies the negative one) and a lookup by a big int's hash."""

    __slots__ = (
        "all",
        "by_length",
        "customer",
        "exists",
        "residual",
        "rules",
        "seen",
        "several",
        "single",
        "vocabulary",
        "words",
    )

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        indexes: dict[Any, _Index] = {}
        residual: list[tuple[Callable[[Facts], bool], ...]] = []
        for i, rule in enumerate(rules):
            bit, rest, seen = 1 << (len(rules) - 1 - i), [], set()
            for cond in rule.conditions:
                entry = _index_of(cond)
                if entry is None or entry[0] in seen:  # a second one of a kind runs per rule
                    rest.append(cond.test)
                    continue
                kind, accepted, source, mode, exact = entry
                if not exact:
                    rest.append(cond.test)
                seen.add(kind)
                if kind not in indexes:
                    indexes[kind] = _Index(source, mode)
                indexes[kind].add(bit, accepted)
            residual.append(tuple(rest))
        by_mode: list[list[_Index]] = [[], [], [], [], []]
        for index in indexes.values():
            by_mode[index.mode].append(index)
        # (source, baked table's get, the rules not decided here) per index, by mode: what
        # candidates() runs as plain values, without a call per index but the lookups
        self.all = everything = (1 << len(rules)) - 1
        # (channel, inbox, priority, language) -> the rules those leave possible (a cache)
        self.seen: dict[tuple[str, str | None, str, str | None], int] = {}

        def lookups(mode: int) -> tuple[tuple[Any, Any, int], ...]:
            return tuple(
                (x.source, x.baked(everything).get, x.others(everything)) for x in by_mode[mode]
            )

        self.single, self.several, self.exists = lookups(ONE), lookups(SEVERAL), lookups(EXISTS)

        def customer_lookups(x: _Index) -> tuple[Any, Any, Any, int]:
            baked = x.baked(everything)  # built once for both lookups
            return x.source, baked.get, _as_given(baked).get, x.others(everything)

        self.customer = tuple(customer_lookups(x) for x in by_mode[CUSTOMER])
        # words last: splitting the text is the one costly step here, and it is skipped when
        # no rule still possible needs it
        self.words = tuple(
            (x.source, x.decides, frozenset(x.table), x.table.get, x.others(everything))
            for x in by_mode[MANY]
        )
        self.residual = tuple(residual)
        # a rule's bit's length - 1 -> (its remaining conditions' test or None, its bit, what
        # firing it does: see _firing)
        self.by_length = tuple(
            (_one_test(residual[i]), 1 << (len(rules) - 1 - i), _firing(rule))
            for i, rule in enumerate(rules)
        )[::-1]
        # every word a keyword test of these rules can ask about (see Facts)
        self.vocabulary = frozenset(
            word
            for rule in rules
            for cond in rule.conditions
            if isinstance(cond, Keywords)
            for word in cond.vocabulary()
        )

    def candidates(self, facts: Facts) -> int:
        # The ONE and SEVERAL indexes read only the channel, inbox, priority and language, a
        # few values that repeat from ticket to ticket: the rules they leave are remembered per
        # combination (the language as given, a plain str or None: its tags follow from it).
        language = facts.input.language
        if language is not None and type(language) is not str:
            possible = self._by_channel_and_language(facts)
        else:
            key = (facts.channel, facts.inbox, facts.priority, language)
            found = self.seen.get(key)
            if found is None:
                found = self._by_channel_and_language(facts)
                if len(self.seen) >= _SEEN_MAX:  # bounded: values are not a closed set
                    self.seen.clear()
                self.seen[key] = found
            possible = found
        customer = facts.input.customer
        for name, get, get_as_given, others in self.customer:
            value = customer.get(name)
            if type(value) is str:  # the usual case, without Facts.attribute's checks
                if not value:
                    possible &= others
                    continue
                given = get_as_given(value)  # most values are written as the rules expect
                possible &= get(value.strip().casefold(), others) if given is None else given
            elif value is None:
                possible &= others
            else:
                accepted = others
                if type(value) is list and all(map(_is_str, value)):  # tags: a list of strings
                    for one in value:
                        accepted |= get_as_given(one) or get(one.strip().casefold(), 0)
                else:
                    for one in facts.attribute(name) or ():
                        accepted |= get(one, 0)
                possible &= accepted
        for name, get, others in self.exists:
            value = customer.get(name)
            if value is None:
                possible &= get(False, others)
            elif type(value) is str:
                possible &= get(value != "", others)
            else:
                possible &= get(facts.attribute(name) is not None, others)
        for where, decides, keys, get, others in self.words:
            if possible & decides:
                accepted = others
                for word in keys.intersection(facts.words(where)):
                    accepted |= get(word, 0)
                possible &= accepted
        return possible

    def _by_channel_and_language(self, facts: Facts) -> int:
        possible = self.all
        for value_of, get, others in self.single:
            possible &= get(value_of(facts), others)
        for values_of, get, others in self.several:
            accepted = others
            for value in values_of(facts):
                accepted |= get(value, 0)
            possible &= accepted
        return possible


_SEEN_MAX = 4096


def _one_test(tests: tuple[Callable[[Facts], bool], ...]) -> Callable[[Facts], bool] | None:
    """A rule's remaining tests as one call (None: there are none), so ``route`` runs no loop
    per candidate rule: most rules have one test left or none."""
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]

    def all_of(facts: Facts) -> bool:
        for test in tests:  # noqa: SIM110 (all() of a generator: a frame per call)
            if not test(facts):
                return False
        return True

    return all_of


class _Firing(NamedTuple):
    """What a rule does when it fires, as ``route`` applies it: its actions' fields, its name,
    its explanation (a single condition's own explain: no call through Rule.explain), and
    whether it stops evaluation."""

    team: str | None
    priority: Priority | None
    assign: str | None
    auto_reply: str | None
    add_tags: tuple[str, ...]
    notify: tuple[str, ...]
    name: str
    explain: Callable[[Facts], str]
    stop: bool


def _firing(rule: Rule) -> _Firing:
    a = rule.actions
    conditions = rule.conditions
    explain = conditions[0].explain if len(conditions) == 1 else rule.explain
    return _Firing(
        a.team,
        a.priority,
        a.assign,
        a.auto_reply,
        a.add_tags,
        a.notify,
        rule.name,
        explain,
        rule.stop,
    )


_is_str = str.__instancecheck__  # isinstance(x, str) as a one-argument C function, for map


def _as_given(baked: dict[Any, int]) -> dict[Any, int]:
    """The entries of strings that are their own normal form (see ``_norm``): an attribute value
    found here as it is needs no strip and casefold first, it would give the same entry."""
    return {k: v for k, v in baked.items() if isinstance(k, str) and _norm(k) == k}


class RuleSet(tuple[Rule, ...]):
    """Rules in evaluation order, with an index across them built once (see ``_Plan``).
    ``parse_rules`` returns one; ``route`` also takes a plain tuple or list of rules."""

    plan: _Plan

    def __new__(cls, rules: Iterable[Rule] = ()) -> RuleSet:
        self = super().__new__(cls, rules)
        self.plan = _Plan(tuple(self))
        return self


_last_plan: tuple[object, _Plan] | None = None


def _plan_of(rules: Iterable[Rule]) -> _Plan:
    global _last_plan
    if isinstance(rules, RuleSet):
        return rules.plan
    if isinstance(rules, tuple):
        # A tuple of frozen rules cannot change: remember the last one's plan (a cache, so
        # evaluation stays pure). A list could change between calls, so it is indexed each time.
        last = _last_plan
        if last is not None and last[0] is rules:
            return last[1]
        plan = _Plan(rules)
        _last_plan = (rules, plan)
        return plan
    return _Plan(tuple(rules))


def route(rules: Iterable[Rule], inp: RoutingInput) -> RoutingDecision:
    """Apply matching rules in order until one with ``stop`` matches. Pure and deterministic:
    the same rules and input always give the same decision (the clock is ``received_at``)."""
    plan = _plan_of(rules)
    facts = Facts(inp, plan.vocabulary)
    possible = plan.candidates(facts)
    if not possible:
        return _NO_DECISION
    team: str | None = None
    priority: Priority | None = None
    assign: str | None = None
    auto_reply: str | None = None
    tags: list[str] = []
    notify: list[str] = []
    fired: list[Fired] = []
    by_length = plan.by_length
    while possible:
        test, bit, firing = by_length[possible.bit_length() - 1]  # the first rule left
        possible ^= bit
        if test is None or test(facts):
            team_, priority_, assign_, auto_reply_, add_tags, to_notify, name, explain, stop = (
                firing
            )
            if team_ is not None:
                team = team_
            if priority_ is not None:
                priority = priority_
            if assign_ is not None:
                assign = assign_
            if auto_reply_ is not None:
                auto_reply = auto_reply_
            tags.extend(add_tags)
            notify.extend(to_notify)
            fired.append(_new_fired(Fired, (name, explain(facts))))
            if stop:
                break
    if not fired:
        return _NO_DECISION
    # What RoutingDecision(...) makes, without a frozen dataclass's __init__ (an
    # object.__setattr__ per field, a tenth of an evaluation): there is no __post_init__.
    decision = _new_decision(RoutingDecision)
    decision.__dict__.update(
        team=team,
        priority=priority,
        tags=tuple(dict.fromkeys(tags)) if len(tags) > 1 else tuple(tags),
        assign=assign,
        auto_reply=auto_reply,
        notify=tuple(dict.fromkeys(notify)) if len(notify) > 1 else tuple(notify),
        fired=tuple(fired),
    )
    return decision


_new_decision = object.__new__
_new_fired = tuple.__new__  # Fired(a, b) without its Python-level __new__


_NO_DECISION = RoutingDecision()

# ---- parsing: TOML tables -> rules, errors naming the rule and the field ----

_RULE_KEYS = frozenset({"name", "description", "when", "then", "stop"})
_ACTION_KEYS = ("team", "priority", "add_tags", "assign", "auto_reply", "notify")


def _list_of_str(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]  # one value is written without brackets as often as with
    if not isinstance(value, list):
        raise RuleError(key, f"expected a string or a list of strings, got {value!r}")
    return _strings(key, value)


def customer_conditions(table: Any, key: str = "when.customer") -> tuple[CustomerAttr, ...]:
    """``{ tier = "vip", region = ["eu", "uk"], owner = { exists = true } }`` -> attribute tests;
    routing rules' ``when.customer`` and proactive rules' ``customer``. Errors name
    ``<key>.<attribute>``."""
    if not isinstance(table, dict) or not table:
        raise RuleError(key, 'expected a table of attributes, e.g. { tier = "vip" }')
    out: list[CustomerAttr] = []
    for name, spec in table.items():
        try:
            if isinstance(spec, dict):
                if len(spec) != 1:
                    raise RuleError(
                        None, "expected one of { equals = .. }, { in = [..] }, { exists = true }"
                    )
                ((op, value),) = spec.items()
                out.append(CustomerAttr(name, op, value))
            elif isinstance(spec, list):
                out.append(CustomerAttr(name, "in", spec))
            else:
                out.append(CustomerAttr(name, "equals", spec))
        except RuleError as err:
            raise RuleError(f"{key}.{name}", err.detail) from None
    return tuple(out)


def _customer(table: Any) -> list[Condition]:
    return list(customer_conditions(table))


def _time(table: Any) -> TimeOfDay:
    key = "when.time"
    if not isinstance(table, dict):
        raise RuleError(
            key, 'expected a table, e.g. { tz = "Europe/Berlin", hours = "18:00-08:00" }'
        )
    unknown = sorted(set(table) - {"tz", "days", "hours"})
    if unknown:
        raise RuleError(f"{key}.{unknown[0]}", "unknown setting (tz, days, hours)")
    tz, days, hours = table.get("tz", "UTC"), table.get("days", []), table.get("hours", "")
    if not isinstance(tz, str):
        raise RuleError(f"{key}.tz", "expected a time zone name")
    if not isinstance(days, list):
        raise RuleError(f"{key}.days", 'expected a list, e.g. ["sat", "sun"]')
    if not isinstance(hours, str):
        raise RuleError(f"{key}.hours", 'expected "HH:MM-HH:MM"')
    if not days and not hours:
        raise RuleError(key, "needs days, hours or both")
    try:
        zone(tz)
    except ValueError as err:
        raise RuleError(f"{key}.tz", str(err)) from None
    try:
        day_set = parse_days(days)
    except ValueError as err:
        raise RuleError(f"{key}.days", str(err)) from None
    try:
        start, end = parse_hours(hours) if hours else (None, None)
    except ValueError as err:
        raise RuleError(f"{key}.hours", str(err)) from None
    return TimeOfDay(WorkingHours(tz, day_set, start, end))


_CONDITIONS: dict[str, Callable[[Any], list[Condition]]] = {
    "channel": lambda v: [ChannelIs(_list_of_str("when.channel", v))],
    "inbox": lambda v: [InboxIs(_list_of_str("when.inbox", v))],
    "language": lambda v: [LanguageIs(_list_of_str("when.language", v))],
    "priority": lambda v: [PriorityIs(_list_of_str("when.priority", v))],
    "keywords": lambda v: [Keywords(BOTH, _list_of_str("when.keywords", v))],
    "subject_keywords": lambda v: [Keywords(SUBJECT, _list_of_str("when.subject_keywords", v))],
    "body_keywords": lambda v: [Keywords(BODY, _list_of_str("when.body_keywords", v))],
    "regex": lambda v: [Matches(BOTH, _list_of_str("when.regex", v))],
    "subject_regex": lambda v: [Matches(SUBJECT, _list_of_str("when.subject_regex", v))],
    "body_regex": lambda v: [Matches(BODY, _list_of_str("when.body_regex", v))],
    "customer": _customer,
    "time": lambda v: [_time(v)],
}
CONDITION_KEYS = tuple(_CONDITIONS)


def _conditions(table: Any) -> tuple[Condition, ...]:
    if not isinstance(table, dict):
        raise RuleError("when", "expected a table")
    out: list[Condition] = []
    for key, value in table.items():
        build = _CONDITIONS.get(key)
        if build is None:
            raise RuleError(None, f"unknown condition {key!r} ({', '.join(CONDITION_KEYS)})")
        out.extend(build(value))
    return tuple(out)


def _actions(table: Any) -> Actions:
    if not isinstance(table, dict):
        raise RuleError("then", "expected a table")
    for key in table:
        if key not in _ACTION_KEYS:
            raise RuleError(None, f"unknown action {key!r} ({', '.join(_ACTION_KEYS)})")
    values: dict[str, Any] = {}
    for key in ("team", "priority", "assign", "auto_reply"):
        if key in table:
            if not isinstance(table[key], str):
                raise RuleError(f"then.{key}", f"expected a string, got {table[key]!r}")
            values[key] = table[key]
    for key in ("add_tags", "notify"):
        if key in table:
            values[key] = _list_of_str(f"then.{key}", table[key])
    return Actions(**values)


def parse_rules(table: Mapping[str, Any]) -> RuleSet:
    """``[[rules]]`` of a TOML document (other top-level keys are ignored, so the main config
    file works) -> rules in file order. ``ConfigError`` names the rule and its field."""
    raw = table.get("rules", [])
    if not isinstance(raw, list):
        raise ConfigError("rules: expected an array of tables ([[rules]])")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"rules[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: name: missing or empty")
        where = f"{where} {name!r}"
        unknown = sorted(set(item) - _RULE_KEYS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r} ({', '.join(sorted(_RULE_KEYS))})"
            )
        if name in seen:
            raise ConfigError(f"{where}: name: already used by rules[{seen[name]}]")
        seen[name] = i
        stop = item.get("stop", True)
        if not isinstance(stop, bool):
            raise ConfigError(f"{where}: stop: expected true or false")
        if not isinstance(item.get("description", ""), str):
            raise ConfigError(f"{where}: description: expected a string")
        try:
            rule = Rule(
                name, _conditions(item.get("when", {})), _actions(item.get("then", {})), stop
            )
        except RuleError as err:
            raise ConfigError(f"{where}: {err}") from None
        rules.append(rule)
    return RuleSet(rules)


def load_rules_file(path: str | Path) -> RuleSet:
    """Read and validate a rules file (``helpline rules check FILE``, SIGHUP reload). On error
    nothing is returned, so a caller reloading keeps the rules it runs."""
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"rules file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    return parse_rules(table)
