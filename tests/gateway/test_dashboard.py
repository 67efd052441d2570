"""The dashboard over real HTTP: sign-in (passwords, CSRF, sessions, roles, rate limit), the
filters' validation, the live SLA queue and the agents' load, the CSV export, and the
`helpline agent password` command."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, update
from yarl import URL

from core import accounts
from core.dashboard_queries import FIRST_RESPONSE, RESOLUTION, agent_load, live_queue
from core.errors import InvalidInput, NotFound
from core.messages import Channel, InboundMessage, Sender
from core.persistence.database import open_database
from core.persistence.models import Agent, Ticket, table_of
from gateway import session
from gateway.login import safe_next
from tests.conftest import Server, ServerFactory
from tests.gateway.test_cli import config  # noqa: F401
from tests.gateway.test_pages import Browser, BrowserFactory, Reply, browsers  # noqa: F401

PASSWORD = "correct horse battery"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
tickets = table_of(Ticket)
agents = table_of(Agent)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def add_agent(
    server: Server,
    role: str,
    *,
    name: str = "",
    team: str | None = None,
    password: str | None = PASSWORD,
) -> tuple[int, str]:
    email = f"{role}{len(name)}-{os.urandom(3).hex()}@support.test"

    def unit(conn: Connection) -> int:
        agent_id = accounts.add_agent(
            conn,
            name=name or role.title(),
            email=email,
            role=accounts.Role(role),
            now=T0,
            team=team,
        )
        if password:
            accounts.set_password(conn, email, password)
        return agent_id

    return await server.helpdesk.db.write(unit), email


async def sign_in(
    browser: Browser, email: str, password: str = PASSWORD, next_path: str = "/dashboard"
) -> Reply:
    form = (await browser.get(f"/login?next={next_path}")).page
    return await browser.post("/login", form, email=email, password=password, next=next_path)


async def status_of(browser: Browser, path: str) -> tuple[int, str | None]:
    async with browser.session.get(browser._url(path), allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location")


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def site(server_factory: ServerFactory, clock: Clock) -> Server:
    return await server_factory(clock=clock)


@pytest.fixture
async def manager(site: Server, browsers: BrowserFactory) -> Browser:  # noqa: F811
    _, email = await add_agent(site, "supervisor", name="Sam Supervisor")
    browser = await browsers(site)
    reply = await sign_in(browser, email)
    assert reply.status == 303 and reply.location == "/dashboard", reply.page.html
    return browser


# -- passwords (core) ------------------------------------------------------------------------


async def test_passwords_are_salted_scrypt_hashes_with_a_minimum_length(site: Server) -> None:
    _, email = await add_agent(site, "admin", password=None)
    db = site.helpdesk.db
    with pytest.raises(InvalidInput) as short:
        await db.write(lambda c: accounts.set_password(c, email, "too short"))
    assert short.value.field == "password" and "10 characters" in str(short.value)
    with pytest.raises(NotFound):
        await db.write(lambda c: accounts.set_password(c, "nobody@x.test", PASSWORD))
    assert await db.read(lambda c: accounts.verify_password(c, email, PASSWORD)) is None

    await db.write(lambda c: accounts.set_password(c, email, PASSWORD))
    row = await db.read(lambda c: accounts.verify_password(c, email.upper(), PASSWORD))
    assert row is not None and row.email == email
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[\w-]{22}\$[\w-]{43}", row.password_hash)
    assert await db.read(lambda c: accounts.verify_password(c, email, PASSWORD + "!")) is None
    assert await db.read(lambda c: accounts.verify_password(c, "ghost@x.test", PASSWORD)) is None
    # the same password again: a new salt, so a new hash (and a new session fingerprint)
    await db.write(lambda c: accounts.set_password(c, email, PASSWORD))
    again = await db.read(lambda c: accounts.agent_by_email(c, email))
    assert again.password_hash != row.password_hash


def test_a_malformed_stored_hash_never_matches() -> None:
    assert not accounts.password_matches("scrypt$1$2", PASSWORD)
    assert not accounts.password_matches("md5$x$y$z$a$b", PASSWORD)
    assert not accounts.password_matches(None, PASSWORD)
    good = accounts.hash_password(PASSWORD)
    assert accounts.password_matches(good, PASSWORD)
    assert not accounts.password_matches(good, "x" * 2000)  # oversized: refused, not hashed


# -- sign-in ---------------------------------------------------------------------------------


async def test_not_signed_in_is_sent_to_the_login_page(
    site: Server,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    browser = await browsers(site)
    assert await status_of(browser, "/dashboard") == (303, "/login?next=/dashboard")
    status, location = await status_of(browser, "/dashboard?period=7")
    assert status == 303 and location == "/login?next=/dashboard%3Fperiod%3D7"
    assert await status_of(browser, "/dashboard.csv") == (303, "/login?next=/dashboard.csv")
    page = await browser.get("/login?next=/dashboard")
    assert page.status == 200 and page.page.value("next") == "/dashboard"
    assert page.page.controls["password"]["type"] == "password"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    site: Server,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    _, email = await add_agent(site, "supervisor")
    browser = await browsers(site)
    wrong = await sign_in(browser, email, "not the password")
    unknown = await sign_in(browser, "ghost@support.test")
    for reply in (wrong, unknown):
        assert reply.status == 401
        assert reply.page.text("login-error") == "Wrong email or password."
        assert not any("hl_session" in c for c in reply.headers.getall("Set-Cookie", []))
    assert wrong.page.controls["email"]["value"] == email
    assert await status_of(browser, "/dashboard") == (303, "/login?next=/dashboard")


async def test_login_without_the_csrf_token_is_refused(
    site: Server,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    _, email = await add_agent(site, "supervisor")
    browser = await browsers(site)
    await browser.get("/login")  # the CSRF cookie, but no form token posted
    reply = await browser.post("/login", None, email=email, password=PASSWORD)
    assert reply.status == 403
    forged = (await browser.get("/login")).page
    reply = await browser.post(
        "/login",
        None,
        form_id=forged.value("form_id"),
        csrf="0" * 64,
        email=email,
        password=PASSWORD,
    )
    assert reply.status == 403
    assert await status_of(browser, "/dashboard") == (303, "/login?next=/dashboard")


async def test_an_agent_signs_in_but_gets_403_a_supervisor_gets_the_dashboard(
    site: Server,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    _, agent_email = await add_agent(site, "agent", name="Alice Agent")
    agent = await browsers(site)
    assert (await sign_in(agent, agent_email)).status == 303
    refused = await agent.get("/dashboard")
    assert refused.status == 403 and "Supervisors only" in refused.page.title

    for role in ("supervisor", "admin"):
        _, email = await add_agent(site, role, name=f"The {role}")
        browser = await browsers(site)
        reply = await sign_in(browser, email)
        assert reply.status == 303 and reply.location == "/dashboard"
        cookie = reply.headers["Set-Cookie"]
        assert cookie.startswith("hl_session=")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # public_url is http in the tests
        page = await browser.get("/dashboard")
        assert page.status == 200, page.page.html
        assert page.page.text("signed-in") == f"The {role} ({role})"
        assert page.headers["Cache-Control"] == "no-store"
        assert '<meta http-equiv="refresh" content="60">' in page.page.html
        assert "<script" not in page.page.html


async def test_logout_needs_csrf_and_ends_the_session(manager: Browser) -> None:
    page = (await manager.get("/dashboard")).page
    assert (await manager.post("/logout", None)).status == 403
    assert (await manager.get("/dashboard")).status == 200  # still signed in
    reply = await manager.post("/logout", page)
    assert reply.status == 303 and reply.location == "/login"
    assert await status_of(manager, "/dashboard") == (303, "/login?next=/dashboard")


async def test_next_must_be_a_local_path(
    site: Server,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    for evil in ("https://evil.test/", "//evil.test/x", "/\\evil.test", "evil", "", "/\nx"):
        assert safe_next(evil) == "/dashboard", evil
    assert safe_next("/dashboard?period=7") == "/dashboard?period=7"
    _, email = await add_agent(site, "supervisor")
    browser = await browsers(site)
    reply = await sign_in(browser, email, next_path="//evil.test/")
    assert reply.location == "/dashboard"
    reply = await sign_in(browser, email, next_path="/dashboard?team=tech")
    assert reply.location == "/dashboard?team=tech"


async def test_a_tampered_cookie_is_not_a_session(site: Server, manager: Browser) -> None:
    jar = manager.session.cookie_jar
    (value,) = [c.value for c in jar if c.key == session.COOKIE]
    agent_id, expires, mac = value.split(".")
    other, _ = await add_agent(site, "admin")
    forgeries = [
        f"{other}.{expires}.{mac}",  # someone else's id under my signature
        f"{agent_id}.{int(expires) + 3600}.{mac}",  # a longer life
        f"{agent_id}.{expires}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",
        f"{agent_id}.{expires}",
        "garbage",
        f"{agent_id}.{expires}.{'é' * 64}",
    ]
    for forged in forgeries:
        jar.update_cookies({session.COOKIE: forged}, response_url=_url(manager))
        assert await status_of(manager, "/dashboard") == (303, "/login?next=/dashboard"), forged
    jar.update_cookies({session.COOKIE: value}, response_url=_url(manager))
    assert (await manager.get("/dashboard")).status == 200


def _url(browser: Browser) -> URL:
    return URL(browser.base_url)


async def test_sessions_expire_after_12_hours_and_on_a_password_change(
    site: Server,
    clock: Clock,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    _, email = await add_agent(site, "supervisor")
    browser = await browsers(site)
    await sign_in(browser, email)
    clock.now = T0 + timedelta(hours=11, minutes=59)
    assert (await browser.get("/dashboard")).status == 200
    clock.now = T0 + timedelta(hours=12)
    assert await status_of(browser, "/dashboard") == (303, "/login?next=/dashboard")

    clock.now = T0
    await sign_in(browser, email)
    assert (await browser.get("/dashboard")).status == 200
    await site.helpdesk.db.write(lambda c: accounts.set_password(c, email, PASSWORD))
    assert await status_of(browser, "/dashboard") == (303, "/login?next=/dashboard")
    await site.helpdesk.db.write(
        lambda c: c.execute(update(agents).where(agents.c.email == email).values(active=False))
    )
    assert (await sign_in(browser, email)).status == 401


async def test_login_attempts_are_rate_limited_per_ip(
    site: Server,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    _, email = await add_agent(site, "supervisor")
    browser = await browsers(site)
    form = (await browser.get("/login")).page
    for _ in range(10):
        reply = await browser.post("/login", form, email=email, password="wrong password")
        assert reply.status == 401
    reply = await browser.post("/login", form, email=email, password=PASSWORD)
    assert reply.status == 429 and int(reply.headers["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in reply.page.title


# -- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("period=5", "period", "period must be one of 7, 30, 90"),
        ("period=abc", "period", "period must be one of"),
        ("from=2026-03-01", "to", "to is needed"),
        ("to=2026-03-01", "from", "from is needed"),
        ("from=2026-13-01&to=2026-03-01", "from", "from must be a date"),
        ("from=2026-03-05&to=2026-03-01", "from", "from must not be after to"),
        ("from=2024-01-01&to=2026-03-01", "from", "longer than 366 days"),
        ("team=nosuch", "team", "unknown team 'nosuch'"),
        ("agent=abc", "agent", "agent must be an agent id"),
        ("agent=999999", "agent", "unknown agent 999999"),
        ("channel=fax", "channel", "unknown channel 'fax'"),
        ("priority=meh", "priority", "unknown priority 'meh'"),
    ],
)
async def test_bad_filters_are_400_naming_the_parameter(
    manager: Browser, query: str, field: str, words: str
) -> None:
    reply = await manager.get(f"/dashboard?{query}")
    assert reply.status == 400
    assert words in reply.page.text("filter-error")
    assert reply.page.attrs["filter-error"]["data-field"] == field
    assert "kpi-flow" not in reply.page.attrs  # no numbers for a filter that was not applied


async def test_good_filters_are_applied(site: Server, manager: Browser) -> None:
    page = await manager.get("/dashboard?from=2026-02-01&to=2026-02-28&channel=email")
    assert page.status == 200
    assert page.page.text("period") == "2026-02-01 00:00 – 2026-03-01 00:00 UTC"
    assert page.page.attrs["csv-link"]["href"] == (
        "/dashboard.csv?from=2026-02-01&to=2026-02-28&channel=email"
    )
    page = await manager.get("/dashboard?period=7")
    assert page.page.text("period") == "2026-02-23 09:00 – 2026-03-02 09:00 UTC"
    assert len(re.findall(r'<svg [^>]*role="img"', page.page.html)) == 4


# -- the live queue and the agents' load -----------------------------------------------------


async def _ticket(server: Server, n: int, **state: object) -> int:
    """Ticket ``n`` with exactly the SLA state given (the intake's own due times cleared)."""
    result = await server.helpdesk.ingest(
        InboundMessage(
            channel=Channel.WEB,
            external_id=f"t{n}",
            sender=Sender(address=f"c{n}@example.org", name=f"C{n}", email=f"c{n}@example.org"),
            subject=f"Problem {n}",
            text="Help",
            received_at=T0 - timedelta(hours=3),
        )
    )
    number = result.ticket_number
    values = {"first_response_due": None, "resolution_due": None, **state}
    await server.helpdesk.db.write(
        lambda c: c.execute(update(tickets).where(tickets.c.number == number).values(**values))
    )
    return number


async def test_live_queue_and_agent_load(
    server_factory: ServerFactory,
    db_url: str,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    clock = Clock()
    site = await server_factory(db_url, clock=clock)
    alice, _ = await add_agent(site, "agent", name="Alice", team="billing")
    bob, _ = await add_agent(site, "agent", name="Bob", password=None)
    await add_agent(site, "agent", name="Gone", password=None)
    await site.helpdesk.db.write(
        lambda c: c.execute(update(agents).where(agents.c.name == "Gone").values(active=False))
    )
    await site.helpdesk.db.write(
        lambda c: c.execute(
            update(agents).where(agents.c.id == bob).values(away=True, max_open_tickets=4)
        )
    )
    m = timedelta(minutes=1)
    breached = await _ticket(
        site, 1, first_response_due=T0 - 30 * m, resolution_due=T0 + 300 * m, assignee_id=bob
    )
    resolution = await _ticket(
        site,
        2,
        first_response_at=T0 - 60 * m,
        first_response_due=T0 - 90 * m,
        resolution_due=T0 + 90 * m,
        status="open",
        assignee_id=alice,
    )
    await _ticket(site, 3, first_response_due=T0 + 180 * m)  # later than 2 h: not yet
    await _ticket(  # resolved: its clocks stopped
        site,
        4,
        first_response_due=T0 - 60 * m,
        status="resolved",
        resolved_at=T0 - 5 * m,
        assignee_id=alice,
    )
    soon = await _ticket(
        site,
        5,
        first_response_due=T0 + 10 * m + timedelta(seconds=30),
        assignee_id=alice,
        paused_since=None,
    )
    await _ticket(
        site,
        6,
        status="pending",
        resolution_due=T0 + 119 * m,
        first_response_at=T0 - 100 * m,
        paused_since=T0 - 10 * m,
        assignee_id=bob,
    )
    await _ticket(site, 7)  # no due times at all

    queue = await site.helpdesk.db.read(lambda c: live_queue(c, T0))
    assert [(q.number, q.target, q.minutes) for q in queue] == [
        (breached, FIRST_RESPONSE, -30),
        (soon, FIRST_RESPONSE, 10),
        (resolution, RESOLUTION, 90),
        (6, RESOLUTION, 119),
    ]
    assert queue[0].breached and queue[0].assignee == "Bob" and queue[0].subject == "Problem 1"
    assert queue[2].team is None and queue[2].assignee == "Alice" and queue[3].paused
    assert [
        q.number for q in await site.helpdesk.db.read(lambda c: live_queue(c, T0, limit=2))
    ] == [breached, soon]

    load = await site.helpdesk.db.read(lambda c: agent_load(c, T0))
    by_name = {a.name: a for a in load}
    assert "Gone" not in by_name
    assert (by_name["Alice"].open_tickets, by_name["Alice"].team, by_name["Alice"].away) == (
        2,
        "billing",
        False,
    )
    assert (by_name["Bob"].open_tickets, by_name["Bob"].share, by_name["Bob"].away) == (
        2,
        0.5,
        True,
    )
    assert [a.name for a in load] == ["Alice", "Bob"]  # the most loaded first, then by name

    _, email = await add_agent(site, "supervisor", name="Sam")
    browser = await browsers(site)
    await sign_in(browser, email)
    page = await browser.get("/dashboard")
    assert page.status == 200
    rows = re.findall(r'<tr class="queue-row" data-number="(\d+)">(.*?)</tr>', page.page.html, re.S)
    assert [int(n) for n, _ in rows] == [breached, soon, resolution, 6]
    text = [" ".join(re.sub(r"<[^>]+>", " ", html).split()) for _, html in rows]
    assert (
        text[0]
        == f"#{breached} Problem 1 normal – Bob first response 2026-03-02 08:30 breached 30 min ago"
    )
    assert text[1].endswith("due in 10 min") and "Alice" in text[1]
    assert text[3].endswith("resolution (paused) 2026-03-02 10:59 due in 119 min")
    loads = re.findall(r'<tr class="load-row" data-agent="(\d+)">(.*?)</tr>', page.page.html, re.S)
    bob_row = " ".join(re.sub(r"<[^>]+>", " ", dict(loads)[str(bob)]).split())
    assert bob_row == "Bob – 2 4 50.0% away"


# -- CSV -------------------------------------------------------------------------------------


async def test_csv_export_reuses_the_reports_format(manager: Browser) -> None:
    async with manager.session.get(f"{manager.base_url}/dashboard.csv?period=7") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/csv"
        assert resp.headers["Content-Disposition"] == (
            'attachment; filename="helpline-dashboard-20260223-20260302.csv"'
        )
        lines = (await resp.text()).splitlines()
    assert lines[0] == "kpi,key,metric,value"
    assert "flow,,created,0" in lines and "csat,,responses,0" in lines
    async with manager.session.get(f"{manager.base_url}/dashboard.csv?period=8") as resp:
        assert resp.status == 400


# -- the command line ------------------------------------------------------------------------


def test_cli_sets_a_password_from_stdin(config: Path) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "HELPLINE_DATABASE_URL"}

    def helpline(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    added = helpline(
        "agent", "add", "--name", "Sam", "--email", "sam@x.test", "--role", "supervisor"
    )
    assert added.returncode == 0, added.stderr
    short = helpline("agent", "password", "--email", "sam@x.test", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    unknown = helpline("agent", "password", "--email", "ghost@x.test", stdin=PASSWORD + "\n")
    assert unknown.returncode == 2 and "no agent with email ghost@x.test" in unknown.stderr
    done = helpline("agent", "password", "--email", "sam@x.test", stdin=PASSWORD + "\n")
    assert done.returncode == 0 and "password set for sam@x.test" in done.stdout

    url = re.search(r'url = "(sqlite:[^"]*)"', config.read_text())
    assert url is not None
    db = open_database(url.group(1), durable=False)
    try:
        row = db.run_sync(lambda c: accounts.verify_password(c, "sam@x.test", PASSWORD))
    finally:
        asyncio.run(db.close())
    assert row is not None and row.name == "Sam"
