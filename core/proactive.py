"""Proactive rules: time-based triggers run by the scheduler.

Three kinds, configured as ``[[proactive]]`` tables (see docs/proactive.md):

- ``pending_reminder``: a ticket pending on the customer for ``after_days`` gets a reminder on
  the customer's channel; ``close_after_days`` after the reminder with still no answer it is
  resolved (the customer can still reopen it by answering within the reopen window);
- ``no_contact``: a matching customer with no message from or to them for ``after_days`` gets a
  *task* for their account owner;
- ``attribute_date``: a customer attribute holding an ISO date ``days_before`` ahead gets a task
  for the account owner.

Planning is pure (``plan_*``: snapshots and ``now`` in, what to do out); ``run_proactive`` is
the unit of work that finds the candidates with indexed queries and applies the plans. Every
action fires once, across restarts and processes: a receipt keyed on the rule and the thing it
is about (the ticket and when it went pending; the customer and their last contact; the
customer and the date) is written in the same transaction (``core.once``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from string import Template
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, true, update
from sqlalchemy.sql.elements import ColumnElement

from core.events import MessageAppended, StatusChanged, TicketOpened, TicketResolved
from core.messages import OutboundMessage
from core.once import first_time, forget
from core.outbox import automatic_allowed, enqueue
from core.persistence.models import Agent, Customer, Identity, Message, table_of
from core.persistence.records import history, next_number, receipts, record, tickets, touch
from core.proactive_rules import (
    ACTOR,
    BAD_DATE,
    DEFERRED,
    NO_IDENTITY,
    NOT_SENT,
    PAGE,
    REMIND,
    REMINDED,
    RESOLVED,
    SCOPE,
    TASK,
    TASK_CREATED,
    TICKET,
    AttributeDate,
    CustomerSnapshot,
    NoContact,
    PendingReminder,
    PendingTicket,
    ProactiveRule,
    TaskPlan,
    attribute_date,
    plan_attribute_date,
    plan_no_contact,
    plan_pending,
    reminder_key,
)
from core.tickets import MessageKind, Priority, TicketStatus
from core.views import TicketView, UnitContext, agent_contact, load_view

customers = table_of(Customer)
identities = table_of(Identity)
agents = table_of(Agent)
messages = table_of(Message)


# ---- the unit of work ----------------------------------------------------------------------


@dataclass
class ProactiveReport:
    """What a run did, per rule and action ("reminded", "resolved", "task_created", ...)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    limited: bool = False  # the run stopped at its action limit; the next run goes on

    def add(self, rule: str, action: str) -> None:
        per_rule = self.counts.setdefault(rule, {})
        per_rule[action] = per_rule.get(action, 0) + 1

    def get(self, rule: str, action: str) -> int:
        return self.counts.get(rule, {}).get(action, 0)

    @property
    def actions(self) -> int:
        done = (REMINDED, RESOLVED, TASK_CREATED)
        return sum(n for c in self.counts.values() for a, n in c.items() if a in done)


class _Budget(Exception):
    """The run's action limit is reached."""


def run_proactive(
    conn: Connection,
    ctx: UnitContext,
    now: datetime,
    rules: Sequence[ProactiveRule],
    *,
    limit: int = 500,
) -> ProactiveReport:
    """Apply every rule as of ``now`` in this transaction; at most ``limit`` actions, so a
    first run over a backlog does not hold the writer for long (the next run goes on)."""
    ctx.now = now  # history, outbox rows and the bots' reactions are all as of ``now``
    report = ProactiveReport()
    run = _Run(conn, ctx, now, report, limit)
    try:
        for rule in rules:
            if isinstance(rule, PendingReminder):
                run.pending(rule)
        task_rules = [r for r in rules if not isinstance(r, PendingReminder)]
        if task_rules:
            run.tasks(task_rules)
    except _Budget:
        report.limited = True
    return report


class _Run:
    def __init__(
        self,
        conn: Connection,
        ctx: UnitContext,
        now: datetime,
        report: ProactiveReport,
        limit: int,
    ) -> None:
        self.conn, self.ctx, self.now, self.report, self.limit = conn, ctx, now, report, limit

    def _spend(self) -> None:
        if self.report.actions >= self.limit:
            raise _Budget

    # -- pending reminders ----------------------------------------------------------------

    def pending(self, rule: PendingReminder) -> None:
        conn, now = self.conn, self.now
        candidates = _pending_tickets(conn, now - timedelta(days=rule.after_days))
        keys = {t_id: reminder_key(rule, t_id, since) for t_id, since in candidates}
        reminded = _fired(conn, list(keys.values()))
        for ticket_id, since in candidates:
            key = keys[ticket_id]
            ticket = PendingTicket(ticket_id, since, reminded.get(key))
            action = plan_pending(rule, ticket, now)
            if action is None:
                continue
            self._spend()
            if action == REMIND:
                self._remind(rule, ticket_id, key, since)
            else:
                self._resolve(rule, ticket_id, ticket.reminded_at)

    def _remind(self, rule: PendingReminder, ticket_id: int, key: str, since: datetime) -> None:
        conn, ctx, now = self.conn, self.ctx, self.now
        if not first_time(conn, SCOPE, key, now):
            return  # another process did it first
        view = load_view(conn, ctx, ticket_id)
        why = f"rule {rule.name!r}: pending on the customer since {since:%Y-%m-%d %H:%M} UTC"
        if view.bouncing:
            # writing to a bouncing address only makes more bounces; the resolve clock runs
            record(
                conn,
                ticket_id,
                at=now,
                actor=ACTOR,
                kind="reminder",
                reason=f"{why}; not sent: the customer's address bounces",
                rule=rule.name,
            )
            self.report.add(rule.name, NOT_SENT)
            return
        per_hour = ctx.settings.outbox.max_automatic_per_address_per_hour
        if not automatic_allowed(conn, view.reply_to, now, per_hour):
            forget(conn, SCOPE, key)  # try again on a later run
            if first_time(conn, SCOPE, f"{key}:deferred", now):  # say so once, not every run
                record(
                    conn,
                    ticket_id,
                    at=now,
                    actor=ACTOR,
                    kind="suppressed",
                    reason=f"{why}; "
                    f"reminder deferred: more than {per_hour} automatic messages to this "
                    "address in an hour (loop protection)",
                    rule=rule.name,
                )
            self.report.add(rule.name, DEFERRED)
            return
        self._send_reminder(rule, view, why)
        self.report.add(rule.name, REMINDED)

    def _send_reminder(self, rule: PendingReminder, view: TicketView, why: str) -> None:
        conn, ctx, now = self.conn, self.ctx, self.now
        values = {
            "name": view.customer_name or view.customer_email or "",
            "number": view.number,
            "subject": view.subject,
            "status_url": view.status_url,
            "days": rule.close_after_days,
        }
        text = Template(rule.text).safe_substitute(values)
        subject = Template(rule.subject).safe_substitute(values)[:300]
        message_id = conn.execute(
            insert(messages)
            .values(
                ticket_id=view.id,
                kind=MessageKind.OUTBOUND.value,
                channel=view.reply_to.channel.value,
                author=ACTOR,
                subject=subject,
                text=text,
                automatic=True,
                created_at=now,
            )
            .returning(messages.c.id)
        ).scalar_one()
        thread = (view.reply_to.thread,) if view.reply_to.thread else ()
        outbound = OutboundMessage(
            to=view.reply_to,
            text=text,
            subject=subject,
            automatic=True,
            in_reply_to=thread,
            thread_purpose="thread",
        )
        enqueue(
            conn,
            f"proactive:{message_id}",
            outbound,
            now=now,
            ticket_id=view.id,
            mail_domain=ctx.mail_domain,
        )
        touch(conn, view.id, now)
        record(
            conn,
            view.id,
            at=now,
            actor=ACTOR,
            kind="reminder",
            reason=why,
            rule=rule.name,
            message_id=message_id,
        )
        # already queued above: the bots must not relay it a second time
        ctx.emit(
            conn,
            MessageAppended(
                view.id, view.number, now, message_id, MessageKind.OUTBOUND.value, ACTOR, text
            ),
            automatic=True,
        )

    def _resolve(self, rule: PendingReminder, ticket_id: int, reminded_at: datetime | None) -> None:
        conn, now = self.conn, self.now
        number, created_at = conn.execute(
            select(tickets.c.number, tickets.c.created_at).where(tickets.c.id == ticket_id)
        ).one()
        # compare-and-set: a customer's answer committed meanwhile keeps the ticket open
        won = conn.execute(
            update(tickets)
            .where(tickets.c.id == ticket_id, tickets.c.status == TicketStatus.PENDING.value)
            .values(
                status=TicketStatus.RESOLVED.value,
                resolved_at=now,
                resolution_seconds=(now - created_at).total_seconds(),  # for the reports
                sla_next_check=None,  # resolved: the SLA sweep has nothing left to watch
                paused_since=None,
                updated_at=now,
            )
        ).rowcount
        if not won:
            return
        reason = (
            f"rule {rule.name!r}: no answer from the customer {rule.close_after_days} days "
            f"after the reminder of {reminded_at:%Y-%m-%d %H:%M} UTC"
        )
        pending, resolved = TicketStatus.PENDING.value, TicketStatus.RESOLVED.value
        record(
            conn,
            ticket_id,
            at=now,
            actor=ACTOR,
            kind="status",
            reason=reason,
            previous=pending,
            current=resolved,
            rule=rule.name,
        )
        self.ctx.emit(conn, StatusChanged(ticket_id, number, now, pending, resolved, ACTOR))
        self.ctx.emit(conn, TicketResolved(ticket_id, number, now, ACTOR))
        self.report.add(rule.name, RESOLVED)

    # -- tasks ----------------------------------------------------------------------------

    def tasks(self, rules: Sequence[NoContact | AttributeDate]) -> None:
        """One pass over the customers any rule may concern (each rule's SQL prefilter, OR-ed)."""
        conn, now = self.conn, self.now
        wants_contact = any(isinstance(r, NoContact) for r in rules)
        for page in _customer_pages(conn, [_prefilter(r) for r in rules]):
            contact = _last_contacts(conn, [row.id for row in page]) if wants_contact else {}
            plans: list[TaskPlan] = []
            for row in page:
                snapshot = CustomerSnapshot(
                    row.id,
                    row.name,
                    row.email,
                    row.attributes or {},
                    row.created_at,
                    contact.get(row.id),
                )
                for rule in rules:
                    if isinstance(rule, NoContact):
                        plan = plan_no_contact(rule, snapshot, now)
                    else:
                        plan = plan_attribute_date(rule, snapshot, now)
                        if plan is None and _bad_date(rule, snapshot):
                            self.report.add(rule.name, BAD_DATE)
                    if plan is not None:
                        plans.append(plan)
            self._create_tasks(plans)

    def _create_tasks(self, plans: list[TaskPlan]) -> None:
        conn, now = self.conn, self.now
        done = _fired(conn, [p.key for p in plans])
        plans = [p for p in plans if p.key not in done]
        if not plans:
            return
        reply_to = _first_identities(conn, {p.customer_id for p in plans})
        owners = _agents_by_email(conn, {_email(p.owner) for p in plans} - {""})
        for plan in plans:
            identity = reply_to.get(plan.customer_id)
            if identity is None:
                self.report.add(plan.rule, NO_IDENTITY)  # nowhere to file it; not fired
                continue
            self._spend()
            if not first_time(conn, SCOPE, plan.key, now):
                continue
            self._create_task(plan, identity, owners.get(_email(plan.owner)))
            self.report.add(plan.rule, TASK_CREATED)

    def _create_task(self, plan: TaskPlan, identity: Any, owner: Any) -> None:
        conn, ctx, now = self.conn, self.ctx, self.now
        number = next_number(conn)
        status = TicketStatus.OPEN if owner is not None else TicketStatus.NEW
        team_id = owner.team_id if owner is not None else None
        ticket_id = conn.execute(
            insert(tickets)
            .values(
                number=number,
                customer_id=plan.customer_id,
                channel=identity.channel,
                subject=plan.subject,
                status=status.value,
                priority=Priority.NORMAL.value,
                team_id=team_id,
                assignee_id=owner.id if owner is not None else None,
                tags=[],
                reply_identity_id=identity.id,
                portal_version=1,
                reopen_count=0,
                created_at=now,
                updated_at=now,
                kind=TASK,
            )
            .returning(tickets.c.id)
        ).scalar_one()
        record(
            conn,
            ticket_id,
            at=now,
            actor=ACTOR,
            kind="opened",
            reason=f"task by proactive rule {plan.rule!r}: {plan.detail}",
            rule=plan.rule,
            task=True,
        )
        self._record_owner(ticket_id, plan, owner)
        conn.execute(
            insert(messages).values(
                ticket_id=ticket_id,
                kind=MessageKind.NOTE.value,
                channel="agent",
                author=ACTOR,
                subject=plan.subject,
                text=f"{plan.subject}\n\n{plan.detail[:1].upper()}{plan.detail[1:]}.",
                automatic=True,
                created_at=now,
            )
        )
        # agents see it (a card in the team channel, a ping to the owner); the customer bot
        # stays silent on tasks
        ctx.emit(
            conn,
            TicketOpened(
                ticket_id,
                number,
                now,
                plan.customer_id,
                identity.channel,
                plan.subject,
                Priority.NORMAL.value,
                text=plan.detail,
                notify=self._owner_contact(owner),
            ),
        )

    def _owner_contact(self, owner: Any) -> tuple[str, ...]:
        """The owner hears of their task directly (a ping, like a routing rule's notify)."""
        if owner is None:
            return ()
        to = agent_contact(
            self.ctx.settings, owner.email, owner.slack_user_id, owner.telegram_user_id
        )
        return (f"{to.channel.value}:{to.address}",) if to is not None else ()

    def _record_owner(self, ticket_id: int, plan: TaskPlan, owner: Any) -> None:
        conn, now = self.conn, self.now
        if owner is not None:
            record(
                conn,
                ticket_id,
                at=now,
                actor=ACTOR,
                kind="assigned",
                reason="the customer's account owner",
                agent_id=owner.id,
                agent=owner.name,
                previous_agent_id=None,
            )
            return
        if plan.owner is None or plan.owner == "":
            why = "the customer has no account owner attribute"
        else:
            why = f"account owner {plan.owner!r} is not an active agent"
        record(
            conn,
            ticket_id,
            at=now,
            actor=ACTOR,
            kind="unassigned",
            reason=f"left unassigned: {why}",
            owner=str(plan.owner or ""),
        )


def _bad_date(rule: AttributeDate, customer: CustomerSnapshot) -> bool:
    value = customer.attributes.get(rule.attribute)
    return value not in (None, "") and attribute_date(value) is None


def _email(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


# ---- queries -------------------------------------------------------------------------------


def _pending_tickets(conn: Connection, cutoff: datetime) -> list[tuple[int, datetime]]:
    """Tickets (not tasks) pending since ``cutoff`` or earlier, with since when: the latest
    status change (every change is in the history, the opening too), else the creation. Uses
    the status index and the history's index of status changes."""
    since = func.coalesce(func.max(history.c.at), tickets.c.created_at)
    changes = and_(history.c.ticket_id == tickets.c.id, history.c.current_status.is_not(None))
    rows = conn.execute(
        select(tickets.c.id, since.label("since"))
        .select_from(tickets.outerjoin(history, changes))
        .where(tickets.c.status == TicketStatus.PENDING.value, tickets.c.kind == TICKET)
        .group_by(tickets.c.id, tickets.c.created_at)
        .having(since <= cutoff)
        .order_by(tickets.c.id)
    ).all()
    return [(row.id, row.since) for row in rows]


def _fired(conn: Connection, keys: list[str]) -> dict[str, datetime]:
    """The keys already fired, and when (one indexed lookup per PAGE keys)."""
    out: dict[str, datetime] = {}
    for i in range(0, len(keys), PAGE):
        chunk = [k[:500] for k in keys[i : i + PAGE]]
        rows = conn.execute(
            select(receipts.c.external_id, receipts.c.created_at).where(
                receipts.c.channel == SCOPE, receipts.c.external_id.in_(chunk)
            )
        )
        out.update({row.external_id: row.created_at for row in rows})
    return out


def _prefilter(rule: NoContact | AttributeDate) -> ColumnElement[bool]:
    """What SQL can tell of a rule without knowing attribute semantics: the attributes it
    needs are present (JSON path not null, on SQLite and PostgreSQL alike)."""
    names = [t.name for t in rule.customer if t.op != "exists" or t.value]
    if isinstance(rule, AttributeDate):
        names.append(rule.attribute)
    present = [customers.c.attributes[n].as_string().is_not(None) for n in names]
    return and_(true(), *present)


def _customer_pages(
    conn: Connection, filters: list[ColumnElement[bool]]
) -> Iterator[Sequence[Any]]:
    """Customers matching any filter, PAGE at a time in id order (keyset pagination)."""
    last = 0
    while True:
        page = conn.execute(
            select(
                customers.c.id,
                customers.c.name,
                customers.c.email,
                customers.c.attributes,
                customers.c.created_at,
            )
            .where(customers.c.id > last, or_(*filters))
            .order_by(customers.c.id)
            .limit(PAGE)
        ).all()
        if not page:
            return
        yield page
        last = page[-1].id


def _last_contacts(conn: Connection, customer_ids: list[int]) -> dict[int, datetime]:
    """Each customer's latest message from or to them; notes and automatic messages (bot
    reminders, auto-replies) are not contact."""
    rows = conn.execute(
        select(tickets.c.customer_id, func.max(messages.c.created_at).label("at"))
        .join(messages, messages.c.ticket_id == tickets.c.id)
        .where(
            tickets.c.customer_id.in_(customer_ids),
            messages.c.kind.in_([MessageKind.INBOUND.value, MessageKind.OUTBOUND.value]),
            messages.c.automatic.is_(False),
        )
        .group_by(tickets.c.customer_id)
    )
    return {row.customer_id: row.at for row in rows}


def _first_identities(conn: Connection, customer_ids: set[int]) -> dict[int, Any]:
    """Each customer's oldest identity: a task is filed under it (never written to)."""
    out: dict[int, Any] = {}
    rows = conn.execute(
        select(identities.c.id, identities.c.customer_id, identities.c.channel)
        .where(identities.c.customer_id.in_(sorted(customer_ids)))
        .order_by(identities.c.id)
    )
    for row in rows:
        out.setdefault(row.customer_id, row)
    return out


def _agents_by_email(conn: Connection, emails: set[str]) -> dict[str, Any]:
    if not emails:
        return {}
    rows = conn.execute(
        select(
            agents.c.id,
            agents.c.name,
            agents.c.email,
            agents.c.team_id,
            agents.c.slack_user_id,
            agents.c.telegram_user_id,
        ).where(agents.c.email.in_(sorted(emails)), agents.c.active)
    )
    return {row.email: row for row in rows}
