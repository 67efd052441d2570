"""Unit tests for adapters.email_parse with small hand-written mails."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from email.utils import getaddresses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.email_bounce import address_pairs
from adapters.email_parse import (
    UnparseableEmail,
    _normalise_newlines,
    decode_bytes,
    html_to_text,
    parse_email,
    to_json,
)
from adapters.email_quote import extract_reply, split_quote, split_signature
from core.messages import Channel

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def mail(headers: str, body: str = "Hello\n") -> bytes:
    return (headers.strip("\n") + "\n\n" + body).encode("utf-8")


def test_basic_fields() -> None:
    raw = mail(
        "From: Jane Doe <Jane.Doe@Example.COM>\nTo: help@example.org\nSubject: Printer\n"
        "Message-ID: <abc@example.com>"
    )
    message = parse_email(raw, received_at=WHEN, inbox="support")
    assert message.channel is Channel.EMAIL
    assert message.external_id == "abc@example.com"
    assert message.sender.address == "jane.doe@example.com"
    assert message.sender.email == "jane.doe@example.com"
    assert message.sender.name == "Jane Doe"
    assert message.subject == "Printer"
    assert message.text == "Hello"
    assert message.received_at == WHEN
    assert message.inbox == "support"
    assert message.raw == raw
    assert not message.auto_submitted
    assert message.bounce is None


def test_missing_message_id_falls_back_to_content_hash() -> None:
    raw = mail("From: a@example.com\nSubject: x")
    message = parse_email(raw)
    assert message.external_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert message.received_at.tzinfo is not None


def test_rfc2047_subject_and_name() -> None:
    raw = mail(
        "From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <j@example.com>\n"
        "Subject: =?UTF-8?B?w5xiZXJ3ZWlzdW5n?= =?UTF-8?Q?_fehlgeschlagen?="
    )
    message = parse_email(raw)
    assert message.subject == "Überweisung fehlgeschlagen"
    assert message.sender.name == "Jörg Müller"


def test_encoded_name_with_comma_is_one_address() -> None:
    raw = mail("From: =?utf-8?Q?M=C3=BCller=2C_Hans?= <hans@example.com>\nSubject: s")
    sender = parse_email(raw).sender
    assert (sender.name, sender.address) == ("Müller, Hans", "hans@example.com")


def test_raw_8bit_header_is_decoded() -> None:
    raw = "Subject: Grüße\nFrom: a@example.com\n\nhi\n".encode()
    assert parse_email(raw).subject == "Grüße"


@pytest.mark.parametrize(
    ("subject", "number"),
    [("Re: Printer broken [#42]", 42), ("[Ticket#638810] Anfrage", 638810), ("No tag #42", None)],
)
def test_ticket_tag(subject: str, number: int | None) -> None:
    message = parse_email(mail(f"From: a@example.com\nSubject: {subject}"))
    assert message.thread_hints.ticket_number == number


def test_in_reply_to_and_references() -> None:
    raw = mail(
        "From: a@example.com\nSubject: Re: x\nReferences: <one@x> <two@x>\nIn-Reply-To: <two@x>"
    )
    assert parse_email(raw).thread_hints.references == ("one@x", "two@x")


def test_in_reply_to_only() -> None:
    raw = mail("From: a@example.com\nSubject: Re: x\nIn-Reply-To: <parent@x>")
    assert parse_email(raw).thread_hints.references == ("parent@x",)


def test_html_only_mail_becomes_readable_text() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;team,</p><p>line one<br>line two</p>"
        "<ul><li>first</li><li>second</li></ul><script>alert(1)</script>"
        "<blockquote>old text</blockquote></body></html>"
    )
    raw = mail("From: a@example.com\nSubject: s\nContent-Type: text/html; charset=utf-8", html)
    message = parse_email(raw)
    assert message.html is not None and "<p>" in message.html
    assert message.text.splitlines() == [
        "Hello team,",
        "",
        "line one",
        "line two",
        "",
        "- first",
        "- second",
        "",
        "> old text",
    ]
    assert message.reply_text == "Hello team,\n\nline one\nline two\n\n- first\n- second"


def test_alternative_prefers_plain_text_and_keeps_html() -> None:
    raw = mail(
        "From: a@example.com\nSubject: s\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="b"',
        "--b\nContent-Type: text/plain; charset=utf-8\n\nplain version\n"
        "--b\nContent-Type: text/html; charset=utf-8\n\n<b>html version</b>\n--b--\n",
    )
    message = parse_email(raw)
    assert message.text == "plain version"
    assert message.html == "<b>html version</b>"


def test_attachment_with_rfc2231_name_and_md5() -> None:
    content = b"%PDF-1.4 fake"
    raw = mail(
        "From: a@example.com\nSubject: s\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain\n\nsee attached\n"
        "--b\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf\n"
        "Content-Transfer-Encoding: base64\n\n"
        f"{base64.b64encode(content).decode()}\n--b--\n",
    )
    message = parse_email(raw)
    (attachment,) = message.attachments
    assert attachment.filename == "Rechnung März.pdf"
    assert attachment.content_type == "application/pdf"
    assert attachment.content == content
    assert not attachment.inline
    summary = to_json(message)["attachments"]
    assert summary == [
        {
            "filename": "Rechnung März.pdf",
            "content_type": "application/pdf",
            "size": len(content),
            "md5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
        }
    ]


def test_rfc2231_name_parameter_without_disposition() -> None:
    raw = mail(
        'From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain\n\nhi\n"
        "--b\nContent-Type: application/pdf; name*=utf-8''r%C3%A9sum%C3%A9.pdf\n\n%PDF\n--b--\n",
    )
    assert [item.filename for item in parse_email(raw).attachments] == ["résumé.pdf"]


def test_inline_image_keeps_content_id() -> None:
    raw = mail(
        'From: a@example.com\nSubject: s\nContent-Type: multipart/related; boundary="b"',
        "--b\nContent-Type: text/html\n\n<img src=cid:logo@x>\n"
        "--b\nContent-Type: image/png\nContent-ID: <logo@x>\nContent-Transfer-Encoding: base64\n"
        "\niVBORw0KGgo=\n--b--\n",
    )
    (image,) = parse_email(raw).attachments
    assert image.inline and image.content_id == "logo@x"
    assert image.filename.endswith(".png")


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "X-Autoreply: yes",
        "X-Autorespond: yes",
        "Precedence: bulk",
        "Precedence: auto_reply",
        "List-Id: <news.example.com>",
        "X-Auto-Response-Suppress: OOF, AutoReply",
        "Return-Path: <>",
    ],
)
def test_auto_reply_headers(header: str) -> None:
    raw = mail(f"From: a@example.com\nSubject: Hello\n{header}")
    assert parse_email(raw).auto_submitted


@pytest.mark.parametrize(
    "subject",
    ["Out of Office: Hello", "Automatic reply: Hello", "Abwesenheitsnotiz: Hallo", "Autoreply"],
)
def test_vacation_subjects(subject: str) -> None:
    assert parse_email(mail(f"From: a@example.com\nSubject: {subject}")).auto_submitted


def test_auto_submitted_no_is_human() -> None:
    raw = mail("From: a@example.com\nSubject: Hi\nAuto-Submitted: no")
    assert not parse_email(raw).auto_submitted


DSN = """From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
To: help@example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="r"

--r
Content-Type: text/plain

Your message could not be delivered.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; Gone@Example.net
Action: {action}
Status: {status}

--r
Content-Type: message/rfc822

From: help@example.org
To: gone@example.net
Subject: Your ticket [#7]
Message-ID: <ticket-7@helpline.example.org>

body
--r--
"""


def test_dsn_permanent_with_original_message_id() -> None:
    message = parse_email(DSN.format(action="failed", status="5.1.1").encode())
    assert message.bounce is not None
    assert message.bounce.recipients == ("gone@example.net",)
    assert message.bounce.permanent is True
    assert message.bounce.original_message_id == "ticket-7@helpline.example.org"
    assert message.auto_submitted
    assert to_json(message)["bounce"] == {"recipients": ["gone@example.net"], "permanent": True}


def test_dsn_delayed_is_temporary() -> None:
    message = parse_email(DSN.format(action="delayed", status="4.4.1").encode())
    assert message.bounce is not None and message.bounce.permanent is False


def test_dsn_delivered_is_not_a_bounce_but_automatic() -> None:
    message = parse_email(DSN.format(action="delivered", status="2.0.0").encode())
    assert message.bounce is None
    assert message.auto_submitted


def test_plain_text_exim_bounce() -> None:
    body = (
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  nobody@example.net\n    SMTP error from remote mail server after RCPT TO:\n"
        "    550 5.1.1 User unknown\n\n"
        "------ This is a copy of the message, including all the headers. ------\n\n"
        "Message-ID: <orig@example.org>\nFrom: help@example.org\nTo: nobody@example.net\n"
    )
    raw = mail(
        "From: Mail Delivery System <Mailer-Daemon@mx.example.com>\n"
        "To: help@example.org\nSubject: Mail delivery failed: returning message to sender",
        body,
    )
    bounce = parse_email(raw).bounce
    assert bounce is not None
    assert bounce.recipients == ("nobody@example.net",)
    assert bounce.permanent
    assert bounce.original_message_id == "orig@example.org"


def test_customer_mentioning_delivery_failure_is_no_bounce() -> None:
    raw = mail(
        "From: bob@example.com\nSubject: Help",
        "My mail to alice@example.net could not be delivered, user unknown. Why?\n",
    )
    assert parse_email(raw).bounce is None


def test_sender_with_spaces_and_stray_bracket() -> None:
    spaced = mail('From: "your secret" <power quadrant system@example.com>\nSubject: s')
    assert parse_email(spaced).sender.address == "powerquadrantsystem@example.com"
    bracket = mail('From: "Millions Lottery"@example.com>\nSubject: s')
    assert parse_email(bracket).sender.address == "millionslottery@example.com"


def test_missing_from_uses_other_headers() -> None:
    raw = mail("Reply-To: Help <reply@example.com>\nSubject: s")
    assert parse_email(raw).sender.address == "reply@example.com"


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("gb2312", "你好，世界"),
        ("big5", "您好"),
        ("iso-2022-jp", "メルマガ解除"),
        ("windows-1258", "Xin chào"),
        ("utf-7", "Grüße"),
        ("koi8-r", "Привет"),
    ],
)
def test_charsets(charset: str, text: str) -> None:
    codec = {"windows-1258": "cp1258"}.get(charset, charset)
    raw = (
        f"From: a@example.com\nSubject: s\nContent-Type: text/plain; charset={charset}\n\n"
    ).encode() + text.encode(codec)
    assert parse_email(raw).text == text


def test_unknown_charset_falls_back() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: text/plain; charset=x-bogus\n\ncaf\xc3\xa9 \xe9t\xe9\n"
    )
    assert parse_email(raw).text == "café été"


def test_decode_bytes_never_raises() -> None:
    assert decode_bytes(b"\xff\xfe\x00abc", "no-such-charset") != ""
    assert decode_bytes("①１都".encode("iso2022_jp_2004"), "iso-2022-jp") == "①１都"


def test_uuencoded_attachment() -> None:
    raw = mail(
        'From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain\n\nsee file\n"
        '--b\nContent-Type: application/octet-stream; name="a.txt"\n'
        "Content-Transfer-Encoding: x-uuencode\n\nbegin 644 a.txt\n,2&5L;&\\@6F%M;6%D\n`\nend\n"
        "--b--\n",
    )
    (attachment,) = parse_email(raw).attachments
    assert (attachment.filename, attachment.content) == ("a.txt", b"Hello Zammad")


def test_broken_mime_still_yields_text() -> None:
    raw = mail(
        'From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary="missing"',
        "just some text without any boundary\n",
    )
    assert "just some text" in parse_email(raw).text


@pytest.mark.parametrize("raw", [b"", b"   \n\n  "])
def test_empty_input_is_unparseable(raw: bytes) -> None:
    with pytest.raises(UnparseableEmail, match="empty"):
        parse_email(raw)


def test_reply_text_strips_quote_and_signature() -> None:
    body = (
        "Thanks, that fixed it.\n\n-- \nJane\nACME Corp\n\n"
        "On Tue, 1 May 2024 at 10:00, Help <help@example.org> wrote:\n> Try rebooting.\n"
    )
    message = parse_email(mail("From: Jane <jane@example.com>\nSubject: Re: x", body))
    assert message.reply_text == "Thanks, that fixed it."
    assert message.body == "Thanks, that fixed it."
    assert "Try rebooting" in message.text


def test_outlook_header_block_is_quote() -> None:
    text = "Sure.\n\nFrom: Help Desk\nSent: Monday\nTo: Jane\nSubject: Re: x\n\nOld text"
    assert split_quote(text)[0] == "Sure."


def test_interleaved_answers_are_kept() -> None:
    text = "On Mon, Bob wrote:\n> question one?\nanswer one\n> question two?\nanswer two\n"
    assert extract_reply(text) == "answer one\nanswer two"


def test_mobile_signature_and_false_friend() -> None:
    assert extract_reply("Fine\n\nSent from my iPhone") == "Fine"
    kept = "Fine\n\nSent from my desk, is much easier then my mobile phone."
    assert extract_reply(kept) == kept


def test_signature_by_sender_name() -> None:
    body, signature = split_signature("Please call me.\n\nThank you,\nNoam", "Noam")
    assert (body, signature) == ("Please call me.", "Thank you,\nNoam")


def test_pathological_quote_is_fast() -> None:
    import time

    text = ("> " + "x" * 300 + " wrote\n") * 5000 + "On " + "a " * 5000 + "\n" * 3
    started = time.perf_counter()
    split_quote(text)
    assert time.perf_counter() - started < 1.0


def test_html_to_text_handles_garbage() -> None:
    assert html_to_text("<p>a &amp; b</p><<<>>><!-- x").startswith("a & b")
    assert html_to_text("") == ""


def test_to_json_shape() -> None:
    raw = mail("From: Jane <jane@example.com>\nSubject: [#5] Hi\nIn-Reply-To: <p@x>", "Hi\n")
    data = to_json(parse_email(raw))
    assert data == {
        "from_email": "jane@example.com",
        "from_name": "Jane",
        "subject": "[#5] Hi",
        "text": "Hi",
        "reply_text": "Hi",
        "attachments": [],
        "auto_submitted": False,
        "bounce": None,
        "thread_hints": {"ticket_number": 5, "references": ["p@x"]},
    }


@given(
    st.lists(
        st.sampled_from(
            [
                b"a",
                b" ",
                b"\x80",
                b"\x9d",
                b"\xe9",
                b"\xc3\xa9",
                b"\xe2\x82\xac",
                b"\xf0\x9f\x98\x80",
                b"\xe2\x82",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
            ]
        ),
        max_size=40,
    ).map(b"".join)
    | st.binary(max_size=64)
)
def test_unlabelled_8bit_text_reads_utf8_and_windows_1252(data: bytes) -> None:
    """Every valid UTF-8 sequence read as UTF-8, every other 8-bit byte as Windows-1252 (the
    fallback decodes the stretches between UTF-8 sequences in one call each)."""
    escaped = data.decode("utf-8", "surrogateescape")  # a byte that is not UTF-8: U+DC80-DCFF
    expected = "".join(
        bytes([ord(c) - 0xDC00]).decode("cp1252", "replace") if "\udc80" <= c <= "\udcff" else c
        for c in escaped
    )
    assert decode_bytes(data) == expected


def test_carriage_returns_in_a_body_become_newlines() -> None:
    raw = mail(
        "From: a@example.com\nContent-Transfer-Encoding: quoted-printable",
        "one=0D=0Atwo=0D=0D=0Athree=0Dfour=0D=0D\n",
    )
    assert parse_email(raw).text == "one\ntwo\nthree\nfour"


@given(st.text(st.sampled_from("a\r\n"), max_size=30))
def test_newlines_normalised_as_the_one_regex_does(text: str) -> None:
    """A run of CRs before an LF is one newline, every other CR one newline."""
    assert _normalise_newlines(text) == re.sub(r"\r+\n|\r", "\n", text)


def test_address_pairs_answer_as_getaddresses() -> None:
    fields = [
        ("Ann <ann@example.com>",),
        ("Ann <ann@example.com>", "bob@example.com"),
        ("Ann <ann@example.com>",),
        ('"Lee, Bo" <bo@example.com>, x@example.com',),
    ]
    for values in fields * 2:
        assert address_pairs(*values) == tuple(getaddresses(list(values)))


@pytest.mark.parametrize(
    ("headers", "filename"),
    [
        ('Content-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment', "a.pdf"),
        (
            'Content-Type: application/pdf; name="a.pdf"\n'
            'Content-Disposition: attachment; filename="b.pdf"',
            "b.pdf",
        ),
        (
            'Content-Type: application/pdf; name="a.pdf"\n'
            'Content-Disposition: attachment; filename=""',
            "a.pdf",
        ),
        (
            "Content-Type: application/pdf\n"
            "Content-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf",
            "été.pdf",
        ),
        ("Content-Type: text/plain; name*=iso-8859-1''caf%E9.txt", "café.txt"),
        ('Content-Type: application/octet-stream; name="  "', "file-1.bin"),
    ],
)
def test_attachment_names_from_either_header(headers: str, filename: str) -> None:
    raw = mail(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9\n"
        f"--b\n{headers}\n\nx\n--b--\n",
    )
    message = parse_email(raw.replace(b"\xc3\xa9", b"\xe9"))
    assert message.text == "café"
    assert [a.filename for a in message.attachments] == [filename]
