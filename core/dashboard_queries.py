"""The dashboard's two live views: tickets near or past an SLA target, and each agent's load.

Unlike the KPIs (core/reports.py) these read the present, not a period: what needs attention in
the next two hours, and who has room to take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, case, func, literal, or_, select, type_coerce

from core.persistence.models import Agent, Team, Ticket, UtcDateTime, table_of
from core.tickets import ACTIVE

tickets = table_of(Ticket)
agents = table_of(Agent)
teams = table_of(Team)

HORIZON = timedelta(hours=2)
QUEUE_LIMIT = 50
FIRST_RESPONSE, RESOLUTION = "first_response", "resolution"
_ACTIVE = sorted(s.value for s in ACTIVE)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    number: int
    subject: str
    priority: str
    status: str
    team: str | None
    assignee: str | None
    target: str  # FIRST_RESPONSE or RESOLUTION: the earliest one still running
    due: datetime
    minutes: int  # until due; negative: breached that many minutes ago
    paused: bool  # pending on the customer: the resolution clock is stopped

    @property
    def breached(self) -> bool:
        return self.minutes < 0


@dataclass(frozen=True, slots=True)
class AgentLoad:
    agent_id: int
    name: str
    team: str | None
    open_tickets: int
    max_open: int
    share: float  # open / max
    away: bool


def live_queue(
    conn: Connection, now: datetime, *, horizon: timedelta = HORIZON, limit: int = QUEUE_LIMIT
) -> list[QueueEntry]:
    """Active tickets whose first-response target (not answered yet) or resolution target (not
    resolved yet) is past or due within ``horizon``, the most urgent first, at most ``limit``."""
    edge = literal(now + horizon, UtcDateTime())
    waiting_answer = and_(
        tickets.c.first_response_at.is_(None), tickets.c.first_response_due.is_not(None)
    )
    waiting_resolution = and_(
        tickets.c.resolved_at.is_(None), tickets.c.resolution_due.is_not(None)
    )
    # the earlier of the targets still running: the one the ticket breaches first
    first_is_due = and_(
        waiting_answer,
        or_(~waiting_resolution, tickets.c.first_response_due <= tickets.c.resolution_due),
    )
    due = type_coerce(
        case((first_is_due, tickets.c.first_response_due), else_=tickets.c.resolution_due),
        UtcDateTime(),
    )
    target = case((first_is_due, literal(FIRST_RESPONSE)), else_=literal(RESOLUTION))
    rows = conn.execute(
        select(
            tickets.c.number,
            tickets.c.subject,
            tickets.c.priority,
            tickets.c.status,
            tickets.c.paused_since,
            teams.c.name.label("team"),
            agents.c.name.label("assignee"),
            target.label("target"),
            due.label("due"),
        )
        .select_from(tickets)
        .outerjoin(teams, teams.c.id == tickets.c.team_id)
        .outerjoin(agents, agents.c.id == tickets.c.assignee_id)
        .where(
            tickets.c.status.in_(_ACTIVE),
            or_(
                and_(waiting_answer, tickets.c.first_response_due <= edge),
                and_(waiting_resolution, tickets.c.resolution_due <= edge),
            ),
        )
        .order_by(due, tickets.c.number)
        .limit(limit)
    ).all()
    return [
        QueueEntry(
            number=int(r.number),
            subject=r.subject,
            priority=r.priority,
            status=r.status,
            team=r.team,
            assignee=r.assignee,
            target=r.target,
            due=r.due,
            minutes=_minutes_until(r.due, now),
            paused=r.paused_since is not None,
        )
        for r in rows
    ]


def _minutes_until(due: datetime, now: datetime) -> int:
    """Whole minutes, rounded towards "breached": due in 30 s is 0, breached 30 s ago is -1."""
    seconds = (due - now).total_seconds()
    return int(seconds // 60)


def agent_load(conn: Connection, now: datetime) -> list[AgentLoad]:
    """Every active agent with the active tickets assigned to them, the most loaded first.
    (``now`` keeps the signature of the other live view; the load has no time window.)"""
    open_count = (
        select(tickets.c.assignee_id, func.count().label("n"))
        .where(tickets.c.status.in_(_ACTIVE), tickets.c.assignee_id.is_not(None))
        .group_by(tickets.c.assignee_id)
        .subquery()
    )
    n = func.coalesce(open_count.c.n, 0)
    rows = conn.execute(
        select(
            agents.c.id,
            agents.c.name,
            teams.c.name.label("team"),
            n.label("n"),
            agents.c.max_open_tickets,
            agents.c.away,
        )
        .select_from(agents)
        .outerjoin(teams, teams.c.id == agents.c.team_id)
        .outerjoin(open_count, open_count.c.assignee_id == agents.c.id)
        .where(agents.c.active)
        .order_by(n.desc(), agents.c.name, agents.c.id)
    ).all()
    return [
        AgentLoad(
            agent_id=int(r.id),
            name=r.name,
            team=r.team,
            open_tickets=int(r.n),
            max_open=int(r.max_open_tickets),
            share=round(int(r.n) / max(int(r.max_open_tickets), 1), 3),
            away=bool(r.away),
        )
        for r in rows
    ]
