"""The SLA clock of stored tickets: stopped while a ticket is pending on the customer, re-applied
when its priority changes, and swept for warnings and breaches, each fired exactly once.

A sweep is two steps. ``find_signals`` reads every open ticket under a policy (a read: no write
lock held on SQLite while 100,000 rows are looked at) and returns the signals crossed by ``now``.
``fire`` then handles one signal in a write unit: it re-reads the ticket and evaluates it again
(an agent may have answered meanwhile), and claims the signal with ``once.first_time`` in the
same transaction that records it and queues its pings. So a signal fires once, also when two
processes sweep at the same moment or the process dies between the two steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, literal_column, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from core import once
from core.events import SlaBreached, SlaWarning, TicketAssigned
from core.persistence.models import Team, Ticket, table_of
from core.persistence.prepared import Prepared
from core.persistence.records import record, touch
from core.sla import (
    BREACH,
    SlaPolicy,
    SlaSettings,
    SlaSignal,
    SlaSnapshot,
    choose_policy,
    due_times,
    next_check,
    priority_after_breach,
    resume_due,
    sweep,
)
from core.tickets import TicketStatus
from core.triage import OPEN_STATUSES, assign_by_strategy, customer_attributes, tier_of
from core.views import UnitContext

tickets = table_of(Ticket)
teams = table_of(Team)

_SNAPSHOT_COLUMNS = (
    tickets.c.id,
    tickets.c.created_at,
    tickets.c.priority,
    tickets.c.sla_policy,
    tickets.c.first_response_at,
    tickets.c.resolved_at,
    tickets.c.first_response_due,
    tickets.c.resolution_due,
    tickets.c.paused_since,
    tickets.c.sla_fired,
)
_UNDER_POLICY = (tickets.c.status.in_(OPEN_STATUSES), tickets.c.sla_policy.is_not(None))
# Open tickets under a policy whose check time has come (ix_tickets_sla_next_check)
_DUE_FOR_CHECK = select(*_SNAPSHOT_COLUMNS).where(
    *_UNDER_POLICY, tickets.c.sla_next_check <= bindparam("now")
)
# The same SELECT as SQLite text, compiled once with its constant statuses inlined and the
# check time as the one qmark parameter; see _sqlite_snapshots.
_DUE_FOR_CHECK_SQLITE = str(
    select(*_SNAPSHOT_COLUMNS)
    .where(*_UNDER_POLICY, tickets.c.sla_next_check <= literal_column("?"))
    .compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
)
_ONE = Prepared(
    select(
        *_SNAPSHOT_COLUMNS,
        tickets.c.sla_next_check,
        tickets.c.number,
        tickets.c.status,
        tickets.c.team_id,
        tickets.c.assignee_id,
    ).where(tickets.c.id == bindparam("ticket_id"))
)


def policy_named(sla: SlaSettings, name: str | None) -> SlaPolicy | None:
    return next((p for p in sla.policies if p.name == name), None)


# -- the clock follows the ticket --------------------------------------------------------------


def clock_values(
    row: Any, current: TicketStatus, target: TicketStatus, now: datetime, sla: SlaSettings
) -> dict[str, Any]:
    """Column changes for a status change: pending stops the resolution clock; leaving pending
    restarts it with the due time pushed back by the business time the pause covered. Either
    way the next sweep looks at the ticket again and works out its next check time; a resolved
    or closed ticket has none."""
    if row.sla_policy is None or current is target:
        return {}
    if target.value not in OPEN_STATUSES:
        # nothing to watch once resolved or closed; cleared, so the sweep's index range on the
        # check time holds open tickets only and does not grow with history (reopening sets it)
        return {"sla_next_check": None, "paused_since": None}
    values: dict[str, Any] = {"sla_next_check": now}
    if target is TicketStatus.PENDING:
        values["paused_since"] = now
        return values
    if current is not TicketStatus.PENDING or row.paused_since is None:
        return values
    values["paused_since"] = None
    policy = policy_named(sla, row.sla_policy)
    if policy is not None and row.resolution_due is not None:
        calendar = sla.calendar_for(policy)
        values["resolution_due"] = resume_due(calendar, row.resolution_due, row.paused_since, now)
    return values


def reapplied(
    conn: Connection, row: Any, priority: str, sla: SlaSettings, now: datetime
) -> dict[str, Any]:
    """Column changes when a ticket's priority changes: the policy for the new priority, its
    due times counted from the ticket's opening. Pending time already paused is carried over
    when both policies use the same calendar."""
    if not sla.policies:
        return {}
    tier = tier_of(customer_attributes(conn, row.customer_id))
    policy = choose_policy(sla.policies, priority, tier)
    if policy is None:
        return {
            "sla_policy": None,
            "first_response_due": None,
            "resolution_due": None,
            "sla_next_check": None,
        }
    if policy.name == row.sla_policy:
        return {}
    calendar = sla.calendar_for(policy)
    first_response, resolution = due_times(policy, calendar, row.created_at)
    old = policy_named(sla, row.sla_policy)
    if old is not None and old.calendar == policy.calendar and row.resolution_due is not None:
        _, unpaused = due_times(old, calendar, row.created_at)
        # the business time paused so far, from the old due time's shift; the new due shifts alike
        paused = calendar.business_minutes_between(unpaused, row.resolution_due)
        if paused > 0:
            resolution = calendar.add_business_time(resolution, paused)
    return {
        "sla_policy": policy.name,
        "first_response_due": first_response,
        "resolution_due": resolution,
        "sla_next_check": now,  # the next sweep works out the exact time
    }


# -- sweeping ------------------------------------------------------------------------------


def _snapshot(row: Any) -> SlaSnapshot:
    return SlaSnapshot(
        ticket_id=row.id,
        opened_at=row.created_at,
        priority=row.priority,
        policy=row.sla_policy,
        first_response_at=row.first_response_at,
        resolved_at=row.resolved_at,
        first_response_due=row.first_response_due,
        resolution_due=row.resolution_due,
        paused=((row.paused_since, None),) if row.paused_since is not None else (),
        fired=frozenset(row.sla_fired or ()),
    )


def find_signals(
    conn: Connection, now: datetime, sla: SlaSettings
) -> tuple[list[tuple[int, SlaSignal]], list[int]]:
    """Warnings and breaches crossed by ``now`` and not fired yet, over the open tickets whose
    check time has come; and the ids of those tickets (each needs its next check time set)."""
    if not sla.policies:
        return [], []
    if conn.dialect.name == "sqlite":
        snapshots = list(_sqlite_snapshots(conn, now))
    else:  # PostgreSQL: SQLAlchemy's path (asyncpg decodes datetimes itself)
        rows = conn.execute(_DUE_FOR_CHECK, {"now": now}).all()
        snapshots = [_snapshot(r) for r in rows]
    signals = sweep(snapshots, now, sla.policies, sla.calendar_map)
    return signals, [s.ticket_id for s in snapshots]


def _sqlite_snapshots(conn: Connection, now: datetime) -> Iterator[SlaSnapshot]:
    """``_snapshot`` of every row of the sweep's SELECT on SQLite, the values converted here
    rather than by SQLAlchemy's result processing: over 100,000 open tickets its per-value
    processors (a datetime parse and ``replace(tzinfo=UTC)`` per due time, ``json.loads`` per
    ``sla_fired``) and ``Row`` objects took most of the sweep. Run on the DBAPI cursor of the
    same connection, so inside the caller's read transaction."""
    dbapi = conn.dialect.loaded_dbapi
    sql = _DUE_FOR_CHECK_SQLITE
    # the check time as SQLite stores it (the type's and the dialect's processors in one)
    stored = tickets.c.sla_next_check.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, (stored(now) if stored else now,))
        rows = cursor.fetchall()
    except dbapi.Error as err:  # the exception classes SQLAlchemy would raise
        raise DBAPIError.instance(sql, (), err, dbapi.Error, dialect=conn.dialect) from err
    finally:
        cursor.close()
    utc, snapshot = _utc_from_sqlite, SlaSnapshot
    fired_sets: dict[str | None, frozenset[str]] = {}  # a handful of distinct sla_fired texts
    for ticket_id, created, priority, policy, fr_at, res_at, fr_due, res_due, paused, fired in rows:
        fired_set = fired_sets.get(fired)
        if fired_set is None:
            fired_set = fired_sets[fired] = frozenset(
                (json.loads(fired) if fired is not None else None) or ()
            )
        # positional (keywords cost ~3x here): ticket_id, opened_at, priority, tier, policy,
        # first_response_at, resolved_at, first_response_due, resolution_due, paused, fired
        yield snapshot(
            ticket_id,
            utc(created),
            priority,
            None,
            policy,
            None if fr_at is None else utc(fr_at),
            None if res_at is None else utc(res_at),
            None if fr_due is None else utc(fr_due),
            None if res_due is None else utc(res_due),
            ((utc(paused), None),) if paused is not None else (),
            fired_set,
        )


def _utc_from_sqlite(text: str) -> datetime:
    """A stored ``UtcDateTime`` (SQLite text, naive UTC) as SQLAlchemy returns it: an aware UTC
    datetime. Parsing with the offset appended is ~5x cheaper than ``fromisoformat(text)
    .replace(tzinfo=UTC)`` (the result processors' way), and gives the same value."""
    try:
        return datetime.fromisoformat(text + "+00:00")
    except ValueError:  # not the stored form (e.g. an offset already): the general way
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def next_check_of(snapshot: SlaSnapshot, sla: SlaSettings) -> datetime | None:
    """When the sweep must look at the ticket next (as ``sweep`` picks its policy)."""
    policy = policy_named(sla, snapshot.policy)
    if policy is None:
        policy = choose_policy(sla.policies, snapshot.priority, snapshot.tier)
    if policy is None:
        return None
    return next_check(snapshot, sla.calendar_for(policy), policy)


def reschedule(conn: Connection, ctx: UnitContext, ticket_ids: Sequence[int]) -> None:
    """Set each ticket's next check time from its stored state. A compare-and-set on the value
    just read: a change committed meanwhile (which set the check time to now) wins."""
    sla = ctx.settings.sla
    for ticket_id in ticket_ids:
        row = _ONE.run(conn, {"ticket_id": ticket_id}).first()
        if row is None:
            continue
        upcoming = next_check_of(_snapshot(row), sla) if row.status in OPEN_STATUSES else None
        if upcoming == row.sla_next_check:
            continue
        unchanged = (
            tickets.c.sla_next_check.is_(None)
            if row.sla_next_check is None
            else tickets.c.sla_next_check == row.sla_next_check
        )
        conn.execute(
            update(tickets)
            .where(tickets.c.id == ticket_id, unchanged)
            .values(sla_next_check=upcoming)
        )


def fire(conn: Connection, ctx: UnitContext, ticket_id: int, signal: SlaSignal) -> bool:
    """Record one signal, queue its pings and apply the policy's breach actions; False when it
    no longer applies (the ticket changed) or was fired already (by this or another process)."""
    sla = ctx.settings.sla
    row = _ONE.run(conn, {"ticket_id": ticket_id}).first()
    if row is None or row.status not in OPEN_STATUSES:
        return False
    snapshot = _snapshot(row)
    still = sweep([snapshot], ctx.now, sla.policies, sla.calendar_map)
    if not any(s.key == signal.key for _, s in still):
        return False
    if not once.first_time(conn, "sla", f"{ticket_id}:{signal.key}", ctx.now):
        return False
    fired = snapshot.fired | {signal.key}
    touch(
        conn,
        ticket_id,
        ctx.now,
        sla_fired=sorted(fired),
        sla_next_check=next_check_of(replace(snapshot, fired=fired), sla),
    )
    target = signal.target.replace("_", " ")
    if signal.kind != BREACH:
        record(
            conn,
            ticket_id,
            at=ctx.now,
            actor="sla",
            kind="sla_warning",
            reason=f"{target} due {signal.due.isoformat()} (policy {signal.policy!r})",
            target=signal.target,
            due=signal.due.isoformat(),
            policy=signal.policy,
        )
        warning = SlaWarning(
            ticket_id, row.number, ctx.now, signal.target, signal.due, signal.policy
        )
        ctx.emit(conn, warning)
        return True
    record(
        conn,
        ticket_id,
        at=ctx.now,
        actor="sla",
        kind="sla_breach",
        reason=f"{target} was due {signal.due.isoformat()} (policy {signal.policy!r})",
        target=signal.target,
        due=signal.due.isoformat(),
        policy=signal.policy,
    )
    actions = _breach_actions(conn, ctx, row, policy_named(sla, signal.policy))
    ctx.emit(
        conn,
        SlaBreached(
            ticket_id, row.number, ctx.now, signal.target, signal.due, signal.policy, actions
        ),
    )
    return True


def _breach_actions(
    conn: Connection, ctx: UnitContext, row: Any, policy: SlaPolicy | None
) -> tuple[str, ...]:
    """The policy's ``raise_priority_to`` and ``reassign``; returns what was done, in words.
    The SLA policy itself stays: a raised priority calls for attention, not for new targets."""
    if policy is None:
        return ()
    done: list[str] = []
    raised = priority_after_breach(policy, row.priority)
    if raised is not None:
        touch(conn, row.id, ctx.now, priority=raised)
        record(
            conn,
            row.id,
            at=ctx.now,
            actor="sla",
            kind="updated",
            reason=f"SLA breach: policy {policy.name!r} raises the priority",
            priority=raised,
        )
        done.append(f"priority raised to {raised}")
    strategy = policy.on_breach.reassign
    if strategy is not None:
        team = conn.execute(select(teams.c.name).where(teams.c.id == row.team_id)).scalar()
        agent_id, name = assign_by_strategy(
            conn,
            ctx,
            row.id,
            row.team_id,
            team or "",
            strategy,
            exclude=row.assignee_id,
            actor="sla",
        )
        if agent_id is not None:
            ctx.emit(conn, TicketAssigned(row.id, row.number, ctx.now, agent_id, name, "sla"))
            done.append(f"reassigned to {name}")
        else:
            done.append(f"nobody to reassign to ({strategy})")
    return tuple(done)


def fire_all(conn: Connection, ctx: UnitContext, signals: Sequence[tuple[int, SlaSignal]]) -> int:
    """``fire`` for a batch of signals in one transaction; returns how many fired."""
    return sum(fire(conn, ctx, ticket_id, signal) for ticket_id, signal in signals)
