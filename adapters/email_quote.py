"""Pure text helpers: separate a reply from quoted history and from the writer's signature.

Everything here works line by line with bounded, anchored regexes, so the cost stays linear in
the input size (pathological 750 KB quotes included).
"""

from __future__ import annotations

import re

# A line longer than this is prose, never a quote header or a signature line; checking the
# length first also keeps every regex below away from huge inputs.
_MAX_HEADER_LINE = 400
_HEADER_WINDOW = 4  # "On <date>, <name> <addr>\nwrote:" is wrapped over up to this many lines
_SIGNATURE_WINDOW = 15  # a signature starts within this many non-blank lines of the end

_WROTE = (
    r"wrote|writes|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|escreveu|skrev|"
    r"napisał|написал\(а\)|написал|napsal|kirjoitti|írta|yazdı|写道|寫道|のメッセージ"
)
# "On Tue, 2011-03-01 at 18:02 +0530, Abhishek Kona wrote:" and its translations, possibly
# wrapped over several lines; a header that starts with a date is accepted without the "On".
_ON_PREFIX = r"(?:On|Am|Le|El|Il|Op|Em|På|Den|W\s+dniu|Dne|В|在)\s|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_ON_WROTE = re.compile(rf"^[\s>*_-]*(?:{_ON_PREFIX}).*(?:{_WROTE})\s*[:：]?[\s*_]*$", re.IGNORECASE)
# Single-line only: "<anything> wrote:", e.g. "Bob <bob@example.com> wrote:".
_ANY_WROTE = re.compile(rf"^.*\S\s+(?:{_WROTE})\s*[:：]?[\s*_]*$", re.IGNORECASE)
# "Thu, 26 Jun 2014 14:00:51 +0400 от Alexander L <abc@example.com>:" (Mail.ru, Yandex):
# a date, an address and a final colon.
_DATE_ADDRESS_COLON = re.compile(r"^.{0,80}\d{1,2}[:.]\d{2}.{0,120}<?[^\s<>@]+@[^\s<>@]+>?\s*:\s*$")
_WROTE_TAIL = re.compile(rf"(?:{_WROTE})\s*[:：]?[\s*_]*$", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*[-_=*]{2,}\s*(?:Original\s+Message|Ursprüngliche\s+Nachricht|Originalnachricht|"
    r"Message\s+d'origine|Mensaje\s+original|Messaggio\s+originale|Oorspronkelijk\s+bericht|"
    r"Originalmeddelande|Opprinnelig\s+melding|Mail\s+original|Reply\s+message|"
    r"原始邮件|原始郵件|元のメッセージ)\s*[-_=*]{2,}\s*$",
    re.IGNORECASE,
)
_HEADER_KEYS = {
    "from": "from",
    "von": "from",
    "de": "from",
    "van": "from",
    "da": "from",
    "från": "from",
    "fra": "from",
    "od": "from",
    "от": "from",
    "отправлено": "date",
    "кому": "to",
    "тема": "subject",
    "发件人": "from",
    "寄件者": "from",
    "差出人": "from",
    "sent": "date",
    "date": "date",
    "gesendet": "date",
    "datum": "date",
    "envoyé": "date",
    "enviado": "date",
    "inviato": "date",
    "verzonden": "date",
    "skickat": "date",
    "sendt": "date",
    "发送时间": "date",
    "日期": "date",
    "to": "to",
    "an": "to",
    "à": "to",
    "para": "to",
    "a": "to",
    "aan": "to",
    "till": "to",
    "til": "to",
    "收件人": "to",
    "cc": "cc",
    "subject": "subject",
    "betreff": "subject",
    "objet": "subject",
    "asunto": "subject",
    "oggetto": "subject",
    "onderwerp": "subject",
    "ämne": "subject",
    "emne": "subject",
    "主题": "subject",
    "件名": "subject",
}
_HEADER_LINE = re.compile(r"^\s*[*_]{0,2}([^\W\d_]{1,10})[*_]{0,2}\s?[:：]", re.UNICODE)
_SEPARATOR_LINE = re.compile(r"^\s*(?:_{3,}|-{3,})\s*$")
_SIG_DELIMITER = re.compile(r"^(?:--|-- |__|—|-{3,}|_{3,})\s*$")
_MOBILE_SIGNATURE = re.compile(
    r"^\s*(?:Sent\s+from\s+my\s+[\w®™'.-]+(?:\s+[\w®™'.-]+){0,4}"
    r"|Sent\s+from\s+(?:Mail|Outlook|Yahoo\s+Mail|Samsung\s+Mobile)\b.{0,40}"
    r"|Sent\s+(?:with|using|via)\s+\S+.{0,60}"
    r"|Sent\s+from\s+a\s+.{0,40}"
    r"|Get\s+Outlook\s+for\s+\w+.{0,20}"
    r"|Von\s+meinem\s+.{1,40}\s+gesendet"
    r"|Envoyé\s+de\s+mon\s+.{1,40}"
    r"|Enviado\s+desde\s+mi\s+.{1,40}"
    r"|Inviato\s+da(?:l\s+mio)?\s+.{1,40}"
    r"|Verzonden\s+vanaf\s+mijn\s+.{1,40}"
    r"|发自我的.{1,20}|從我的.{1,20}傳送)\s*$",
    re.IGNORECASE,
)
_VALEDICTION = re.compile(
    r"^\s*(?:thanks?(?:\s+you)?|many\s+thanks|thx|cheers|best(?:\s+regards|\s+wishes)?|"
    r"(?:kind|warm|best)\s+regards|regards|sincerely|yours(?:\s+truly)?|"
    r"mit\s+freundlichen\s+grüßen|viele\s+grüße|gruß|grüße|cordialement|saludos|"
    r"saluti|met\s+vriendelijke\s+groet|с\s+уважением)[\s,.!]*$",
    re.IGNORECASE,
)


def _split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _header_key(line: str) -> str | None:
    if len(line) > _MAX_HEADER_LINE:
        return None
    match = _HEADER_LINE.match(line.lstrip("> "))
    return _HEADER_KEYS.get(match.group(1).lower()) if match else None


def _is_header_block(lines: list[str], start: int) -> bool:
    """A From:/Sent:/To:/Subject: block that mail clients put above forwarded or quoted text."""
    if _header_key(lines[start]) not in ("from", "date"):
        return False
    # wrapped header values may sit between the keys, hence a window rather than a run
    keys = {_header_key(line) for line in lines[start : start + 8]} - {None}
    return ("from" in keys and len(keys) >= 2) or {"date", "subject", "to"} <= keys


def _on_wrote_span(lines: list[str], start: int) -> int:
    """How many lines the "On <date>, <name> wrote:" header at ``start`` spans (0: none)."""
    first = lines[start].strip()
    if not first or len(first) > _MAX_HEADER_LINE or _is_quoted(first):
        return 0
    window = first
    for offset in range(_HEADER_WINDOW):
        if offset:
            if start + offset >= len(lines) or not lines[start + offset].strip():
                return 0
            window = f"{window} {lines[start + offset].strip()}"
            if len(window) > _MAX_HEADER_LINE:
                return 0
        # cheap test first: the costly patterns only run on lines that end like a header
        if _WROTE_TAIL.search(window[-40:]) and (
            _ON_WROTE.match(window) or (not offset and _ANY_WROTE.match(window))
        ):
            return offset + 1
        if not offset and window.endswith(":") and _DATE_ADDRESS_COLON.match(window):
            return 1
    return 0


def _quote_start(lines: list[str]) -> int | None:
    """Index of the first line of quoted history (its header or separator), or None."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or len(stripped) > _MAX_HEADER_LINE:
            continue
        if _ORIGINAL_MESSAGE.match(stripped) or _on_wrote_span(lines, index):
            return index
        if _SEPARATOR_LINE.match(stripped):
            following = _next_nonblank(lines, index + 1)
            if following is not None and _is_header_block(lines, following):
                return index
        if _is_header_block(lines, index):
            return index
    return None


def _next_nonblank(lines: list[str], start: int) -> int | None:
    for index in range(start, min(len(lines), start + 3)):
        if lines[index].strip():
            return index
    return None


def _drop_trailing_quotes(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and (not lines[end - 1].strip() or _is_quoted(lines[end - 1])):
        end -= 1
    return lines[:end]


def _quoted_run_after(lines: list[str], start: int) -> int | None:
    """End index of the '>' quoted block right after ``start`` (blank lines allowed), or None."""
    index = start
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index >= len(lines) or not _is_quoted(lines[index]):
        return None
    while index < len(lines) and (_is_quoted(lines[index]) or not lines[index].strip()):
        index += 1
    return index


def _interleaved_reply(lines: list[str]) -> list[str]:
    """Answers written between '>' quotes: keep every unquoted block, drop the attributions."""
    blocks: list[list[str]] = [[]]
    index = 0
    while index < len(lines):
        span = _on_wrote_span(lines, index)
        if span and _quoted_run_after(lines, index + span) is not None:
            index += span
            continue
        if _is_quoted(lines[index]):
            if blocks[-1]:
                blocks.append([])
        else:
            blocks[-1].append(lines[index])
        index += 1
    kept = ["\n".join(block).strip("\n") for block in blocks]
    return "\n".join(block for block in kept if block.strip()).split("\n")


def _is_interleaved(lines: list[str], cut: int) -> bool:
    """The quote header introduces a '>' block followed by more unquoted text."""
    span = _on_wrote_span(lines, cut)
    end = _quoted_run_after(lines, cut + span) if span else None
    return end is not None and any(line.strip() for line in lines[end:])


def split_quote(text: str) -> tuple[str, str]:
    """Split ``text`` into (new reply, quoted history). Inline answers between quotes are kept."""
    lines = _split_lines(text)
    cut = _quote_start(lines)
    if cut is not None and _is_interleaved(lines, cut):
        reply = _drop_trailing_quotes(_interleaved_reply(lines))
        return "\n".join(reply).strip("\n"), ""
    head = lines if cut is None else lines[:cut]
    reply = _drop_trailing_quotes(head)
    if not any(line.strip() for line in reply):
        # bottom-posting without an attribution line: the quote first, the answer below it
        reply = [line for line in lines if not _is_quoted(line)]
        cut_after = _quote_start(reply)
        if cut_after is not None and any(line.strip() for line in reply[:cut_after]):
            reply = reply[:cut_after]
        return "\n".join(reply).strip("\n"), ""
    rest = lines[len(reply) :]
    return "\n".join(reply).rstrip(), "\n".join(rest).strip("\n")


def _name_tokens(sender: str) -> set[str]:
    local = sender.split("@", 1)[0] if "@" in sender else sender
    return {token.lower() for token in re.split(r"[\W_]+", local) if len(token) >= 3}


def _signature_by_sender(lines: list[str], sender: str) -> int | None:
    """Talon-style: the writer's name on a short line near the end starts the signature."""
    tokens = _name_tokens(sender)
    if not tokens:
        return None
    nonblank = [index for index, line in enumerate(lines) if line.strip()]
    for index in nonblank[-_SIGNATURE_WINDOW:]:
        line = lines[index].strip()
        if len(line) > 60 or index == nonblank[0]:
            continue
        words = {word.lower() for word in re.split(r"[\W_]+", line) if word}
        if tokens & words:
            previous = _previous_nonblank(lines, index)
            if (
                previous is not None
                and previous != nonblank[0]
                and _VALEDICTION.match(lines[previous])
            ):
                return previous
            return index
    return None


def _previous_nonblank(lines: list[str], index: int) -> int | None:
    if index > 0 and lines[index - 1].strip():
        return index - 1
    return None


def split_signature(text: str, sender: str = "") -> tuple[str, str]:
    """Split ``text`` into (body, signature); ``sender`` is the writer's name or address.

    Recognised: the RFC 3676 "-- " delimiter (and the common "--"/"__" variants), "Sent from
    my phone" lines, and, when the sender is known, a short closing block that names them.
    """
    lines = _split_lines(text.rstrip())
    nonblank = [index for index, line in enumerate(lines) if line.strip()]
    if len(nonblank) < 2:
        return text.strip(), ""
    window = nonblank[-_SIGNATURE_WINDOW:]
    cut: int | None = None
    for index in window:
        line = lines[index]
        if index != nonblank[0] and (_SIG_DELIMITER.match(line) or _MOBILE_SIGNATURE.match(line)):
            cut = index
            break
    by_sender = _signature_by_sender(lines, sender) if sender else None
    if by_sender is not None and (cut is None or by_sender < cut):
        cut = by_sender
    if cut is None:
        return text.strip(), ""
    return "\n".join(lines[:cut]).strip(), "\n".join(lines[cut:]).strip()


def extract_reply(text: str, sender: str = "") -> str:
    """The text the writer just added: quoted history and signature removed."""
    reply, _quoted = split_quote(text)
    body, _signature = split_signature(reply, sender)
    return body
