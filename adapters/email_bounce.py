"""Pure bounce detection: RFC 3464 delivery-status reports and the common free-text formats.

Standard DSNs are read field by field. For the older non-standard formats (qmail, Exim,
Postfix without a report part, Exchange, Yahoo, ...) we look for a delivery-failure sender or
subject together with a failure phrase, then take addresses from the diagnostic text that
precedes the copy of the original message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import Message
from email.parser import HeaderParser
from email.policy import Compat32, compat32
from email.utils import getaddresses
from functools import lru_cache
from typing import Any

from core.messages import Bounce

# ---------------------------------------------------------------------------------------------
# Serialising parsed parts (shared with email_parse)

# A header value that compat32's folding (``Header.encode``) gives back line for line: printable
# ASCII, already folded with CRLF/LF + whitespace, no trailing or whitespace-only line.
_VERBATIM_HEADER = re.compile(r"[!-~](?:[\t -~]*[!-~])?(?:\r?\n[ \t]+[!-~](?:[\t -~]*[!-~])?)*")


class _FastCompat32(Compat32):
    """compat32 with a shortcut for the header values its folding would not change.

    Serialising attached messages (message/rfc822 attachments, delivery reports) spends most of
    its time in ``Header.encode`` re-folding headers that already fit; for those the result is
    the value's own lines joined with ``linesep``. Anything else takes the stdlib path, so the
    bytes are the same as with ``compat32``.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and _VERBATIM_HEADER.fullmatch(value):
            limit = self.max_line_length or 1_000_000
            lines = value.splitlines()
            if len(name) + 2 + len(lines[0]) <= limit and all(
                len(line) <= limit for line in lines[1:]
            ):
                return f"{name}: {self.linesep.join(lines)}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc]  # untyped upstream


COMPAT32_FAST = _FastCompat32()


class _Phrases:
    """A case-insensitive pattern that is searched fast in ASCII text.

    With ``re.IGNORECASE`` the engine case-folds every character it compares, which makes
    these long alternations ~10x slower (about 1 ms for a short mail). The patterns are
    written in lower case, so on ASCII text (the common case) searching ``text.lower()``
    without the flag finds exactly what the flagged pattern finds in ``text``: ASCII letters
    only fold among themselves, and no non-ASCII letter of a pattern folds to an ASCII one.
    Other text takes the flagged pattern.
    """

    def __init__(self, source: str, flags: int = re.IGNORECASE) -> None:
        if flags != re.IGNORECASE or re.search(r"(?<!\\)[A-Z]|[\u017f\u212a\u0130\u0131]", source):
            raise ValueError("_Phrases wants a lower-case pattern and only re.IGNORECASE")
        self.folded = re.compile(source, re.IGNORECASE)
        self.lower = re.compile(source)

    def search(self, text: str) -> bool:
        if text.isascii():
            return self.lower.search(text.lower()) is not None
        return self.folded.search(text) is not None


_ADDRESS = re.compile(
    r"[A-Za-z0-9._%+=!#$&'*/?^`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
)
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_DAEMON_LOCALPARTS = {
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "maildaemon",
    "postmaster",
    "mdaemon",
    "mail.delivery.system",
}
_DAEMON_NAME = _Phrases(
    r"mail\s*delivery\s*(?:subsystem|system|service)|mailer[-_ ]?daemon|postmaster|"
    r"mail\s*administrator|system\s*administrator|delivery\s*status|mail\s*system",
    re.IGNORECASE,
)
_SUBJECT = _Phrases(
    r"undeliver|undelivered|delivery\s+(?:status\s+notification|failure|failed|has\s+failed|"
    r"problem|error|notification:\s*delivery\s+has\s+failed)|returned\s+mail|returned\s+to\s+sender|"
    r"mail\s+delivery\s+failed|failure\s+notice|failure\s+delivery|failed\s+delivery|"
    r"non[- ]?delivery|could\s+not\s+be\s+delivered|nicht\s+zustellbar|unzustellbar|non\s+remis|"
    r"non\s+recapitabile|no\s+entregado|mail\s+system\s+error|delayed\s+mail|"
    r"warning:\s+could\s+not\s+send|message\s+not\s+delivered|delivery\s+report|"
    r"not\s+delivered|notification\s+d'état\s+de\s+(?:la\s+)?distribution|rejected\s+mail|"
    r"mail\s+failure|permanent\s+error",
    re.IGNORECASE,
)
_BODY = _Phrases(
    r"could\s*n[o']t\s+be\s+delivered|could\s+not\s+be\s+delivered|was\s+not\s+delivered|"
    r"wasn't\s+able\s+to\s+deliver|was\s+unable\s+to\s+deliver|unable\s+to\s+deliver|"
    r"undeliverable|permanent\s+fatal\s+errors?|delivery\s+to\s+the\s+following\s+recipients?|"
    r"did\s+not\s+reach\s+the\s+following\s+recipient|delivery\s+has\s+failed|"
    r"delivery\s+failed|failed\s+permanently|user\s+unknown|unknown\s+user|no\s+such\s+user|"
    r"mailbox\s+(?:unavailable|not\s+found)|message\s+was\s+undeliverable|"
    r"mail\s+delivery\s+software|qmail-send\s+program|not\s+been\s+delivered|"
    r"could\s+not\s+deliver|couldn't\s+deliver|delivery\s+status\s+notification|"
    r"returned\s+to\s+sender|delivery\s+problem|permanent\s+error|following\s+address(?:es)?\s+failed|"
    r"invalid\s+recipient|recipient\s+address\s+rejected|no\s+mailbox\s+here|"
    r"host\s+unknown|account\s+(?:is\s+)?(?:disabled|unavailable|does\s+not\s+exist)|"
    r"message\s+delivery\s+has\s+been\s+delayed|will\s+(?:continue\s+trying|retry)|"
    r"n'a\s+pas\s+pu\s+(?:e|ê)tre\s+d(?:e|é)livr|nicht\s+zugestellt|konnte\s+nicht\s+zugestellt",
    re.IGNORECASE,
)
# Phrases only mail software writes: enough on their own.
_STRONG_BODY = _Phrases(
    r"this\s+message\s+was\s+created\s+automatically\s+by\s+mail\s+delivery\s+software|"
    r"the\s+following\s+addresses\s+had\s+permanent\s+fatal\s+errors|"
    r"this\s+is\s+the\s+qmail-send\s+program|i'm\s+afraid\s+i\s+wasn't\s+able\s+to\s+deliver|"
    r"this\s+is\s+the\s+mail\s+system\s+at\s+host|your\s+message\s+did\s+not\s+reach\s+some\s+or\s+all|"
    r"delivery\s+to\s+the\s+following\s+recipients?\s+failed",
    re.IGNORECASE,
)
_TEMPORARY = _Phrases(
    r"\bdelayed\b|will\s+(?:continue\s+trying|keep\s+trying|retry|be\s+retried|try\s+again)|"
    r"still\s+trying|not\s+yet\s+been\s+delivered|has\s+not\s+been\s+delivered\s+yet|"
    r"temporar(?:y|ily)\s+(?:failure|error|problem|deferred)|\bwarning:\s+message|"
    r"no\s+action\s+is\s+required|delivery\s+attempts\s+will\s+continue",
    re.IGNORECASE,
)
_PERMANENT = _Phrases(
    r"permanent|fatal|given\s+up|giving\s+up|i'm\s+not\s+going\s+to\s+try\s+again|"
    r"too\s+long|\b5\d\d\b",
    re.IGNORECASE,
)
# Where the copy of the original message starts: addresses below it are not recipients.
_ORIGINAL_START = re.compile(
    r"^\s*[-=_*]*\s*(?:below\s+this\s+line\s+is\s+a\s+copy|this\s+is\s+a\s+copy\s+of\s+the\s+message|"
    r"original\s+message\s+follows|(?:-{2,}\s*)?original\s+message|returned\s+message|"
    r"unsent\s+message\s+below|the\s+text\s+of\s+your\s+message|message\s+headers?\s+follows?|"
    r"headers\s+of\s+the\s+original\s+message|undelivered\s+message\s+(?:attached|headers)|"
    r"---+\s*the\s+header\s+of\s+the\s+original|original\s+message\s+header)",
    re.IGNORECASE,
)
_EMBEDDED_HEADERS = re.compile(
    r"^(?:Received|Return-Path|Message-ID|DKIM-Signature):", re.IGNORECASE
)
_MESSAGE_ID = re.compile(r"^Message-ID:\s*<?([^\s<>]+)>?", re.IGNORECASE | re.MULTILINE)
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_MAX_DIAGNOSTIC = 20_000  # diagnostics are short; the rest is the returned message
_MAX_RECIPIENTS = 20


def _walk_outer(msg: Message) -> Iterable[tuple[Message, str]]:
    """Every part with its content type, without descending into attached messages (a
    forwarded bounce is no bounce)."""
    ctype = msg.get_content_type()
    yield msg, ctype
    if ctype.split("/")[0] == "multipart":
        payload = msg.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from _walk_outer(part)


def _part_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(
            _as_string(item) if isinstance(item, Message) else str(item) for item in payload
        )
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(payload or "")


def _as_string(item: Message) -> str:
    """``item.as_string()``, faster for messages parsed with compat32 (the same text)."""
    return item.as_string(policy=COMPAT32_FAST if item.policy is compat32 else None)


def _status_blocks(text: str) -> list[Message]:
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip())
    parser = HeaderParser()
    return [parser.parsestr(block.strip() + "\n") for block in blocks if block.strip()]


def _address_field(value: str | None) -> str | None:
    if not value:
        return None
    _, _, address = str(value).rpartition(";")
    found = _ADDRESS.search(address) or _ADDRESS.search(str(value))
    return found.group(0).lower() if found else None


def _dsn_bounce(report: Message, original_id: str | None) -> tuple[Bounce | None, bool]:
    """Parse a message/delivery-status part; the flag says the report was well formed."""
    recipients: list[str] = []
    permanent_flags: list[bool] = []
    seen_any = False
    for block in _status_blocks(_part_text(report)):
        address = _address_field(block.get("Final-Recipient")) or _address_field(
            block.get("Original-Recipient")
        )
        if not address:
            continue
        seen_any = True
        action = str(block.get("Action", "")).strip().lower()
        status = _STATUS.search(str(block.get("Status", "")))
        code = status.group(1) if status else ""
        if action in ("delivered", "relayed", "expanded") or code == "2":
            continue
        if address not in recipients:
            recipients.append(address)
        permanent_flags.append(code == "5" or (action == "failed" and code != "4"))
    if not recipients:
        return None, seen_any
    return Bounce(tuple(recipients), all(permanent_flags), original_id), True


_BLANK_LINE = re.compile(r"\r?\n\r?\n")


def attached_message(part: Message) -> Message | None:
    """The headers of the message a message/rfc822 part holds: parsed by the parser, or (as
    ``parse_email`` leaves it) read from the part's unparsed text, header block only."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    if not isinstance(payload, str):
        return None
    end = _BLANK_LINE.search(payload)
    return HeaderParser(policy=compat32).parsestr(payload[: end.end() if end else None])


def _original_message_id(parts: list[tuple[Message, str]]) -> str | None:
    """The Message-ID of the returned original (message/rfc822 or text/rfc822-headers part)."""
    for part, ctype in parts:
        if ctype in ("message/rfc822", "message/global"):
            inner = attached_message(part)
            if inner is not None and inner.get("Message-ID"):
                return _clean_id(str(inner["Message-ID"]))
            found = _MESSAGE_ID.search(_part_text(part))
            if found:
                return found.group(1)
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header"):
            found = _MESSAGE_ID.search(_part_text(part))
            if found:
                return found.group(1)
    return None


def _clean_id(value: str) -> str | None:
    value = value.strip().strip("<>").strip()
    return value or None


@lru_cache(maxsize=16)
def address_pairs(*values: str) -> tuple[tuple[str, str], ...]:
    """``getaddresses(values)``, remembered for the last few inputs: the sender parsing and the
    bounce check each read a mail's From field (~20 µs each)."""
    return tuple(getaddresses(list(values)))


def _is_daemon(sender_header: str) -> bool:
    for name, address in address_pairs(sender_header):
        local = address.split("@", 1)[0].lower()
        if local in _DAEMON_LOCALPARTS or _DAEMON_NAME.search(name):
            return True
    return bool(_DAEMON_NAME.search(sender_header))


def _diagnostic(text: str) -> str:
    """The bounce's own explanation: the text above the copy of the original message."""
    lines = text[: _MAX_DIAGNOSTIC * 2].replace("\r\n", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if index > 3 and (_ORIGINAL_START.match(line) or _EMBEDDED_HEADERS.match(line)):
            break
        kept.append(line)
    return "\n".join(kept)[:_MAX_DIAGNOSTIC]


def _recipients(diagnostic: str, exclude: set[str]) -> tuple[str, ...]:
    found: list[str] = []
    for match in _ADDRESS.finditer(diagnostic):
        address = match.group(0).lower().rstrip(".").strip("'")
        local = address.split("@", 1)[0]
        if address in exclude or local in _DAEMON_LOCALPARTS or address in found:
            continue
        # a Message-ID or an SMTP id looks like an address; skip the ones in a header line
        line_start = diagnostic.rfind("\n", 0, match.start()) + 1
        if re.match(
            r"\s*(?:message-id|in-reply-to|references|id)\b", diagnostic[line_start:], re.I
        ):
            continue
        found.append(address)
        if len(found) >= _MAX_RECIPIENTS:
            break
    return tuple(found)


def _is_temporary(diagnostic: str) -> bool:
    codes = {match.group(1) for match in _STATUS.finditer(diagnostic)}
    if "5" in codes:
        return False
    if "4" in codes:
        return True
    return bool(_TEMPORARY.search(diagnostic)) and not _PERMANENT.search(diagnostic)


def _header_addresses(msg: Message) -> set[str]:
    values = [
        str(msg.get(name, "")) for name in ("From", "To", "Return-Path", "Sender", "Reply-To")
    ]
    return {address.lower() for _, address in address_pairs(*values) if address}


def _looks_like_bounce(msg: Message, subject: str, diagnostic: str) -> bool:
    if _STRONG_BODY.search(diagnostic):
        return True
    daemon = _is_daemon(str(msg.get("From", ""))) or _is_daemon(str(msg.get("Sender", "")))
    subject_hit = _SUBJECT.search(subject)
    if daemon and subject_hit:
        return True
    empty_return_path = str(msg.get("Return-Path", "x")).strip() == "<>"
    # the body phrases (the costliest search) only count together with another sign
    return (daemon or subject_hit or empty_return_path) and _BODY.search(diagnostic)


def detect_bounce(msg: Message, subject: str, text: str) -> Bounce | None:
    """A Bounce when ``msg`` reports a failed (or delayed) delivery, else None.

    ``subject`` and ``text`` are the decoded subject and body text of ``msg``.
    """
    parts = list(_walk_outer(msg))
    reports = [part for part, ctype in parts if ctype in _DSN_TYPES]
    # the original's Message-ID is read only when it is needed: most mail is no bounce
    original_id = _original_message_id(parts) if reports else None
    for report in reports:
        bounce, well_formed = _dsn_bounce(report, original_id)
        if well_formed:
            return bounce
    if any(ctype == "message/feedback-report" for _, ctype in parts):
        return None
    diagnostic = _diagnostic(text)
    if not _looks_like_bounce(msg, subject, diagnostic):
        return None
    if not reports:
        original_id = _original_message_id(parts)
    if original_id is None:
        found = _MESSAGE_ID.search(text[len(diagnostic) :])
        original_id = found.group(1) if found else None
    recipients = _recipients(diagnostic, _header_addresses(msg))
    return Bounce(recipients, not _is_temporary(diagnostic), original_id)
