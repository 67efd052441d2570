"""What happens to a new ticket before anyone looks at it: the routing rules set its team,
priority and tags; a strategy may assign it; its SLA policy sets its due times; the knowledge
base is searched for articles that may answer it (none found is recorded as a KB gap).

``plan`` runs before the ticket row is written (its values go into the INSERT), ``settle`` after
(history, assignment). With no rules, no SLA policies and no articles nothing is queried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from core.assign import AgentLoad, AssignmentContext, WorkingHours, choose_agent, parse_days
from core.messages import InboundMessage
from core.persistence.models import Agent, Customer, Team, Ticket, table_of
from core.persistence.prepared import Prepared
from core.persistence.records import record
from core.reports import normalize_question
from core.routing import Fired, RoutingInput, render_auto_reply, route
from core.sla import SlaSettings, SlaSnapshot, choose_policy, due_times, next_check
from core.tickets import Priority, TicketStatus
from core.views import UnitContext

agents = table_of(Agent)
customers = table_of(Customer)
teams = table_of(Team)
tickets = table_of(Ticket)

OPEN_STATUSES = (TicketStatus.NEW.value, TicketStatus.OPEN.value, TicketStatus.PENDING.value)

_ATTRIBUTES = Prepared(select(customers.c.attributes).where(customers.c.id == bindparam("id")))


@dataclass(frozen=True, slots=True)
class Triage:
    team: str
    priority: str = Priority.NORMAL.value
    tags: tuple[str, ...] = ()
    assign: str | None = None
    auto_reply: str | None = None
    notify: tuple[str, ...] = ()
    fired: tuple[Fired, ...] = ()
    customer: dict[str, Any] | None = None  # the customer's attributes, when they were read
    sla_policy: str | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    sla_next_check: datetime | None = None
    suggestions: tuple[tuple[str, str], ...] = ()
    kb_gap: str | None = None  # the question no article answered

    def auto_reply_text(self, number: int, name: str, subject: str) -> str | None:
        if self.auto_reply is None:
            return None
        return render_auto_reply(self.auto_reply, number=number, name=name, subject=subject)


def customer_attributes(conn: Connection, customer_id: int) -> dict[str, Any]:
    value = _ATTRIBUTES.run(conn, {"id": customer_id}).scalar()
    return value if isinstance(value, dict) else {}


def tier_of(attributes: dict[str, Any]) -> str | None:
    """The customer's service tier (``attributes.tier``), lower-cased, as SLA policies name it."""
    tier = attributes.get("tier")
    return tier.strip().lower() if isinstance(tier, str) and tier.strip() else None


def plan(
    conn: Connection,
    ctx: UnitContext,
    msg: InboundMessage,
    customer_id: int,
    team: str,
    subject: str,
) -> Triage:
    """Routing, SLA due times and KB suggestions for a ticket about to be opened at ``ctx.now``."""
    settings = ctx.settings
    rules, sla = settings.rules, settings.sla
    # the customer's attributes matter to routing rules and to policies that name tiers
    needs_customer = bool(rules) or any(p.tiers for p in sla.policies)
    attributes = customer_attributes(conn, customer_id) if needs_customer else None
    triage = Triage(team=team, customer=attributes)
    if rules:
        decision = route(
            rules,
            RoutingInput(
                channel=msg.channel.value,
                received_at=ctx.now,
                subject=subject,
                body=msg.body,
                inbox=msg.inbox,
                language=msg.language,
                customer=attributes or {},
            ),
        )
        triage = Triage(
            team=decision.team or team,
            priority=(decision.priority or Priority.NORMAL).value,
            tags=tuple(sorted(set(decision.tags))),
            assign=decision.assign,
            auto_reply=decision.auto_reply,
            notify=decision.notify,
            fired=decision.fired,
            customer=attributes,
        )
    if sla.policies:
        triage = _with_sla(triage, sla, ctx.now)
    if not (msg.auto_submitted or msg.bounce is not None) and ctx.kb is not None and ctx.kb:
        found = ctx.kb.suggest(
            f"{subject}\n{msg.body}", msg.language, limit=settings.bots.kb_suggestions
        )
        if found:
            suggestions = tuple((s.slug, s.title) for s in found)
            triage = replace(triage, suggestions=suggestions)
        elif question := normalize_question(subject or msg.body):
            triage = replace(triage, kb_gap=question)
    return triage


def _with_sla(triage: Triage, sla: SlaSettings, opened_at: datetime) -> Triage:
    policy = choose_policy(sla.policies, triage.priority, tier_of(triage.customer or {}))
    if policy is None:
        return triage
    calendar = sla.calendar_for(policy)
    first_response, resolution = due_times(policy, calendar, opened_at)
    snapshot = SlaSnapshot(
        0,
        opened_at,
        policy=policy.name,
        first_response_due=first_response,
        resolution_due=resolution,
    )
    return replace(
        triage,
        sla_policy=policy.name,
        first_response_due=first_response,
        resolution_due=resolution,
        sla_next_check=next_check(snapshot, calendar, policy),
    )


def settle(
    conn: Connection, ctx: UnitContext, ticket_id: int, team_id: int | None, triage: Triage
) -> tuple[int | None, str | None]:
    """After the ticket row exists: history of the rules that fired, the SLA policy, the KB gap,
    and the assignment. Returns the assignee's (id, name), or (None, None)."""
    for fired in triage.fired:
        record(
            conn,
            ticket_id,
            at=ctx.now,
            actor="routing",
            kind="routed",
            reason=f"routing rule {fired.rule!r} fired: {fired.reason}",
            rule=fired.rule,
        )
    if triage.sla_policy is not None:
        record(
            conn,
            ticket_id,
            at=ctx.now,
            actor="sla",
            kind="sla_policy",
            reason=f"SLA policy {triage.sla_policy!r} applies",
            policy=triage.sla_policy,
            first_response_due=_iso(triage.first_response_due),
            resolution_due=_iso(triage.resolution_due),
        )
    if triage.kb_gap is not None:
        record(conn, ticket_id, at=ctx.now, actor="kb", kind="kb_gap", question=triage.kb_gap)
    if triage.assign is None:
        return None, None
    return assign_by_strategy(conn, ctx, ticket_id, team_id, triage.team, triage.assign, triage)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def assign_by_strategy(
    conn: Connection,
    ctx: UnitContext,
    ticket_id: int,
    team_id: int | None,
    team: str,
    strategy: str,
    triage: Triage | None = None,
    *,
    exclude: int | None = None,
    actor: str = "routing",
) -> tuple[int | None, str | None]:
    """Pick an agent of the ticket's team by ``strategy`` and assign them; nobody found leaves
    the ticket in the team queue. Either way the history says why."""
    if team_id is None:
        record(
            conn,
            ticket_id,
            at=ctx.now,
            actor=actor,
            kind="assignment",
            reason=f"{strategy}: the ticket has no team; left in the general queue",
            strategy=strategy,
        )
        return None, None
    pool = [a for a in candidates(conn, team_id, team) if a.agent_id != exclude]
    if triage is None:
        ticket = conn.execute(
            select(tickets.c.tags, tickets.c.customer_id).where(tickets.c.id == ticket_id)
        ).one()
        tags, attributes = tuple(ticket.tags or ()), customer_attributes(conn, ticket.customer_id)
    else:
        tags, attributes = triage.tags, triage.customer or {}
    region = attributes.get("region")
    last = conn.execute(select(teams.c.last_assigned_id).where(teams.c.id == team_id)).scalar()
    result = choose_agent(
        strategy,
        pool,
        AssignmentContext(
            now=ctx.now,
            team=team,
            last_assigned_id=last,
            ticket_tags=tags,
            customer_region=region.strip().lower() if isinstance(region, str) else "",
        ),
    )
    name = next((a.name for a in pool if a.agent_id == result.agent_id), None)
    if result.agent_id is not None:
        conn.execute(
            update(tickets)
            .where(tickets.c.id == ticket_id)
            .values(assignee_id=result.agent_id, updated_at=ctx.now)
        )
        conn.execute(
            update(teams).where(teams.c.id == team_id).values(last_assigned_id=result.agent_id)
        )
    record(
        conn,
        ticket_id,
        at=ctx.now,
        actor=actor,
        kind="assigned" if result.agent_id is not None else "assignment",
        reason=result.reason,
        strategy=strategy,
        agent_id=result.agent_id,
        agent=name,
    )
    return result.agent_id, name


_OPEN_COUNT = (
    select(func.count())
    .where(tickets.c.assignee_id == agents.c.id, tickets.c.status.in_(OPEN_STATUSES))
    .correlate(agents)
    .scalar_subquery()
)


def candidates(conn: Connection, team_id: int, team: str) -> list[AgentLoad]:
    """The team's active agents with their open tickets counted (assignment's input)."""
    rows = conn.execute(
        select(agents, _OPEN_COUNT.label("open_tickets"))
        .where(agents.c.team_id == team_id, agents.c.active.is_(True))
        .order_by(agents.c.id)
    ).all()
    return [
        AgentLoad(
            agent_id=row.id,
            name=row.name,
            team=team,
            skills=frozenset(s.lower() for s in row.skills or ()),
            region=(row.region or "").lower(),
            open_tickets=int(row.open_tickets),
            max_open=row.max_open_tickets,
            available=not row.away,
            working_hours=working_hours(row),
        )
        for row in rows
    ]


def working_hours(row: Any) -> WorkingHours | None:
    """An agent's stored shift; None = always on. Values are checked when they are set."""
    days = [d for d in (row.working_days or "").split(",") if d.strip()]
    if not days and not row.working_hours:
        return None
    parse_days(days)  # a bad stored value fails loudly rather than assigning off shift
    return WorkingHours.parse(row.timezone or "UTC", days, row.working_hours or "")
