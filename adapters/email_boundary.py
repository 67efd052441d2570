"""The stdlib FeedParser's multipart boundary lines, matched without compiling a regex per mail.

For each multipart part, ``email.feedparser`` compiles ``'(?P<sep>' + re.escape('--' +
boundary) + TAIL`` (TAIL below). Boundaries are unique per mail, so every mail pays a fresh
compile (~0.1-0.2 ms, about 40% of parsing a small multipart mail) and pushes two entries
through ``re``'s cache, evicting the patterns other code looks up there by string. That
pattern is a literal followed by TAIL: it matches a line exactly when the line starts with the
separator and TAIL matches right after it, with the same ``end`` and ``linesep`` groups (the
only ones the parser reads). ``install`` gives the feedparser module a ``re`` whose
``compile`` returns such a matcher for that one pattern shape and is the real ``re``
otherwise, so another Python's different pattern simply takes the stdlib path.
"""

from __future__ import annotations

import re
from email import feedparser
from typing import Any

_HEAD = "(?P<sep>"
_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_SEPARATOR = re.compile(_TAIL[1:])
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


class BoundaryLine:
    """``match`` answers like the compiled feedparser pattern for ``separator``."""

    __slots__ = ("length", "separator")

    def __init__(self, separator: str) -> None:
        self.separator = separator
        self.length = len(separator)

    def match(self, line: str) -> re.Match[str] | None:
        if line.startswith(self.separator):
            return _AFTER_SEPARATOR.match(line, self.length)
        return None


def compile_boundary(pattern: Any, flags: int = 0) -> Any:
    """``re.compile`` for the feedparser: a BoundaryLine for its boundary pattern."""
    if (
        not flags
        and isinstance(pattern, str)
        and pattern.startswith(_HEAD)
        and pattern.endswith(_TAIL)
    ):
        escaped = pattern[len(_HEAD) : -len(_TAIL)]
        separator = _ESCAPE.sub(r"\1", escaped)
        if re.escape(separator) == escaped:  # exactly a literal, as the parser builds it
            return BoundaryLine(separator)
    return re.compile(pattern, flags)


class _FeedparserRe:
    """The ``re`` module as ``email.feedparser`` sees it: ``compile`` above, the rest as is."""

    compile = staticmethod(compile_boundary)

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


def install() -> None:
    # typeshed does not list the feedparser's own ``import re``
    if feedparser.re is re:  # type: ignore[attr-defined]
        feedparser.re = _FeedparserRe()  # type: ignore[attr-defined]
