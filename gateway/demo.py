"""`helpline demo`: a realistic, reproducible data set so a newcomer sees a populated system.

Everything goes through the real use cases (intake, claim, reply, status changes) with a clock
walked through the last 30 days, so histories, outbox rows and timings look like real traffic.
Message ids are derived from the seed: running the demo twice adds nothing the second time.
"""

from __future__ import annotations

import contextlib
import functools
import random
import zlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bots.customer import CustomerBot
from core import accounts, kb
from core.config import Settings
from core.desk import Actor
from core.errors import Conflict
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Sender
from core.persistence.database import open_database
from core.persistence.models import Agent, table_of
from core.tickets import Priority, TicketStatus
from gateway.app import load_secret
from gateway.hub import KbCache

FIRST = [
    "Anna",
    "Ben",
    "Chen",
    "Dara",
    "Eli",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Jun",
    "Kemal",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tomás",
    "Wei",
    "Yuki",
]
LAST = [
    "Novak",
    "Schmidt",
    "Li",
    "Okafor",
    "Rossi",
    "Kowalski",
    "Haddad",
    "Tanaka",
    "Silva",
    "Jensen",
    "Dubois",
    "Ivanova",
    "García",
    "Müller",
    "Wang",
    "Nakamura",
]
PROBLEMS = [
    ("Cannot log in", "I reset my password twice but the login page still says it is wrong."),
    ("Invoice shows the wrong VAT", "Our invoice for last month has 19% VAT instead of 7%."),
    ("App crashes on start", "Since the last update the app closes right after the splash screen."),
    ("Refund request", "I was charged twice for my order, please refund one of the payments."),
    ("How do I export my data?", "I need a CSV export of all my projects for an audit."),
    ("Two-factor codes not arriving", "The SMS with the login code never arrives on my phone."),
    ("Delivery is late", "My parcel was due on Monday and tracking has not moved since."),
    ("Change billing address", "We moved offices; please update the billing address."),
    ("API returns 500", "POST /v2/orders fails with 500 for about 10% of our requests."),
    ("Cancel my subscription", "Please cancel my subscription at the end of this month."),
    ("无法登录", "我重置了两次密码，但登录页面仍然提示密码错误。"),
    ("发票抬头错误", "上个月的发票抬头写错了公司名称，请帮忙重新开具。"),
]
REPLIES = [
    "Thanks for reporting this. Could you tell us which browser and version you use?",
    "I have corrected this on our side; you should see the change within the hour.",
    "We have issued the refund; it takes 3-5 business days to appear on your statement.",
    "This is a known issue fixed in version 4.2.1, which rolls out today.",
]
KB_ARTICLES = [
    kb.Article(
        "reset-password",
        "Resetting your password",
        "Open the login page, choose 'Forgot password' and follow the link we email you. "
        "The link is valid for 30 minutes.",
        "password, login, reset, sign in",
    ),
    kb.Article(
        "export-data",
        "Exporting your data as CSV",
        "Go to Settings > Data > Export and choose CSV. Large exports arrive by email.",
        "export, csv, download, data",
    ),
    kb.Article(
        "two-factor",
        "Two-factor authentication codes",
        "If SMS codes do not arrive, switch to an authenticator app under Security.",
        "2fa, sms, code, two-factor, authenticator",
    ),
    kb.Article(
        "refunds",
        "Refunds and double charges",
        "Duplicate charges are refunded automatically within 3-5 business days.",
        "refund, charge, payment, money back",
    ),
    kb.Article(
        "cancel-subscription",
        "Cancelling a subscription",
        "Subscriptions can be cancelled any time under Billing; they end with the period.",
        "cancel, subscription, billing",
    ),
    kb.Article(
        "invoice-vat",
        "VAT on invoices",
        "The VAT rate follows your billing country. Update it under Billing > Tax details.",
        "invoice, vat, tax, billing",
    ),
    kb.Article(
        "app-crash",
        "The app closes on start",
        "Update to the latest version, then clear the app cache under Settings > Storage.",
        "crash, app, start, update",
    ),
    kb.Article(
        "delivery-times",
        "Delivery times",
        "Standard delivery takes 2-4 business days; tracking updates once a day.",
        "delivery, parcel, shipping, tracking, late",
    ),
    kb.Article(
        "api-errors",
        "API error codes",
        "A 500 from the API is retried safely with the "
        "same Idempotency-Key. Persistent errors: send us the request id.",
        "api, 500, error, idempotency",
    ),
    kb.Article(
        "reset-password-zh",
        "如何重置密码",
        "在登录页面点击“忘记密码”，按照邮件中的链接操作。链接30分钟内有效。",
        "密码, 登录, 重置",
        "zh",
    ),
]
AGENTS = [
    ("Alice Meyer", "alice@support.example", "agent", "billing", ("billing", "refunds")),
    ("Bogdan Petrov", "bogdan@support.example", "agent", "billing", ("billing",)),
    ("Carla Souza", "carla@support.example", "agent", "tech", ("api", "mobile")),
    ("Deepak Rao", "deepak@support.example", "agent", "tech", ("login", "api")),
    ("Emma Lind", "emma@support.example", "agent", "tech", ("mobile",)),
    ("Sam Supervisor", "sam@support.example", "supervisor", "tech", ()),
    ("Ada Admin", "ada@support.example", "admin", None, ()),
]
CHANNELS = (
    [Channel.EMAIL] * 5
    + [Channel.WEB] * 3
    + [Channel.API]
    + [Channel.TELEGRAM] * 2
    + [Channel.SLACK]
)


class WalkingClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _agents(db_conn: object, now: datetime) -> None:
    for name, email, role, team, skills in AGENTS:
        with contextlib.suppress(Conflict):  # seeded before
            accounts.add_agent(
                db_conn,  # type: ignore[arg-type]
                name=name,
                email=email,
                role=accounts.Role(role),
                now=now,
                team=team,
                skills=skills,
            )


def _sender(rng: random.Random, channel: Channel, customers: list[tuple[str, str]]) -> Sender:
    name, email = rng.choice(customers)
    if channel is Channel.TELEGRAM:
        return Sender(address=str(100000 + zlib.crc32(email.encode()) % 900000), name=name)
    if channel is Channel.SLACK:
        return Sender(address="U" + email.split("@")[0].upper()[:8], name=name)
    return Sender(address=email, name=name, email=email)


async def seed(settings: Settings, *, tickets: int = 300, seed: int = 7) -> str:
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(microsecond=0)
    clock = WalkingClock(end - timedelta(days=30))
    db = open_database(settings.database.url, durable=False)
    helpdesk = Helpdesk(
        db,
        settings,
        load_secret(settings),
        clock=clock,
        reactions=[CustomerBot(settings.service.name)],
    )
    try:
        db.run_sync(lambda c: _agents(c, clock()))
        for article in KB_ARTICLES:
            db.run_sync(functools.partial(kb.save_article, article=article, now=clock()))
        index = KbCache()  # new tickets are searched in it: KB suggestions and gaps
        await index.refresh(helpdesk)
        helpdesk.kb = index
        agent_rows = db.run_sync(
            lambda c: c.execute(
                select(table_of(Agent)).where(table_of(Agent).c.role == "agent")
            ).all()
        )
        actors = [Actor(a.id, a.name, a.role, a.team_id) for a in agent_rows]
        customers = [
            (f"{rng.choice(FIRST)} {rng.choice(LAST)}", f"customer{i}@example.org")
            for i in range(max(10, tickets // 3))
        ]
        step = timedelta(days=30) / max(tickets, 1)
        opened = 0
        for i in range(tickets):
            clock.now += step
            rng = random.Random(f"{seed}:{i}")  # per ticket, so a re-run sees the same tickets
            channel = rng.choice(CHANNELS)
            subject, body = rng.choice(PROBLEMS)
            result = await helpdesk.ingest(
                InboundMessage(
                    channel=channel,
                    external_id=f"demo:{seed}:{i}",
                    sender=_sender(rng, channel, customers),
                    subject=subject,
                    text=body,
                    received_at=clock(),
                    language="zh" if not subject.isascii() else None,
                )
            )
            if not result.created:
                continue
            assert result.ticket_number is not None  # a created ticket has its number
            opened += 1
            await _work(helpdesk, rng, clock, result.ticket_number, actors, end)
        return (
            f"demo data: {opened} new tickets, {len(actors)} agents, {len(KB_ARTICLES)} KB articles"
        )
    finally:
        await db.close()


async def _work(
    helpdesk: Helpdesk,
    rng: random.Random,
    clock: WalkingClock,
    number: int,
    actors: list[Actor],
    end: datetime,
) -> None:
    """Move a ticket along a plausible path; older tickets are further along."""
    fate = rng.random()
    if fate < 0.15:
        return  # still new
    saved = clock.now
    agent = rng.choice(actors)
    clock.now = min(end, saved + timedelta(minutes=rng.randint(5, 600)))
    if rng.random() < 0.3:
        await helpdesk.update_fields(
            number,
            agent,
            priority=rng.choice(list(Priority)),
            add_tags=[rng.choice(["billing", "bug", "vip", "howto"])],
        )
    await helpdesk.claim(number, agent)
    await helpdesk.reply(number, rng.choice(REPLIES), agent)
    if fate < 0.35:
        await helpdesk.set_status(number, TicketStatus.PENDING, agent, "waiting for customer")
    elif fate >= 0.45:  # between: answered once, still open
        clock.now = min(end, clock.now + timedelta(hours=rng.randint(1, 72)))
        await helpdesk.set_status(number, TicketStatus.RESOLVED, agent, "solved")
        if fate > 0.8:
            clock.now = min(end, clock.now + timedelta(days=rng.randint(1, 5)))
            await helpdesk.set_status(number, TicketStatus.CLOSED, agent, "closed after resolve")
    clock.now = saved
