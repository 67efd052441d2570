"""Who may call what: every route of the running application, walked for every kind of caller,
against one explicit policy table. A route without a row in the table fails the walk, so a new
route cannot ship without a decision about who may call it.

Callers: nobody (no credentials), a revoked one (a revoked admin token and a session cookie
signed before the password changed), an agent of team alpha, an agent of team beta, a
supervisor and an admin. Each caller sends its bearer token and its dashboard session cookie
on every request, so a route that accepted either would show it.

The CSRF walk at the end posts to every form route of the pages without, and with, the form
token and its cookie.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from core import accounts, kb
from core.accounts import Role
from core.links import ActionLinks
from core.messages import Attachment, Channel, InboundMessage, Sender
from core.persistence.models import Agent, AttachmentRow, Message, Ticket, table_of
from core.ports import utc_now
from gateway import session
from gateway.app import API
from tests.conftest import Server, ServerFactory
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

ROLES = ("anonymous", "revoked", "agent_alpha", "agent_beta", "supervisor", "admin")

# -- the policy ----------------------------------------------------------------------------
# Who may call a route (``access``):
#   public      anyone: no credentials are asked (``why`` says why that is safe)
#   agent       a valid bearer token of any role
#   ticket      a valid bearer token; an agent only for tickets of their team, of no team, or
#               assigned to them (others are 404, as if they did not exist)
#   supervisor  a supervisor's or an admin's bearer token
#   admin       an admin's bearer token
#   manager     a supervisor's or an admin's dashboard session (an agent: 403, nobody: 303 to
#               the sign-in page)
OUTCOMES: dict[str, dict[str, int]] = {
    "agent": {"anonymous": 401, "revoked": 401},
    "ticket": {"anonymous": 401, "revoked": 401},
    "supervisor": {"anonymous": 401, "revoked": 401, "agent_alpha": 403, "agent_beta": 403},
    "admin": {
        "anonymous": 401,
        "revoked": 401,
        "agent_alpha": 403,
        "agent_beta": 403,
        "supervisor": 403,
    },
    "manager": {"anonymous": 303, "revoked": 303, "agent_alpha": 403, "agent_beta": 403},
    "public": {},
}
REGISTRY_ROLE = {
    "public": None,
    "agent": Role.AGENT,
    "ticket": Role.AGENT,
    "supervisor": Role.SUPERVISOR,
    "admin": Role.ADMIN,
}


@dataclass(frozen=True)
class Rule:
    access: str
    ok: int  # the answer to an allowed caller's valid-looking request
    why: str = ""  # public routes: why no credentials are needed
    held: int | None = None  # ticket routes: the answer when another agent holds the ticket


CSRF = "a form: CSRF-protected, and this call carries no form token (see the CSRF walk)"
POLICY: dict[tuple[str, str], Rule] = {
    # customers: no accounts; what they reach is either theirs by a secret link or harmless
    ("GET", "/"): Rule("public", 200, "the contact form"),
    ("POST", "/"): Rule("public", 403, "the contact form's submission; " + CSRF),
    ("GET", "/t/{number}/{token}"): Rule(
        "public", 200, "the status page: the 192-bit link is the credential (revocable)"
    ),
    ("POST", "/t/{number}/{token}"): Rule("public", 403, "a reply on the status page; " + CSRF),
    ("GET", "/a/{number}/{action}/{value}/{token}"): Rule(
        "public", 200, "a one-click answer from an email: the HMAC-signed link is the credential"
    ),
    ("POST", "/a/{number}/{action}/{value}/{token}"): Rule(
        "public", 403, "the comment under a rating; " + CSRF
    ),
    ("GET", "/kb/{slug}"): Rule("public", 200, "knowledge-base articles are published"),
    ("POST", "/api/v1/messages"): Rule(
        "public", 201, "JSON intake for customers' systems: rate-limited per IP and per sender"
    ),
    ("POST", "/slack/events"): Rule(
        "public", 401, "Slack's webhook: verified by its HMAC signature (this call is unsigned)"
    ),
    ("POST", "/telegram/webhook"): Rule(
        "public", 401, "Telegram's webhook: verified by its secret token (this call has none)"
    ),
    # operations
    ("GET", "/healthz"): Rule("public", 200, "load balancer probe: status and version only"),
    ("GET", "/metrics"): Rule(
        "public",
        200,
        "Prometheus scrape: route patterns and counts, no personal data (restrict at the "
        "proxy if volumes are confidential)",
    ),
    ("GET", "/api/v1/openapi.json"): Rule("public", 200, "the API's description, no data"),
    # dashboard sign-in
    ("GET", "/login"): Rule("public", 200, "the sign-in form"),
    ("POST", "/login"): Rule("public", 403, "signing in; " + CSRF),
    ("POST", "/logout"): Rule("public", 403, "signing out; " + CSRF),
    ("GET", "/dashboard"): Rule("manager", 200),
    ("GET", "/dashboard.csv"): Rule("manager", 200),
    # agents
    ("GET", "/api/v1/me"): Rule("agent", 200),
    ("GET", "/api/v1/tickets"): Rule("agent", 200),
    ("GET", "/api/v1/tickets/{number}"): Rule("ticket", 200),
    ("PATCH", "/api/v1/tickets/{number}"): Rule("ticket", 200),
    ("POST", "/api/v1/tickets/{number}/replies"): Rule("ticket", 201),
    ("POST", "/api/v1/tickets/{number}/notes"): Rule("ticket", 201),
    ("POST", "/api/v1/tickets/{number}/claim"): Rule("ticket", 200, held=409),
    ("GET", "/api/v1/tickets/{number}/attachments/{id}"): Rule("ticket", 200),
    # supervisors: every ticket, reports, the outbox
    ("POST", "/api/v1/tickets/{number}/assign"): Rule("supervisor", 200),
    ("GET", "/api/v1/outbox"): Rule("supervisor", 200),
    ("GET", "/api/v1/reports"): Rule("supervisor", 200),
    ("GET", "/api/v1/reports/{kpi}"): Rule("supervisor", 200),
    # admins: the quarantine (raw customer data) and the audit log
    ("GET", "/api/v1/quarantine"): Rule("admin", 200),
    ("GET", "/api/v1/quarantine/{id}/raw"): Rule("admin", 200),
    ("POST", "/api/v1/quarantine/{id}/reprocess"): Rule("admin", 200),
    ("GET", "/api/v1/audit"): Rule("admin", 200),
}

# Which kinds of ticket each caller may see (supervisors and admins: all).
TICKET_KINDS = ("alpha", "beta", "no team", "beta, held by the alpha agent")
VISIBLE = {
    "agent_alpha": {"alpha", "no team", "beta, held by the alpha agent"},
    "agent_beta": {"beta", "no team", "beta, held by the alpha agent"},
}


def expected(rule: Rule, role: str, kind: str | None = None) -> int:
    if rule.access == "public":
        return rule.ok
    refused = OUTCOMES[rule.access].get(role)
    if refused is not None:
        return refused
    if rule.access == "ticket" and role in VISIBLE and kind not in VISIBLE[role]:
        return 404
    held_by_other = kind == "beta, held by the alpha agent" and role != "agent_alpha"
    if rule.held is not None and held_by_other:
        return rule.held
    return rule.ok


# -- the world the walk runs in --------------------------------------------------------------


@dataclass
class Caller:
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    server: Server
    callers: dict[str, Caller]
    agent_ids: dict[str, int]
    mails: int = 0

    async def ticket(self, kind: str = "no team", channel: Channel = Channel.API) -> Any:
        """A fresh ticket of this kind, with an attachment; returns the intake result."""
        helpdesk = self.server.helpdesk
        key = uuid.uuid4().hex
        result = await helpdesk.ingest(
            InboundMessage(
                channel=channel,
                external_id=key,
                sender=Sender(f"c-{key[:8]}@example.org", "Cleo", f"c-{key[:8]}@example.org"),
                subject=f"{kind} ticket",
                text="The parcel never came.",
                attachments=(Attachment("receipt.txt", "text/plain", b"paid 20 EUR"),),
                received_at=helpdesk.clock(),
                inbox=kind.split(",")[0] if kind in ("alpha", "beta") or "held" in kind else None,
            )
        )
        if "held" in kind:
            tickets = table_of(Ticket)
            await helpdesk.db.write(
                lambda c: c.execute(
                    update(tickets)
                    .where(tickets.c.number == result.ticket_number)
                    .values(assignee_id=self.agent_ids["agent_alpha"])
                )
            )
        return result

    async def attachment_id(self, number: int) -> int:
        files, messages, tickets = table_of(AttachmentRow), table_of(Message), table_of(Ticket)
        return int(
            await self.server.helpdesk.db.read(
                lambda c: c.execute(
                    select(files.c.id)
                    .join(messages, messages.c.id == files.c.message_id)
                    .join(tickets, tickets.c.id == messages.c.ticket_id)
                    .where(tickets.c.number == number)
                ).scalar_one()
            )
        )

    async def quarantined_mail(self) -> int:
        self.mails += 1
        raw = (
            f"From: Ann <ann@example.org>\r\nTo: support@example.com\r\nSubject: Hi\r\n"
            f"Message-ID: <q{self.mails}-{uuid.uuid4().hex}@example.org>\r\n\r\nHello\r\n"
        ).encode()
        return await self.server.helpdesk.quarantine("email", "database was read-only", raw)

    async def request(
        self, method: str, canonical: str, kind: str | None
    ) -> tuple[str, dict[str, Any]]:
        """A valid-looking request for the route: its URL and the client's keyword arguments."""
        base = self.server.base_url
        params: dict[str, str] = {}
        body: dict[str, Any] = {}
        if "{number}" in canonical:
            if canonical.startswith("/api/"):
                result = await self.ticket(kind or "no team")
            else:  # the signed links of the pages: an email ticket, as their links are mailed
                result = await self.ticket("no team", Channel.EMAIL)
            params["number"] = str(result.ticket_number)
            if canonical.startswith("/t/"):
                params["token"] = result.status_url.rsplit("/", 1)[1]
            if canonical.startswith("/a/"):
                url = ActionLinks(self.server.helpdesk.secret, base).url(
                    result.ticket_number, "csat", "5"
                )
                return url, {}
            if canonical.endswith("/attachments/{id}"):
                params["id"] = str(await self.attachment_id(result.ticket_number))
        if canonical.startswith("/api/v1/quarantine/{id}"):
            params["id"] = str(await self.quarantined_mail())
        if canonical == "/kb/{slug}":
            params["slug"] = "returns"
        if canonical == "/api/v1/reports/{kpi}":
            params["kpi"] = "flow"
        path = canonical.format(**params)
        if canonical == "/api/v1/messages":
            who = uuid.uuid4().hex[:8]
            body = {"email": f"{who}@example.org", "subject": "Hi", "body": "Where is it?"}
        elif method == "PATCH":
            body = {"priority": "high", "add_tags": ["walked"]}
        elif canonical.endswith(("/replies", "/notes")):
            body = {"text": "Looking into it."}
        elif canonical.endswith("/assign"):
            body = {"agent_id": self.agent_ids["agent_beta"], "reason": "walk"}
        elif canonical == "/slack/events":
            body = {"type": "event_callback", "event": {"type": "message", "text": "hi"}}
        elif canonical == "/telegram/webhook":
            body = {"update_id": 1, "message": {"message_id": 1, "text": "hi"}}
        return base + path, {"json": body} if body else {}


@pytest.fixture
async def world(server_factory: ServerFactory) -> AsyncIterator[World]:
    async with FakeSlack() as slack, FakeTelegram() as telegram:
        env = {
            "HELPLINE_SLACK_BOT_TOKEN": slack.token,
            "HELPLINE_SLACK_SIGNING_SECRET": "slack-signing-secret",
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
            "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "tg-secret-123",
        }
        server = await server_factory(
            env=env,
            slack={"enabled": True, "api_url": slack.base_url, "team_channel": "C0TEAM"},
            telegram={"enabled": True, "api_url": telegram.origin},
            inboxes=[{"name": "alpha", "team": "alpha"}, {"name": "beta", "team": "beta"}],
            # the walk submits more than a customer would
            intake={"rate_limit_per_minute": 10_000, "rate_limit_per_identity_per_minute": 100},
        )
        db, now = server.helpdesk.db, utc_now()
        await db.write(
            lambda c: kb.save_article(
                c, kb.Article("returns", "Returns", "Send it back within 30 days."), now
            )
        )
        callers = {"anonymous": Caller()}
        agent_ids: dict[str, int] = {}
        agents = table_of(Agent)
        for role, (level, team) in {
            "revoked": ("admin", None),
            "agent_alpha": ("agent", "alpha"),
            "agent_beta": ("agent", "beta"),
            "supervisor": ("supervisor", None),
            "admin": ("admin", None),
        }.items():
            token, agent_id = await server.token(level, name=role, team=team)
            assert agent_id is not None
            agent_ids[role] = agent_id
            email = await db.read(
                lambda c, a=agent_id: c.execute(
                    select(agents.c.email).where(agents.c.id == a)
                ).scalar_one()
            )
            await db.write(lambda c, e=email: accounts.set_password(c, e, "walk-the-routes"))
            stored = await db.read(
                lambda c, a=agent_id: c.execute(
                    select(agents.c.password_hash).where(agents.c.id == a)
                ).scalar_one()
            )
            if role == "revoked":
                # the token revoked, and the cookie signed before the password changed
                token_id = await db.read(lambda c, t=token: accounts.authenticate(c, t).token_id)
                await db.write(lambda c, t=token_id: accounts.revoke_token(c, t, now))
                await db.write(lambda c, e=email: accounts.set_password(c, e, "a-new-password"))
            cookie = session.sign(server.helpdesk.secret, agent_id, stored, now)
            callers[role] = Caller(
                {"Authorization": f"Bearer {token}", "Cookie": f"{session.COOKIE}={cookie}"}
            )
        yield World(server, callers, agent_ids)


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path pattern) of every route; HEAD is the GET handler aiohttp adds itself."""
    routes: set[tuple[str, str]] = set()
    gets = {r.resource.canonical: r.handler for r in app.router.routes() if r.method == "GET"}
    for route in app.router.routes():
        assert route.resource is not None
        canonical = route.resource.canonical
        if route.method == "HEAD":
            assert gets.get(canonical) is route.handler, f"HEAD {canonical} is not its GET"
            continue
        routes.add((route.method, canonical))
    return routes


def test_every_rule_of_the_table_is_explained() -> None:
    for (method, path), rule in POLICY.items():
        assert rule.access in OUTCOMES, (method, path)
        assert (rule.access == "public") == bool(rule.why), f"{method} {path}: why public?"


async def test_every_route_answers_every_caller_as_the_table_says(world: World) -> None:
    app = world.server.app
    routes = served_routes(app)
    assert routes - set(POLICY) == set(), "routes without a row in the policy table"
    assert set(POLICY) - routes == set(), "rows for routes the application does not serve"
    # the API registry (and so the OpenAPI document) declares the same role as the table
    for op in (op for registry in API for op in registry.operations):
        rule = POLICY[(op.method, op.path)]
        assert REGISTRY_ROLE.get(rule.access, "x") == op.role, f"{op.method} {op.path}"

    failures = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for (method, canonical), rule in sorted(POLICY.items()):
            kinds = TICKET_KINDS if rule.access == "ticket" else (None,)
            for role in ROLES:
                for kind in kinds:
                    url, kwargs = await world.request(method, canonical, kind)
                    headers = world.callers[role].headers
                    async with http.request(
                        method, url, headers=headers, allow_redirects=False, **kwargs
                    ) as response:
                        got = response.status
                        text = await response.text()
                    want = expected(rule, role, kind)
                    if got != want:
                        where = f" ({kind} ticket)" if kind else ""
                        failures.append(f"{method} {canonical} as {role}{where}: {got} != {want}")
                    elif got == 303:  # nobody is sent to sign in, nowhere else
                        assert response.headers["Location"].startswith("/login?next=")
                    elif canonical == "/api/v1/tickets" and role in VISIBLE and got == 200:
                        seen = {t["subject"].removesuffix(" ticket") for t in _tickets(text)}
                        assert seen <= VISIBLE[role], (role, seen)
    assert failures == [], "\n".join(failures)


def _tickets(text: str) -> list[dict[str, Any]]:
    import json

    return list(json.loads(text)["tickets"])


# -- CSRF ------------------------------------------------------------------------------------

FORM_MODULES = {"gateway.pages", "gateway.login", "gateway.dashboard"}
FORM_FIELDS: dict[str, dict[str, str]] = {
    "/": {"name": "Ann", "email": "ann@example.org", "subject": "Hi", "message": "Help"},
    "/t/{number}/{token}": {"message": "Any news?"},
    "/a/{number}/{action}/{value}/{token}": {"comment": "Quick and kind."},
    "/login": {"email": "nobody@support.test", "password": "wrong-password", "next": "/"},
    "/logout": {},
}
# what a genuine post (cookie and form token) gets: the proof that the refusals are CSRF's
ACCEPTED = {
    "/": 200,
    "/t/{number}/{token}": 303,
    "/a/{number}/{action}/{value}/{token}": 200,
    "/login": 401,
    "/logout": 303,
}


async def _form_token(base_url: str) -> tuple[str, dict[str, str]]:
    """A browser's CSRF cookie and the hidden inputs of a form rendered for it."""
    from tests.gateway.test_pages import Page

    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
        browser.get(base_url + "/") as response,
    ):
        page = Page(await response.text())
        cookie = response.cookies["hl_csrf"].value
    return cookie, {"form_id": page.value("form_id"), "csrf": page.value("csrf")}


async def test_every_form_post_needs_the_csrf_cookie_and_token(world: World) -> None:
    app = world.server.app
    forms = {
        r.resource.canonical
        for r in app.router.routes()
        if r.method == "POST" and r.resource is not None and r.handler.__module__ in FORM_MODULES
    }
    assert forms == set(FORM_FIELDS), "a new form route: add it to this walk"
    cookie, hidden = await _form_token(world.server.base_url)
    other_cookie, _ = await _form_token(world.server.base_url)
    attempts = {
        "no cookie, no token": ({}, {}),
        "a cookie, no token": ({"Cookie": f"hl_csrf={cookie}"}, {}),
        "a token, no cookie": ({}, hidden),
        "another browser's cookie": ({"Cookie": f"hl_csrf={other_cookie}"}, hidden),
        "a forged token": (
            {"Cookie": f"hl_csrf={cookie}"},
            {"form_id": hidden["form_id"], "csrf": "0" * 64},
        ),
    }
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for canonical in sorted(forms):
            # a fresh form for the genuine post: its id is also the submission's idempotency key
            fresh_cookie, fresh = await _form_token(world.server.base_url)
            genuine = ({"Cookie": f"hl_csrf={fresh_cookie}"}, fresh)
            for name, (headers, tokens) in [*attempts.items(), ("genuine", genuine)]:
                url, _ = await world.request("POST", canonical, None)
                data = aiohttp.FormData({**FORM_FIELDS[canonical], **tokens})
                async with http.post(
                    url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    want = ACCEPTED[canonical] if name == "genuine" else 403
                    assert response.status == want, f"POST {canonical} with {name}"
