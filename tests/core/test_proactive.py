"""Proactive rules: parsing errors naming the rule and field, pure plans at their boundaries,
and the unit of work on both databases (each action once; tasks never reach the customer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, update

from bots.agents import AgentBot
from bots.pings import PingBot
from core import accounts
from core.desk import Actor
from core.errors import ConfigError
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Sender, ThreadHints, ThreadRef
from core.persistence.models import Customer, Message, OutboxRow, Ticket, TicketEvent
from core.proactive import run_proactive
from core.proactive_rules import (
    REMIND,
    RESOLVE,
    AttributeDate,
    CustomerSnapshot,
    NoContact,
    PendingReminder,
    PendingTicket,
    attribute_date,
    parse_proactive,
    plan_attribute_date,
    plan_no_contact,
    plan_pending,
)
from core.tickets import TicketStatus
from tests.core.conftest import StepClock

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKYO = timezone(timedelta(hours=9))
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)

EXAMPLE = {
    "proactive": [
        {
            "name": "pending-reminder",
            "kind": "pending_reminder",
            "after_days": 3,
            "close_after_days": 4,
        },
        {
            "name": "vip-check-in",
            "kind": "no_contact",
            "after_days": 30,
            "customer": {"tier": "vip"},
            "owner_attribute": "account_owner",
        },
        {
            "name": "renewal",
            "kind": "attribute_date",
            "attribute": "contract_renewal",
            "days_before": 30,
            "owner_attribute": "account_owner",
        },
    ]
}


# ---- parsing -------------------------------------------------------------------------------


def test_the_documented_example_parses() -> None:
    reminder, vip, renewal = parse_proactive(EXAMPLE)
    assert reminder == PendingReminder("pending-reminder", 3, 4)
    assert "within $days days" in reminder.text  # the default mentions the closing
    assert PendingReminder("r", 3).text.count("$days") == 0
    assert isinstance(vip, NoContact) and vip.after_days == 30
    assert [(t.name, t.op, t.value) for t in vip.customer] == [("tier", "equals", "vip")]
    assert isinstance(renewal, AttributeDate) and renewal.days_before == 30
    assert renewal.customer == () and renewal.owner_attribute == "account_owner"
    assert parse_proactive({"service": {}}) == ()  # the main config file without rules


def one(**item: Any) -> dict[str, Any]:
    return {"proactive": [EXAMPLE["proactive"][0], {"name": "r", **item}]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"proactive": {}}, "proactive: expected an array of tables ([[proactive]])"),
        ({"proactive": ["x"]}, "proactive[0]: expected a table"),
        ({"proactive": [{"kind": "no_contact"}]}, "proactive[0]: name: missing or empty"),
        (one(kind="later"), "proactive[1] 'r': kind: expected one of pending_reminder, "),
        (
            {"proactive": [EXAMPLE["proactive"][0], EXAMPLE["proactive"][0]]},
            "proactive[1] 'pending-reminder': name: already used by proactive[0]",
        ),
        (
            one(kind="attribute_date", attribute="renewal", days_before=0),
            "proactive[1] 'r': days_before: must be at least 1",
        ),
        (one(kind="attribute_date", days_before=3), "proactive[1] 'r': attribute: missing"),
        (one(kind="pending_reminder"), "proactive[1] 'r': after_days: missing"),
        (
            one(kind="pending_reminder", after_days="3"),
            "proactive[1] 'r': after_days: expected a whole number of days, got '3'",
        ),
        (
            one(kind="pending_reminder", after_days=True),
            "proactive[1] 'r': after_days: expected a whole number of days",
        ),
        (
            one(kind="pending_reminder", after_days=3, close_after_days=-1),
            "proactive[1] 'r': close_after_days: must be at least 0",
        ),
        (
            one(kind="pending_reminder", after_days=99999),
            "proactive[1] 'r': after_days: must be at most 3650",
        ),
        (
            one(kind="pending_reminder", after_days=3, customer={"tier": "vip"}),
            "proactive[1] 'r': unknown key 'customer'",
        ),
        (
            one(kind="no_contact", after_days=3, customer={"tier": "vip"}, colour="red"),
            "proactive[1] 'r': unknown key 'colour'",
        ),
        (one(kind="no_contact", after_days=3), "proactive[1] 'r': customer: missing"),
        (
            one(kind="no_contact", after_days=3, customer={}),
            "proactive[1] 'r': customer: expected a table of attributes",
        ),
        (
            one(kind="no_contact", after_days=3, customer={"tier": {"like": "v"}}),
            "proactive[1] 'r': customer.tier: unknown operator 'like'",
        ),
        (
            one(kind="no_contact", after_days=3, customer={"tier": []}),
            "proactive[1] 'r': customer.tier: in takes a non-empty list",
        ),
        (
            one(kind="no_contact", after_days=3, customer={"t": "v"}, owner_attribute=""),
            "proactive[1] 'r': owner_attribute: expected a non-empty string",
        ),
        (
            one(kind="pending_reminder", after_days=3, message="Hi $customer"),
            "proactive[1] 'r': message: unknown placeholder $customer",
        ),
        (
            one(kind="pending_reminder", after_days=3, message="costs 5$"),
            "proactive[1] 'r': message: stray $ at position 7",
        ),
        (
            one(kind="attribute_date", attribute="a", days_before=3, subject="$number"),
            "proactive[1] 'r': subject: unknown placeholder $number",
        ),
        (
            one(kind="pending_reminder", after_days=3, description=1),
            "proactive[1] 'r': description: expected a string",
        ),
    ],
)
def test_a_bad_rule_names_the_rule_and_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_proactive(doc)
    assert str(err.value).startswith(message), str(err.value)


# ---- pure plans ----------------------------------------------------------------------------

REMINDER = PendingReminder("p", after_days=3, close_after_days=4)


@pytest.mark.parametrize(
    ("rule", "ticket", "now", "expected"),
    [
        (REMINDER, PendingTicket(1, T0), T0 + 3 * DAY - TICK, None),
        (REMINDER, PendingTicket(1, T0), T0 + 3 * DAY, REMIND),  # exactly N days
        (REMINDER, PendingTicket(1, T0), (T0 + 3 * DAY).astimezone(TOKYO), REMIND),
        (REMINDER, PendingTicket(1, T0), (T0 + 3 * DAY - TICK).astimezone(TOKYO), None),
        (REMINDER, PendingTicket(1, T0, T0 + 5 * DAY), T0 + 9 * DAY - TICK, None),
        (REMINDER, PendingTicket(1, T0, T0 + 5 * DAY), T0 + 9 * DAY, RESOLVE),  # M after reminder
        (PendingReminder("p", 3), PendingTicket(1, T0, T0 + 3 * DAY), T0 + 99 * DAY, None),
    ],
)
def test_plan_pending(
    rule: PendingReminder, ticket: PendingTicket, now: datetime, expected: str | None
) -> None:
    assert plan_pending(rule, ticket, now) == expected


VIP = NoContact("vip", 30, parse_proactive(EXAMPLE)[1].customer)  # type: ignore[union-attr]


def acme(last: datetime | None = T0, **attributes: Any) -> CustomerSnapshot:
    attrs = {"tier": "VIP", "account_owner": "alice@example.com", **attributes}
    return CustomerSnapshot(7, "ACME Corp", None, attrs, T0 - 99 * DAY, last)


@pytest.mark.parametrize(
    ("customer", "now", "due"),
    [
        (acme(), T0 + 30 * DAY - TICK, False),
        (acme(), T0 + 30 * DAY, True),  # exactly N days; "VIP" matches "vip" like routing
        (acme(), (T0 + 30 * DAY).astimezone(TOKYO), True),
        (acme(tier="standard"), T0 + 99 * DAY, False),
        (acme(tier=["vip", "beta"]), T0 + 30 * DAY, True),  # a list attribute: any item
        (acme(last=None), T0 - 69 * DAY, True),  # never any contact: since they became one
        (acme(last=None), T0 - 69 * DAY - TICK, False),
    ],
)
def test_plan_no_contact(customer: CustomerSnapshot, now: datetime, due: bool) -> None:
    plan = plan_no_contact(VIP, customer, now)
    assert (plan is not None) is due
    if plan is not None:
        assert plan.subject == "Check in with ACME Corp: no contact for 30 days"
        assert plan.owner == "alice@example.com" and plan.customer_id == 7
        assert plan.key.startswith("vip:7:")


def test_a_no_contact_task_is_keyed_on_the_silence_it_is_about() -> None:
    first = plan_no_contact(VIP, acme(), T0 + 30 * DAY)
    later = plan_no_contact(VIP, acme(), T0 + 90 * DAY)
    after_contact = plan_no_contact(VIP, acme(last=T0 + 40 * DAY), T0 + 90 * DAY)
    assert first and later and after_contact
    assert first.key == later.key != after_contact.key


RENEWAL = AttributeDate("renewal", "contract_renewal", 30)
DUE_DAY = datetime(2026, 12, 16, tzinfo=UTC)  # 30 days before 2027-01-15


@pytest.mark.parametrize(
    ("value", "now", "days_left"),
    [
        ("2027-01-15", DUE_DAY - TICK, None),
        ("2027-01-15", DUE_DAY, 30),
        ("2027-01-15", DUE_DAY.astimezone(TOKYO), 30),
        # 08:59 in Tokyo on the 16th is still the 15th in UTC: days are UTC days
        ("2027-01-15", (DUE_DAY - TICK).astimezone(TOKYO), None),
        ("2027-01-15", datetime(2027, 1, 15, 23, 59, tzinfo=UTC), 0),
        ("2027-01-15", datetime(2027, 1, 16, tzinfo=UTC), None),  # too late
        ("2027-01-15T10:00:00Z", DUE_DAY, 30),
        (" 2027-01-15 ", DUE_DAY, 30),
        ("15/01/2027", DUE_DAY, None),
        (20270115, DUE_DAY, None),
        (None, DUE_DAY, None),
    ],
)
def test_plan_attribute_date(value: Any, now: datetime, days_left: int | None) -> None:
    plan = plan_attribute_date(RENEWAL, acme(contract_renewal=value), now)
    if days_left is None:
        assert plan is None
        return
    assert plan is not None
    assert plan.key == "renewal:7:2027-01-15"
    assert plan.subject == f"ACME Corp: contract_renewal on 2027-01-15 (in {days_left} days)"


def test_attribute_date_reads_iso_dates_only() -> None:
    assert attribute_date("2027-01-15") == datetime(2027, 1, 15).date()
    assert attribute_date("2027-02-30") is None
    assert attribute_date("") is None


def test_an_attribute_date_rule_may_narrow_the_customers() -> None:
    (rule,) = parse_proactive(
        {
            "proactive": [
                {
                    "name": "vip-renewal",
                    "kind": "attribute_date",
                    "attribute": "contract_renewal",
                    "days_before": 30,
                    "customer": {"tier": ["vip", "gold"]},
                }
            ]
        }
    )
    assert isinstance(rule, AttributeDate)
    assert plan_attribute_date(rule, acme(contract_renewal="2027-01-15"), DUE_DAY)
    assert not plan_attribute_date(rule, acme(contract_renewal="2027-01-15", tier="x"), DUE_DAY)


# ---- the unit of work, on both databases ---------------------------------------------------

OWNER = "owner@support.test"


async def rows(helpdesk: Helpdesk, model: Any, *where: Any) -> list[Any]:
    t = model.__table__
    return await helpdesk.db.read(
        lambda c: c.execute(select(t).where(*where).order_by(t.c.id)).all()
    )


async def customer_writes(
    helpdesk: Helpdesk, key: str, number: int | None = None, sender: str = "4242"
) -> int:
    result = await helpdesk.ingest(
        InboundMessage(
            Channel.TELEGRAM,
            key,
            Sender(sender, "Tom"),
            "The app crashes",
            helpdesk.clock(),
            thread_hints=ThreadHints(ticket_number=number),
        )
    )
    assert result.ticket_number is not None
    return result.ticket_number


async def add_agent(helpdesk: Helpdesk, email: str = OWNER) -> Actor:
    agent_id = await helpdesk.db.write(
        lambda c: accounts.add_agent(
            c, name="Olivia Owner", email=email, role=accounts.Role.AGENT, now=T0
        )
    )
    return Actor(agent_id, "Olivia Owner", "agent")


async def set_attributes(helpdesk: Helpdesk, customer_id: int, **attrs: Any) -> None:
    t = Customer.__table__
    await helpdesk.db.write(
        lambda c: c.execute(update(t).where(t.c.id == customer_id).values(attributes=attrs))
    )


async def run(helpdesk: Helpdesk, *which: str) -> Any:
    chosen = [r for r in parse_proactive(EXAMPLE) if r.name in which]
    return await helpdesk.run_proactive(None, chosen)


async def test_a_pending_ticket_is_reminded_once_then_resolved(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    number = await customer_writes(helpdesk, "u1")
    agent = await add_agent(helpdesk)
    await helpdesk.reply(number, "Which version?", agent, status=TicketStatus.PENDING)

    clock.advance(days=3, seconds=-1)
    assert (await run(helpdesk, "pending-reminder")).actions == 0
    clock.advance(seconds=1)
    report = await run(helpdesk, "pending-reminder")
    assert report.counts == {"pending-reminder": {"reminded": 1}}
    assert (await run(helpdesk, "pending-reminder")).actions == 0  # no duplicate

    [reminder] = await rows(helpdesk, OutboxRow, OutboxRow.idempotency_key.like("proactive:%"))
    assert (reminder.channel, reminder.address, reminder.automatic) == ("telegram", "4242", True)
    assert f"ticket #{number}" in reminder.payload["text"]
    assert "within 4 days" in reminder.payload["text"]
    [stored] = await rows(helpdesk, Message, Message.author == "bot")
    assert (stored.kind, stored.automatic, stored.text) == (
        "outbound",
        True,
        reminder.payload["text"],
    )
    assert reminder.idempotency_key == f"proactive:{stored.id}"

    clock.advance(days=4, seconds=-1)
    assert (await run(helpdesk, "pending-reminder")).actions == 0
    clock.advance(seconds=1)
    assert (await run(helpdesk, "pending-reminder")).counts == {"pending-reminder": {"resolved": 1}}
    assert (await run(helpdesk, "pending-reminder")).actions == 0
    [ticket] = await rows(helpdesk, Ticket)
    assert ticket.status == "resolved" and ticket.resolved_at == clock.now
    history = await rows(helpdesk, TicketEvent, TicketEvent.actor == "bot")
    assert [h.kind for h in history] == ["reminder", "status"]
    assert "rule 'pending-reminder': pending on the customer since" in history[0].reason
    assert history[1].data["current"] == "resolved"
    assert history[1].reason.startswith(
        "rule 'pending-reminder': no answer from the customer 4 days after the reminder"
    )
    # like any resolution by us, the customer is asked for a rating
    assert await rows(helpdesk, OutboxRow, OutboxRow.idempotency_key.like("csat:%"))


async def test_an_answer_after_the_reminder_keeps_the_ticket_open(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    number = await customer_writes(helpdesk, "u1")
    agent = await add_agent(helpdesk)
    await helpdesk.reply(number, "Which version?", agent, status=TicketStatus.PENDING)
    clock.advance(days=3)
    assert (await run(helpdesk, "pending-reminder")).get("pending-reminder", "reminded") == 1

    clock.advance(days=1)
    await customer_writes(helpdesk, "u2", number)  # pending -> open
    clock.advance(days=10)
    assert (await run(helpdesk, "pending-reminder")).actions == 0
    [ticket] = await rows(helpdesk, Ticket)
    assert ticket.status == "open"

    # pending again: a new stretch gets its own reminder (once)
    await helpdesk.set_status(number, TicketStatus.PENDING, agent)
    clock.advance(days=3)
    assert (await run(helpdesk, "pending-reminder")).get("pending-reminder", "reminded") == 1
    assert (await run(helpdesk, "pending-reminder")).actions == 0
    sent = await rows(helpdesk, OutboxRow, OutboxRow.idempotency_key.like("proactive:%"))
    assert len(sent) == 2


async def test_a_reminder_over_the_automatic_limit_waits_for_a_later_run(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    number = await customer_writes(helpdesk, "u1")
    agent = await add_agent(helpdesk)
    await helpdesk.reply(number, "Which version?", agent, status=TicketStatus.PENDING)
    clock.advance(days=3)
    # a loop elsewhere filled this hour's automatic messages to the address
    for i in range(5):
        await customer_writes(helpdesk, f"other-{i}", sender="4242-x")
    t = OutboxRow.__table__
    await helpdesk.db.write(
        lambda c: c.execute(
            update(t).where(t.c.address == "4242-x").values(address="4242", automatic=True)
        )
    )
    assert (await run(helpdesk, "pending-reminder")).counts == {"pending-reminder": {"deferred": 1}}
    assert (await run(helpdesk, "pending-reminder")).get("pending-reminder", "deferred") == 1
    notes = await rows(helpdesk, TicketEvent, TicketEvent.kind == "suppressed")
    assert len(notes) == 1 and "reminder deferred" in notes[0].reason  # said once
    clock.advance(hours=1)
    assert (await run(helpdesk, "pending-reminder")).get("pending-reminder", "reminded") == 1


async def vip_customer(helpdesk: Helpdesk, clock: StepClock, **attrs: Any) -> tuple[int, int]:
    number = await customer_writes(helpdesk, "u1")
    [ticket] = await rows(helpdesk, Ticket, Ticket.number == number)
    await set_attributes(helpdesk, ticket.customer_id, **attrs)
    return number, ticket.customer_id


async def tasks(helpdesk: Helpdesk) -> list[Any]:
    return await rows(helpdesk, Ticket, Ticket.kind == "task")


async def test_a_silent_vip_gets_one_task_for_the_account_owner(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    team = ThreadRef(Channel.SLACK, "C-TEAM")
    helpdesk.reactions += [AgentBot(team), PingBot([], team)]
    owner = await add_agent(helpdesk)
    number, customer_id = await vip_customer(
        helpdesk, clock, tier="VIP", account_owner=OWNER.upper()
    )
    await helpdesk.reply(number, "Fixed in 4.2", owner, status=TicketStatus.RESOLVED)
    last_contact = clock.now

    clock.now = last_contact + timedelta(days=30) - timedelta(seconds=1)
    assert (await run(helpdesk, "vip-check-in")).actions == 0
    clock.advance(seconds=1)
    assert (await run(helpdesk, "vip-check-in")).counts == {"vip-check-in": {"task_created": 1}}
    clock.advance(days=45)  # the same silence: no second task
    assert (await run(helpdesk, "vip-check-in")).actions == 0

    [task] = await tasks(helpdesk)
    assert task.customer_id == customer_id and task.assignee_id == owner.agent_id
    assert task.status == "open" and task.subject == "Check in with Tom: no contact for 30 days"
    history = await rows(helpdesk, TicketEvent, TicketEvent.ticket_id == task.id)
    assert [h.kind for h in history] == ["opened", "assigned"]
    assert history[0].reason.startswith("task by proactive rule 'vip-check-in': no message")
    assert history[0].data["rule"] == "vip-check-in"
    [note] = await rows(helpdesk, Message, Message.ticket_id == task.id)
    assert note.kind == "note"
    # agents get a card, the owner a ping; nothing at all goes to the customer
    out = await rows(helpdesk, OutboxRow, OutboxRow.ticket_id == task.id)
    assert {(r.channel, r.address) for r in out} == {("slack", "C-TEAM"), ("email", OWNER)}

    # contact again, then silence again: a new task
    await customer_writes(helpdesk, "u2")
    clock.advance(days=30)
    assert (await run(helpdesk, "vip-check-in")).get("vip-check-in", "task_created") == 1
    assert len(await tasks(helpdesk)) == 2


async def test_a_task_for_an_unknown_owner_stays_unassigned_and_says_why(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await vip_customer(helpdesk, clock, tier="vip", account_owner="nobody@example.com")
    await vip_customer_without_owner(helpdesk)
    clock.advance(days=30)
    assert (await run(helpdesk, "vip-check-in")).get("vip-check-in", "task_created") == 2
    first, second = await tasks(helpdesk)
    assert first.assignee_id is None and first.status == "new"
    reasons = [
        h.reason
        for h in await rows(helpdesk, TicketEvent, TicketEvent.kind == "unassigned")
        if h.ticket_id in (first.id, second.id)
    ]
    assert reasons == [
        "left unassigned: account owner 'nobody@example.com' is not an active agent",
        "left unassigned: the customer has no account owner attribute",
    ]
    assert not await rows(helpdesk, OutboxRow, OutboxRow.ticket_id.in_([first.id, second.id]))


async def vip_customer_without_owner(helpdesk: Helpdesk) -> None:
    number = await customer_writes(helpdesk, "w1", sender="5151")
    [ticket] = await rows(helpdesk, Ticket, Ticket.number == number)
    await set_attributes(helpdesk, ticket.customer_id, tier="vip")


async def test_a_renewal_task_is_created_once_per_date(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await add_agent(helpdesk)
    _, customer_id = await vip_customer(
        helpdesk, clock, contract_renewal="2026-04-15", account_owner=OWNER
    )
    await vip_customer_bad_date(helpdesk)
    clock.now = datetime(2026, 3, 16, tzinfo=UTC) - timedelta(seconds=1)
    report = await run(helpdesk, "renewal")
    assert report.actions == 0 and report.get("renewal", "bad_date") == 1
    clock.advance(seconds=1)
    assert (await run(helpdesk, "renewal")).get("renewal", "task_created") == 1
    clock.advance(days=10)
    assert (await run(helpdesk, "renewal")).get("renewal", "task_created") == 0
    [task] = await tasks(helpdesk)
    assert task.subject == "Tom: contract_renewal on 2026-04-15 (in 30 days)"

    # renewed: next year's date is a new reminder
    await set_attributes(helpdesk, customer_id, contract_renewal="2027-04-15", account_owner=OWNER)
    clock.now = datetime(2027, 3, 20, tzinfo=UTC)
    assert (await run(helpdesk, "renewal")).get("renewal", "task_created") == 1
    assert len(await tasks(helpdesk)) == 2


async def vip_customer_bad_date(helpdesk: Helpdesk) -> None:
    number = await customer_writes(helpdesk, "w1", sender="5151")
    [ticket] = await rows(helpdesk, Ticket, Ticket.number == number)
    await set_attributes(helpdesk, ticket.customer_id, contract_renewal="next spring")


async def test_a_pending_task_never_reminds_the_customer(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    owner = await add_agent(helpdesk)
    await vip_customer(helpdesk, clock, tier="vip", account_owner=OWNER)
    clock.advance(days=30)
    await run(helpdesk, "vip-check-in")
    [task] = await tasks(helpdesk)
    await helpdesk.set_status(task.number, TicketStatus.PENDING, owner)
    await helpdesk.set_status(task.number, TicketStatus.RESOLVED, owner)  # no survey either
    await helpdesk.set_status(task.number, TicketStatus.OPEN, owner)
    await helpdesk.set_status(task.number, TicketStatus.PENDING, owner)
    clock.advance(days=30)
    assert (await run(helpdesk, "pending-reminder")).actions == 0
    assert not await rows(helpdesk, OutboxRow, OutboxRow.ticket_id == task.id)


async def test_several_processes_act_once(helpdesk: Helpdesk, clock: StepClock) -> None:
    import asyncio

    await add_agent(helpdesk)
    number = await customer_writes(helpdesk, "u1")
    [ticket] = await rows(helpdesk, Ticket, Ticket.number == number)
    await set_attributes(helpdesk, ticket.customer_id, tier="vip", account_owner=OWNER)
    agent = Actor(None, "system", "admin")
    await helpdesk.set_status(number, TicketStatus.PENDING, agent)
    clock.advance(days=30)
    all_rules = parse_proactive(EXAMPLE)
    reports = await asyncio.gather(*(helpdesk.run_proactive(None, all_rules) for _ in range(4)))
    assert sum(r.get("vip-check-in", "task_created") for r in reports) == 1
    assert sum(r.get("pending-reminder", "reminded") for r in reports) == 1
    assert len(await tasks(helpdesk)) == 1


async def test_a_run_stops_at_its_limit_and_the_next_goes_on(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    agent = await add_agent(helpdesk)
    for i in range(3):
        number = await customer_writes(helpdesk, f"u{i}", sender=f"42{i}")
        await helpdesk.set_status(number, TicketStatus.PENDING, agent)
    clock.advance(days=3)
    rule = [r for r in parse_proactive(EXAMPLE) if r.name == "pending-reminder"]
    first = await helpdesk.run(lambda c, ctx: run_proactive(c, ctx, clock.now, rule, limit=2))
    assert first.limited and first.get("pending-reminder", "reminded") == 2
    second = await helpdesk.run_proactive(None, rule)
    assert not second.limited and second.get("pending-reminder", "reminded") == 1
