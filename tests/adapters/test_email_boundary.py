"""adapters.email_boundary: the feedparser's boundary lines matched as its own regex would."""

from __future__ import annotations

import re
from email import feedparser, message_from_bytes
from email.message import Message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import email_boundary
from adapters.email_parse import parse_email

# how email.feedparser builds the pattern (Python 3.11)
TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"


def feedparser_pattern(separator: str) -> str:
    return "(?P<sep>" + re.escape(separator) + TAIL


BOUNDARY_CHARS = st.sampled_from(list("ab-_=.+()?*[]\\$^|{} \t'\"/:,é\udcff"))
LINE_CHARS = st.sampled_from(list("ab-= \t\r\n.()\\$"))


@given(
    boundary=st.text(BOUNDARY_CHARS, min_size=1, max_size=12),
    before=st.text(LINE_CHARS, max_size=3),
    after=st.text(LINE_CHARS, max_size=8),
)
def test_matches_like_the_compiled_pattern(boundary: str, before: str, after: str) -> None:
    separator = "--" + boundary
    expected = re.compile(feedparser_pattern(separator))
    matcher = email_boundary.compile_boundary(feedparser_pattern(separator))
    assert isinstance(matcher, email_boundary.BoundaryLine)
    for line in (separator + after, before + separator + after, separator, after):
        want, got = expected.match(line), matcher.match(line)
        assert (want is None) == (got is None), line
        if want and got:
            assert (got.group("end"), got.group("linesep")) == (
                want.group("end"),
                want.group("linesep"),
            )


def test_other_patterns_are_compiled_as_usual() -> None:
    for pattern, flags in (
        ("(?P<sep>--a" + TAIL, re.IGNORECASE),  # flags: not the parser's
        ("(?P<sep>--a.b" + TAIL, 0),  # an unescaped "." is no literal
        ("(?P<sep>--a)(?P<end>--)?$", 0),  # another tail
    ):
        compiled = email_boundary.compile_boundary(pattern, flags)
        assert compiled is re.compile(pattern, flags)


def test_installed_for_the_feedparser() -> None:
    assert isinstance(feedparser.re.compile(feedparser_pattern("--x")), email_boundary.BoundaryLine)
    assert feedparser.re.escape("a.b") == re.escape("a.b")


def tree(msg: Message) -> object:
    payload = msg.get_payload()
    return (
        msg.items(),
        msg.preamble,
        msg.epilogue,
        [type(defect).__name__ for defect in msg.defects],
        [tree(part) for part in payload] if isinstance(payload, list) else payload,
    )


PARTS = st.lists(st.sampled_from(["text", "", "--", "-- ", " --x", "."]), max_size=4)


@given(
    boundary=st.text(st.sampled_from(list("ab()+?.=_ '")), min_size=1, max_size=10),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    bodies=st.lists(PARTS, min_size=0, max_size=3),
    ending=st.sampled_from(["--", "--  ", "", "x"]),
    nested=st.booleans(),
)
def test_parses_as_the_stdlib_alone(
    boundary: str,
    newline: str,
    bodies: list[list[str]],
    ending: str,
    nested: bool,
) -> None:
    """Multipart mails whose bodies hold lines close to the boundary: the same tree, preamble,
    epilogue and defects with the matcher as with the feedparser's own regexes."""
    sep = "--" + boundary
    lines = [f'Content-Type: multipart/mixed; boundary="{boundary}"', "", "preamble"]
    for body in bodies:
        lines += [sep, "Content-Type: text/plain", ""]
        lines += [line.replace("x", sep) for line in body]
    if nested:
        lines += [sep, 'Content-Type: multipart/alternative; boundary="in"', "", "--in", "", "a"]
        lines += ["--in--", "inner epilogue"]
    lines += [sep + ending, "epilogue"]
    raw = newline.join(lines).encode("utf-8")
    ours = tree(message_from_bytes(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(feedparser, "re", re)
        stdlib = tree(message_from_bytes(raw))
    assert ours == stdlib


def test_a_boundary_of_regex_characters() -> None:
    raw = (
        b'From: a@example.com\nContent-Type: multipart/mixed; boundary="(a+)?.*[b]"\n\n'
        b"--(a+)?.*[b]\nContent-Type: text/plain\n\nfirst\n--(a+)?.*[bb]\nstill first\n"
        b"--(a+)?.*[b]\nContent-Type: text/plain\n\nsecond\n--(a+)?.*[b]--\n"
    )
    assert parse_email(raw).text == "first\n--(a+)?.*[bb]\nstill first\n\nsecond"
