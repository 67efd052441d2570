"""Pure email parsing: raw RFC 5322 bytes -> InboundMessage.

Real mail is often broken (wrong or unknown charsets, 8-bit headers, missing boundaries,
addresses with spaces), so every step falls back instead of raising: ``parse_email`` only raises
``UnparseableEmail`` when the input holds nothing usable at all. We use the stdlib parser with the
``compat32`` policy because it tolerates far more damage than the modern policies.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import Header, decode_header
from email.message import Message
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from html import unescape
from html.parser import HTMLParser
from typing import Any, NamedTuple

from adapters import email_boundary
from adapters.email_bounce import COMPAT32_FAST, address_pairs, attached_message, detect_bounce
from adapters.email_quote import extract_reply
from core.messages import Attachment, Bounce, Channel, InboundMessage, Sender, ThreadHints

__all__ = ["UnparseableEmail", "decode_bytes", "html_to_text", "parse_email", "to_json"]


class UnparseableEmail(ValueError):
    """Nothing usable (no headers, no body) could be extracted from the input."""


# multipart boundaries matched without a regex compiled per mail (see email_boundary)
email_boundary.install()


# ---------------------------------------------------------------------------------------------
# Charsets

# Labels that mail software uses for a charset Python knows under a wider (superset) name; the
# superset decodes everything the label promises plus what senders put there anyway.
_CHARSET_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cn-gb": "gb18030",
    "gb_2312-80": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "ansi_x3.4-1968": "cp1252",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
}
# When a label is wrong it is usually wrong within a family (Shift_JIS bytes labelled
# ISO-2022-JP, Big5 labelled GB2312): try the family before falling back to Windows-1252.
_RELATED_CODECS = {
    "iso2022_jp_ext": ("iso2022_jp_2004", "iso2022_jp_2"),
    "iso2022_jp": ("iso2022_jp_2004", "iso2022_jp_2"),
    "euc_jp": ("cp932",),
    "cp932": ("euc_jp",),
    "gb18030": ("big5hkscs",),
    "big5hkscs": ("gb18030",),
    "cp949": ("gb18030",),
}
_MULTIBYTE_CODECS = {"gb18030", "big5hkscs", "cp932", "euc_jp", "cp949", "iso2022_jp_ext", "utf-8"}


def _codec(label: str | None) -> str | None:
    """A Python codec name for a MIME charset label, or None when unknown."""
    if not label:
        return None
    name = str(label).strip().strip("\"'").lower()
    name = _CHARSET_SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, *charsets: str | None) -> str:
    """Decode with the first charset that fits (or its family), else UTF-8, else a mix of
    UTF-8 and Windows-1252; never raises."""
    candidates: list[str] = []
    for label in charsets:
        codec = _codec(label)
        for name in (codec, *_RELATED_CODECS.get(codec or "", ())):
            if name and name not in candidates:
                candidates.append(name)
    for codec in candidates:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError, ValueError):
            continue
    if any(codec.startswith("iso2022_jp") for codec in candidates):
        decoded = _decode_japanese(data)
        if decoded is not None:
            return decoded
    # Mixed or unlabelled 8-bit text: keep every valid UTF-8 sequence, read the rest as
    # Windows-1252 (the usual companion of UTF-8 in one broken mail).
    return data.decode("utf-8", _CP1252_FALLBACK)


# a valid UTF-8 sequence of two or more bytes
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    """UTF-8 decoding's error handler: the bytes up to the next valid UTF-8 sequence (ASCII,
    and 8-bit bytes that are not UTF-8) as Windows-1252, in one call, not one per byte (a
    Windows-1252 mail has thousands)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    data = error.object
    after = _UTF8_SEQUENCE.search(data, error.end)
    end = after.start() if after else len(data)
    return bytes(data[error.start : end]).decode("cp1252", "replace"), end


_ISO2022_JP_SEGMENT = re.compile(rb"\x1b(\$[@B]|\([BJI])")


def _decode_japanese(data: bytes) -> str | None:
    """Mail labelled ISO-2022-JP that Python's codecs reject: Windows extensions, or 8-bit
    Shift_JIS/EUC-JP bytes under the wrong label."""
    if b"\x1b" in data and not any(byte >= 0x80 for byte in data):
        return _decode_iso2022_jp_windows(data)
    for codec in ("cp932", "euc_jp"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return None


def _decode_iso2022_jp_windows(data: bytes) -> str:
    """ISO-2022-JP as Windows writes it (CP50220): JIS X 0208 plus NEC/IBM extensions such as
    circled digits, which Python's iso2022 codecs reject. Each segment is mapped to Shift_JIS
    and read as cp932."""
    out: list[str] = []
    mode = b"(B"
    position = 0
    for match in [*_ISO2022_JP_SEGMENT.finditer(data), None]:
        end = match.start() if match else len(data)
        out.append(_iso2022_segment(data[position:end], mode))
        if match:
            mode, position = match.group(1), match.end()
    return "".join(out)


def _iso2022_segment(chunk: bytes, mode: bytes) -> str:
    if mode in (b"$B", b"$@"):
        sjis = bytearray()
        for index in range(0, len(chunk) - 1, 2):
            first, second = chunk[index], chunk[index + 1]
            lead = ((first + 1) >> 1) + (0x70 if first <= 0x5E else 0xB0)
            trail = second + (0x1F if first & 1 else 0x7E)
            if first & 1 and trail >= 0x7F:
                trail += 1
            sjis += bytes((lead & 0xFF, trail & 0xFF))
        return bytes(sjis).decode("cp932", "replace")
    if mode == b"(I":  # half-width katakana
        return bytes(byte | 0x80 for byte in chunk).decode("cp932", "replace")
    return chunk.decode("ascii", "replace")


_CP1252_FALLBACK = "helpline-cp1252-fallback"
codecs.register_error(_CP1252_FALLBACK, _cp1252_fallback)


# ---------------------------------------------------------------------------------------------
# Headers

_ENCODED_WORD_GAP = re.compile(r"(\?=)\s+(=\?)")
_FOLD = re.compile(r"\r?\n[ \t]+")
_LINE_BREAKS = re.compile(r"[\r\n]+[ \t]*")
_ANGLE_IDS = re.compile(r"<([^<>\s]+)>")
_PLAUSIBLE = re.compile(r"[^\s@<>\"]+@[^\s@<>\"]+\.[^\s@<>\"]+")
_WHITESPACE = re.compile(r"\s+")
_CR = re.compile(r"\r+\n|\r")


def _header_text(value: Any) -> str:
    """The header's raw bytes as a Latin-1 string, so that every byte maps to one character.

    compat32 hands out 8-bit headers as ``Header`` objects or as surrogate-escaped strings;
    a Latin-1 string keeps the original bytes whatever the real charset turns out to be.
    """
    if isinstance(value, Header):
        chunks = decode_header(value)
        raw = b"".join(
            chunk if isinstance(chunk, bytes) else chunk.encode("utf-8", "surrogateescape")
            for chunk, _charset in chunks
        )
    else:
        raw = str(value).encode("utf-8", "surrogateescape")
    return raw.decode("latin-1")


def _decode_words(text: str, fallback: tuple[str, ...] = ()) -> str:
    """Decode RFC 2047 words in a Latin-1 header string; raw 8-bit text tries UTF-8 first."""
    # unfold first: encoded words broken over lines (illegal, but common) then still match
    text = _ENCODED_WORD_GAP.sub(r"\1\2", _FOLD.sub(" ", text))
    try:
        chunks = decode_header(text)
    except Exception:  # the stdlib raises assorted errors on damaged encoded words
        chunks = [(text, None)]
    parts: list[str] = []
    for chunk, charset in chunks:
        data = chunk.encode("latin-1", "replace") if isinstance(chunk, str) else chunk
        if charset is None:
            parts.append(decode_bytes(data, "utf-8", *fallback))
        else:
            parts.append(decode_bytes(data, charset, *fallback))
    return _LINE_BREAKS.sub(" ", "".join(parts)).strip()


def decode_header_value(value: Any, fallback: tuple[str, ...] = ()) -> str:
    """RFC 2047 decoding; raw 8-bit headers try UTF-8, then the ``fallback`` charsets."""
    if value is None:
        return ""
    return _decode_words(_header_text(value), fallback)


def _message_ids(value: str) -> list[str]:
    ids = _ANGLE_IDS.findall(value)
    return ids or [token.strip("<>") for token in value.split() if "@" in token]


_ADDRESS = re.compile(r"[^\s<>()\",;:@]+@[^\s<>()\",;:@]+")


def _repair_address(raw: str) -> str:
    """Find an address in a header that the RFC parser gave up on (spaces, stray quotes or '>')."""
    for candidate in re.findall(r"<([^<>]*@[^<>]*)>", raw) or [raw]:
        compact = re.sub(r"\s*@\s*", "@", candidate)
        # "power quadrant system@example.com": the words before @ belong to the local part
        local_domain = re.search(r"([^<>@]*)@([^\s<>\"]+)", compact)
        if local_domain:
            local = re.sub(r"[\s\"']+", "", local_domain.group(1))
            domain = local_domain.group(2).strip(">.,;")
            if local and domain:
                return f"{local}@{domain}"
    match = _ADDRESS.search(raw)
    return match.group(0) if match else ""


def _address_pairs(msg: Message, header: str) -> list[tuple[str, str]]:
    """(raw name, address) pairs; addresses are split before decoding (names hold "," or "<")."""
    values = [_header_text(value) for value in msg.get_all(header) or []]
    try:
        return [pair for pair in address_pairs(*values) if pair[1]]
    except Exception:  # getaddresses is not total on damaged input
        return []


def _clean_name(name: str, raw: str = "") -> str:
    # "MAILER-DAEMON (Mail Delivery System) <x@y>": the comment is not part of the name, but
    # "Marcus Smith (ABC)" in quotes is
    if f'"{name}"' not in raw:
        name = re.sub(r"\s*\([^()]*\)", "", name).strip() or name
    return name.strip().strip("\"'").strip()


def _parse_sender(msg: Message, charsets: tuple[str, ...]) -> Sender:
    bare_local: tuple[str, str] | None = None
    for header in ("From", "Sender", "Reply-To", "Return-Path"):
        pairs = _address_pairs(msg, header)
        raw = " ".join(_header_text(value) for value in msg.get_all(header) or [])
        for name, address in pairs:
            if _plausible(address):
                address = address.lower()
                return Sender(address, _clean_name(_decode_words(name, charsets), raw), address)
        for value in msg.get_all(header) or []:
            decoded = _decode_words(_header_text(value), charsets)
            address = _repair_address(decoded).lower()
            if address:
                name = _decode_words(pairs[0][0], charsets) if pairs else ""
                name = name if name and "@" not in name else _display_name(decoded)
                return Sender(address, _clean_name(name), address)
        if pairs and bare_local is None:
            bare_local = pairs[0]
    if bare_local:  # "MAILER-DAEMON (Mail Delivery System)": a local part without domain
        name, address = bare_local
        return Sender(address.lower(), _clean_name(_decode_words(name, charsets)), address.lower())
    return Sender(address="", name="", email=None)


def _plausible(address: str) -> bool:
    return bool(_PLAUSIBLE.fullmatch(address or ""))


def _display_name(text: str) -> str:
    quoted = re.match(r'\s*"([^"]*)"', text)
    if quoted:
        return quoted.group(1)
    before = text.split("<", 1)[0].strip()
    return "" if "@" in before else before


_TICKET_TAG = re.compile(r"\[(?:[A-Za-z]{0,12})#\s?(\d{1,18})\]")


def _thread_hints(msg: Message, subject: str) -> ThreadHints:
    tag = _TICKET_TAG.search(subject)
    references = _message_ids(str(msg.get("References", "") or ""))
    for message_id in _message_ids(str(msg.get("In-Reply-To", "") or "")):
        if message_id in references:
            references.remove(message_id)
        references.append(message_id)  # the direct parent is the most recent: keep it last
    return ThreadHints(
        ticket_number=int(tag.group(1)) if tag else None,
        references=tuple(dict.fromkeys(references)),
    )


# ---------------------------------------------------------------------------------------------
# HTML -> text

_BLOCK_TAGS = {
    "address", "article", "aside", "center", "dd", "div", "dl", "dt", "fieldset", "figure",
    "footer", "form", "header", "li", "main", "nav", "section", "tr", "caption",
}  # fmt: skip
_PARAGRAPH_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre", "hr"}
_SKIP_TAGS = {"script", "style", "head", "title", "template", "noscript", "xml", "object"}


class _TextWriter(HTMLParser):
    """Renders HTML as readable text: blocks on their own lines, blockquotes as '> ' quotes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.quote_depth = 0
        self.line_depth = 0
        self.skip = 0
        self.pre = 0

    def _newline(self, blank: bool = False) -> None:
        text = "".join(self.current).strip(" ")
        if text or (self.lines and self.lines[-1] != "" and blank):
            self.lines.append(("> " * self.line_depth + text) if text else "")
        if blank and self.lines and self.lines[-1] != "":
            self.lines.append("")
        self.current = []
        self.line_depth = self.quote_depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self._newline()
        elif tag == "blockquote":
            self._newline(blank=True)
            self.quote_depth += 1
            self.line_depth = self.quote_depth
        elif tag in _PARAGRAPH_TAGS or tag in _BLOCK_TAGS:
            self._newline(blank=tag in _PARAGRAPH_TAGS)
            if tag == "li":
                self.current.append("- ")
            elif tag == "hr":
                self.current.append("---")
                self._newline()
            elif tag == "pre":
                self.pre += 1
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._newline(blank=True)
            self.quote_depth = max(0, self.quote_depth - 1)
            self.line_depth = self.quote_depth
        elif tag in _PARAGRAPH_TAGS or tag in _BLOCK_TAGS:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._newline(blank=tag in _PARAGRAPH_TAGS)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        data = data.replace("\xa0", " ")
        if self.pre:
            chunks = data.split("\n")
            for index, chunk in enumerate(chunks):
                if index:
                    self._newline()
                self.current.append(chunk)
            return
        data = _WHITESPACE.sub(" ", data)
        if not self.current or "".join(self.current).endswith(" "):
            data = data.lstrip()
        self.current.append(data)

    def text(self) -> str:
        self._newline()
        return "\n".join(self.lines).strip("\n")


def html_to_text(html: str) -> str:
    """Readable plain text from HTML (tags dropped, blocks on lines, entities unescaped)."""
    writer = _TextWriter()
    try:
        writer.feed(html)
        writer.close()
        return writer.text()
    except Exception:  # html.parser can still trip over some damaged markup
        stripped = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>|<[^>]*>", " ", html)
        return re.sub(r"[ \t]+", " ", unescape(stripped)).strip()


# ---------------------------------------------------------------------------------------------
# MIME body and attachments


class _Html(NamedTuple):
    html: str


@dataclass
class _Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    # text per body part, in order; an HTML part is turned into text only when its section is
    # used (an alternative with a plain part drops it)
    sections: list[str | _Html] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def _uudecode(data: bytes) -> bytes:
    """Decode uuencoded data, with or without its 'begin'/'end' lines."""
    out = bytearray()
    for line in data.splitlines():
        if line.startswith(b"begin ") or not line.strip():
            continue
        if line.strip() in (b"end", b"`"):
            break
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # some encoders pad lines short; decode what the length byte promises
            length = ((line[0] - 32) & 63) * 4 // 3 + 1 if line else 0
            try:
                out += binascii.a2b_uu(line[:length].ljust(length, b" "))
            except binascii.Error:
                continue
    return bytes(out)


def _payload_bytes(part: Message) -> bytes:
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        raw = part.get_payload(decode=False)
        # compat32 hands 8-bit payloads back decoded with the part's charset ("\ufffd" for
        # what it could not): not ASCII, so encode as UTF-8; uudecode skips such lines anyway
        raw_bytes = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
        return _uudecode(raw_bytes)
    try:
        data = part.get_payload(decode=True)
    except Exception:  # damaged base64/quoted-printable: keep the undecoded payload
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


_MISSING: Any = object()


def _type_param(part: Message, name: str, failobj: Any = None) -> Any:
    """``part.get_param(name, failobj)``, with the Content-Type parameters parsed once per part:
    each ``get_param`` parses them all again, and a body part is asked for its charset twice
    and its name twice. Only for a parsed mail, which nothing changes any more."""
    params = vars(part).get("_helpline_type_params", _MISSING)
    if params is _MISSING:
        params = part.get_params()  # unquoted, as get_param's are; None without the header
        part._helpline_type_params = params  # type: ignore[attr-defined]
    for key, value in params or ():
        if key.lower() == name:
            return value
    return failobj


def _part_charset(part: Message) -> str | None:
    try:
        charset = _type_param(part, "charset")
    except Exception:
        return None
    if isinstance(charset, tuple):  # RFC 2231 form
        charset = charset[2]
    return str(charset) if charset else None


def _part_text(part: Message) -> str:
    data = _payload_bytes(part)
    charset = _part_charset(part)
    if part.get_content_subtype() == "html" and not charset:
        meta = re.search(rb"""<meta[^>]{0,200}charset=["']?([\w.:-]{1,40})""", data[:4096], re.I)
        charset = meta.group(1).decode("ascii") if meta else None
    return _normalise_newlines(decode_bytes(data, charset))


def _normalise_newlines(text: str) -> str:
    # CRLF (all mail that came over SMTP) without the regex, which visits every character;
    # the same result: a run of CRs before LF still ends in one LF
    text = text.replace("\r\n", "\n")
    return _CR.sub("\n", text) if "\r" in text else text


def _filename(part: Message, charsets: tuple[str, ...] = ()) -> str:
    try:
        # part.get_filename() or part.get_param("name"), the Content-Type read once
        name = part.get_param("filename", _MISSING, "content-disposition")
        if name is _MISSING:
            name = _type_param(part, "name", _MISSING)
        name = None if name is _MISSING else collapse_rfc2231_value(name).strip()
        name = name or _type_param(part, "name")
    except Exception:  # malformed RFC 2231 continuations
        name = None
    if isinstance(name, tuple):
        name = collapse_rfc2231_value(name, errors="replace")
    return decode_header_value(name, charsets) if name else ""


def _disposition(part: Message) -> str:
    return str(part.get("Content-Disposition", "")).split(";", 1)[0].strip().lower()


_ATTACHED_MESSAGES = frozenset({"message/rfc822", "message/global"})


class _Part(Message):
    """A part whose attached message (message/rfc822, message/global) the parser leaves
    unparsed: its payload is the enclosed message's own bytes. The stdlib parser otherwise
    builds every part of it, and an attachment's bytes had to be generated back from those
    parts: most of the time for a forwarded mail, 0.3 s for one of thousands of parts. Only
    the parser asks for the main type; to everything else the part is message/rfc822."""

    def get_content_maintype(self) -> str:
        ctype = self.get_content_type()  # once: each call reads the header again
        if ctype in _ATTACHED_MESSAGES:
            return "application"  # what the parser keeps as it is
        return ctype.split("/")[0]


def _make_attachment(part: Message, index: int, charsets: tuple[str, ...]) -> Attachment:
    ctype = part.get_content_type()
    payload = part.get_payload()
    if isinstance(payload, list):
        # message/rfc822 holds one message, message/delivery-status a list of header blocks
        content = b"\n".join(
            item.as_bytes(policy=COMPAT32_FAST) for item in payload if isinstance(item, Message)
        )
    else:
        content = _payload_bytes(part)
    filename = _filename(part, charsets)
    if not filename and ctype == "message/rfc822":
        inner_subject = _inner_subject(part, charsets)
        filename = f"{inner_subject}.eml" if inner_subject else ""
    if not filename:
        extension = (
            ".eml" if ctype == "message/rfc822" else mimetypes.guess_extension(ctype) or ".bin"
        )
        filename = f"file-{index}{extension}"
    content_id = str(part.get("Content-ID", "")).strip().strip("<>").strip() or None
    disposition = _disposition(part)
    inline = disposition == "inline" or (not disposition and content_id is not None)
    return Attachment(
        filename=filename,
        content_type=ctype,
        content=content,
        inline=inline,
        content_id=content_id,
    )


def _inner_subject(part: Message, charsets: tuple[str, ...]) -> str:
    inner = attached_message(part)
    if inner is None:
        return ""
    return re.sub(
        r'[\\/:*?"<>|]+', " ", decode_header_value(inner.get("Subject"), charsets)
    ).strip()


def _is_body_part(part: Message, ctype: str) -> bool:
    if ctype not in ("text/plain", "text/html"):
        return False
    disposition = _disposition(part)
    if disposition == "attachment":
        return False
    # a named text part outside an explicit inline disposition is an attached file
    return not (disposition != "inline" and _filename(part))


def _collect(part: Message, body: _Body, charsets: tuple[str, ...], depth: int = 0) -> None:
    # the content type is read once per part (each get_content_* call reads the header again)
    ctype = part.get_content_type()
    payload = part.get_payload()
    multipart = ctype.split("/")[0] == "multipart"
    if multipart and isinstance(payload, list) and depth < 50:
        children = [child for child in payload if isinstance(child, Message)]
        if ctype == "multipart/alternative":
            _collect_alternative(children, body, charsets, depth)
            return
        for child in children:
            _collect(child, body, charsets, depth + 1)
        return
    if multipart:
        # a multipart without parts (missing boundary): treat its content as plain text
        text = _part_text(part)
        if text.strip():
            body.plain.append(text)
            body.sections.append(text)
        return
    if _is_body_part(part, ctype):
        text = _part_text(part)
        if ctype == "text/html":
            body.html.append(text)
            body.sections.append(_Html(text))
        else:
            body.plain.append(text)
            body.sections.append(text)
        return
    body.attachments.append(_make_attachment(part, len(body.attachments) + 1, charsets))


def _collect_alternative(
    children: list[Message], body: _Body, charsets: tuple[str, ...], depth: int
) -> None:
    """Pick one rendering for the text (plain preferred) but keep the HTML and any files."""
    alternative = _Body()
    for child in children:
        _collect(child, alternative, charsets, depth + 1)
    body.html.extend(alternative.html)
    body.plain.extend(alternative.plain)
    body.attachments.extend(alternative.attachments)
    if alternative.plain:
        body.sections.extend(alternative.plain)
    elif alternative.sections:
        body.sections.extend(alternative.sections)


# ---------------------------------------------------------------------------------------------
# Automatic mail

_VACATION_SUBJECT = re.compile(
    r"^(?:(?:re|aw|fw|fwd|wg|sv|vs|antw|r)\s*:\s*)*(?:"
    r"out\s+of\s+(?:the\s+)?office|automatic\s+reply|auto(?:matic)?[\s-]?reply|autoreply|"
    r"auto[\s-]?response|autoresponse|automated\s+response|vacation|on\s+vacation|away\s+from\s+office|"
    r"abwesenheitsnotiz|abwesenheit|automatische\s+antwort|automatische\s+rückantwort|"
    r"außer\s+haus|ausser\s+haus|nicht\s+im\s+büro|"
    r"réponse\s+automatique|reponse\s+automatique|absent(?:e)?\s+du\s+bureau|absence|"
    r"respuesta\s+automática|respuesta\s+automatica|fuera\s+de\s+la\s+oficina|"
    r"risposta\s+automatica|fuori\s+(?:sede|ufficio)|"
    r"automatisch\s+antwoord|afwezig|niet\s+aanwezig|"
    r"resposta\s+automática|ausente|automatiskt\s+svar|autosvar|frånvaro|"
    r"automaattinen\s+vastaus|odpowiedź\s+automatyczna|poza\s+biurem|"
    r"автоответ|автоматический\s+ответ|自动回复|自動回覆|自動回复|自動応答|自動返信|不在)",
    re.IGNORECASE,
)
_BULK_PRECEDENCE = {"bulk", "junk", "list", "auto_reply", "auto-reply"}
_SUPPRESS = re.compile(r"\b(?:all|oof|autoreply)\b", re.IGNORECASE)


def _is_auto_submitted(msg: Message, subject: str) -> bool:
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") is not None or msg.get("X-Autorespond") is not None:
        return True
    if msg.get("X-Autogenerated") is not None or msg.get("X-AutoReply") is not None:
        return True
    if str(msg.get("Precedence", "")).strip().lower() in _BULK_PRECEDENCE:
        return True
    if msg.get("List-Id") is not None:
        return True
    if _SUPPRESS.search(str(msg.get("X-Auto-Response-Suppress", ""))):
        return True
    if str(msg.get("Return-Path", "x")).strip() == "<>":
        return True
    if msg.get_content_type() == "multipart/report":  # DSN, MDN, feedback report
        return True
    return bool(_VACATION_SUBJECT.search(subject))


# ---------------------------------------------------------------------------------------------
# Entry points


def _external_id(msg: Message, raw: bytes) -> str:
    ids = _message_ids(str(msg.get("Message-ID", "") or ""))
    if ids:
        return ids[0]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _declared_charsets(msg: Message) -> tuple[str, ...]:
    """Charsets the parts declare, multi-byte ones first: raw 8-bit headers are most often in
    the message's CJK charset, and a single-byte charset would decode anything (wrongly)."""
    codecs_found: list[str] = []
    for part in msg.walk():
        codec = _codec(_part_charset(part))
        if codec and codec not in codecs_found:
            codecs_found.append(codec)
    return tuple(sorted(codecs_found, key=lambda codec: codec not in _MULTIBYTE_CODECS))


_HEADER_FIELD = re.compile(rb"^(?:[!-9;-~]+[ \t]*:|From )")
_HEADER_SCAN_LIMIT = 256 * 1024


def _repair_header_block(raw: bytes) -> bytes:
    """Undo two kinds of damage the stdlib parser stops at (the raw bytes are kept as they are).

    A banner line before the first header ("---- Original email message ----") is dropped, and a
    header line wrapped without leading whitespace is re-indented as the continuation it is.
    """
    end = re.search(rb"\r?\n\r?\n", raw[:_HEADER_SCAN_LIMIT])
    if end is None:
        return raw
    lines = raw[: end.start()].split(b"\n")
    start = next((i for i, line in enumerate(lines[:4]) if _HEADER_FIELD.match(line)), None)
    if start is None:
        return raw
    repaired = [lines[start]]
    for line in lines[start + 1 :]:
        if line[:1] in (b" ", b"\t") or _HEADER_FIELD.match(line):
            repaired.append(line)
        else:
            repaired.append(b" " + line)
    return b"\n".join(repaired) + raw[end.start() :]


def parse_email(
    raw: bytes, *, received_at: datetime | None = None, inbox: str | None = None
) -> InboundMessage:
    """Parse raw RFC 5322 bytes into an InboundMessage; tolerant of broken mail."""
    if not raw or not raw.strip():
        raise UnparseableEmail("empty input: no headers and no body")
    msg = message_from_bytes(_repair_header_block(raw), _class=_Part, policy=compat32)
    charsets = _declared_charsets(msg)
    subject = decode_header_value(msg.get("Subject"), charsets)
    sender = _parse_sender(msg, charsets)
    body = _Body()
    _collect(msg, body, charsets)
    sections = (
        html_to_text(section.html) if isinstance(section, _Html) else section
        for section in body.sections
    )
    text = "\n\n".join(section.strip("\n") for section in sections if section.strip())
    if not (len(msg.keys()) or text.strip() or body.attachments):
        raise UnparseableEmail("no header, body text or attachment could be read")
    bounce = detect_bounce(msg, subject, text)
    return InboundMessage(
        channel=Channel.EMAIL,
        external_id=_external_id(msg, raw),
        sender=sender,
        subject=subject,
        text=text,
        html="\n".join(body.html) if body.html else None,
        reply_text=extract_reply(text, sender.name or sender.address),
        attachments=tuple(body.attachments),
        thread_hints=_thread_hints(msg, subject),
        auto_submitted=bounce is not None or _is_auto_submitted(msg, subject),
        bounce=bounce,
        received_at=received_at or datetime.now(UTC),
        inbox=inbox,
        raw=raw,
    )


def _bounce_json(bounce: Bounce | None) -> dict[str, Any] | None:
    if bounce is None:
        return None
    return {"recipients": list(bounce.recipients), "permanent": bounce.permanent}


def to_json(msg: InboundMessage) -> dict[str, Any]:
    """A JSON-ready summary for `helpline parse-email`."""
    return {
        "from_email": msg.sender.email,
        "from_name": msg.sender.name,
        "subject": msg.subject,
        "text": msg.text,
        "reply_text": msg.reply_text,
        "attachments": [
            {
                "filename": item.filename,
                "content_type": item.content_type,
                "size": item.size,
                "md5": item.md5,
            }
            for item in msg.attachments
        ],
        "auto_submitted": msg.auto_submitted,
        "bounce": _bounce_json(msg.bounce),
        "thread_hints": {
            "ticket_number": msg.thread_hints.ticket_number,
            "references": list(msg.thread_hints.references),
        },
    }
