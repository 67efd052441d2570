"""KPIs as SQL aggregates: each one a function of (connection, ReportFilter) -> a dataclass.

Every KPI is one or two statements whose work grows with the period, not with the history: the
period's rows are found through the indexes of migration 0004 (``bench/reports.py`` measures the
dashboard over 1,000,000 tickets). Statements are the same on SQLite and PostgreSQL except for
two expressions compiled per dialect (a duration in seconds, a JSON column's text). Per-row
work is kept to reading indexed columns: no per-row JSON parsing, date formatting or window
function (each was measured as the bulk of a KPI's time on SQLite).

Which tickets a KPI counts (the period is ``since <= t < until``, in UTC):

* *opened* in the period (``created_at``): first response time, SLA attainment, reopen rate,
  KB deflection;
* *resolved* in the period (``resolved_at``, the latest resolution): resolution time,
  first-contact resolution, CSAT response rate;
* answers given in the period (``survey_responses.created_at``): CSAT average, NPS;
* events in the period: KB gaps, time in each status (a stay clipped to the period).

Team, agent (the current assignee), channel and priority filters apply to the ticket in every
KPI. Percentiles are nearest-rank (the smallest value with at least p% of the values at or below
it), picked from the period's values sorted here, so both backends return the very same numbers.

KB gaps read ``ticket_events`` rows of kind ``"kb_gap"`` with ``data = {"question": ...}``: the
intake must record one, with ``normalize_question(text)``, when a ticket's first inbound message
got no knowledge-base suggestion (not wired yet: until then the list is empty).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Select,
    String,
    and_,
    case,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from core.errors import InvalidInput
from core.persistence.models import (
    Agent,
    SurveyResponse,
    Team,
    Ticket,
    TicketEvent,
    UtcDateTime,
    table_of,
)
from core.tickets import ACTIVE, TicketStatus

tickets = table_of(Ticket)
history = table_of(TicketEvent)
responses = table_of(SurveyResponse)
teams = table_of(Team)
agents = table_of(Agent)

MAX_PERIOD = timedelta(days=366)
MAX_QUESTION = 200


# -- the filter ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """The period ``[since, until)`` (aware datetimes) and optional ticket filters."""

    since: datetime
    until: datetime
    team: str | None = None
    agent_id: int | None = None
    channel: str | None = None
    priority: str | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            if getattr(self, name).tzinfo is None:
                raise InvalidInput(f"{name} must carry a time zone (e.g. 2026-03-01T00:00Z)", name)
        if self.since >= self.until:
            raise InvalidInput("since must be before until", "since")
        # bounded work per report: the queries scan the period's rows
        if self.until - self.since > MAX_PERIOD:
            raise InvalidInput(f"the period is longer than {MAX_PERIOD.days} days", "since")

    @classmethod
    def last(cls, days: int, now: datetime, **filters: Any) -> ReportFilter:
        return cls(now - timedelta(days=days), now, **filters)


def check_filter(conn: Connection, f: ReportFilter) -> None:
    """InvalidInput naming the field when the team or the agent does not exist."""
    if (
        f.team is not None
        and conn.execute(select(teams.c.id).where(teams.c.name == f.team)).first() is None
    ):
        raise InvalidInput(f"unknown team {f.team!r}", "team")
    if (
        f.agent_id is not None
        and conn.execute(select(agents.c.id).where(agents.c.id == f.agent_id)).first() is None
    ):
        raise InvalidInput(f"unknown agent {f.agent_id}", "agent")


def _ticket_filters(f: ReportFilter) -> list[ColumnElement[bool]]:
    # "+ 0": the period's index must drive the query; SQLite's planner (without ANALYZE
    # statistics) otherwise walks a team's or agent's whole history through their index
    # (measured: 3-10x slower over a year of tickets).
    where: list[ColumnElement[bool]] = []
    if f.team is not None:
        team_id = select(teams.c.id).where(teams.c.name == f.team).scalar_subquery()
        where.append(tickets.c.team_id + 0 == team_id)
    if f.agent_id is not None:
        where.append(tickets.c.assignee_id + 0 == f.agent_id)
    if f.channel is not None:
        where.append(tickets.c.channel == f.channel)
    if f.priority is not None:
        where.append(tickets.c.priority == f.priority)
    return where


def _in_period(column: Any, f: ReportFilter) -> list[ColumnElement[bool]]:
    return [column >= f.since, column < f.until]


def _opened(f: ReportFilter) -> list[ColumnElement[bool]]:
    return [*_in_period(tickets.c.created_at, f), *_ticket_filters(f)]


def _resolved(f: ReportFilter) -> list[ColumnElement[bool]]:
    return [*_in_period(tickets.c.resolved_at, f), *_ticket_filters(f)]


def _moment(value: datetime) -> Any:
    return literal(value, UtcDateTime())


# -- two expressions compiled per dialect ----------------------------------------------------


class seconds_between(FunctionElement[float]):
    """``later - earlier`` in seconds (a float)."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


@compiles(seconds_between, "postgresql")
def _seconds_pg(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS FLOAT)"


class json_text(FunctionElement[str]):
    """A JSON column's stored text, as a string (groupable: PostgreSQL's ``json`` is not)."""

    type = String()
    inherit_cache = True
    name = "json_text"


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # stored as TEXT already


@compiles(json_text, "postgresql")
def _json_text_pg(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)}) AS TEXT)"


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _secs(value: Any) -> float | None:
    # julianday arithmetic is exact to ~50 us; milliseconds are all a report shows
    return None if value is None else round(float(value), 3)


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds: how many tickets, the mean, the median and the 90th percentile."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None


@dataclass(frozen=True, slots=True)
class FirstContactResolution:
    resolved: int  # resolved in the period
    answered: int  # ... with at least one agent reply: the denominator
    first_contact: int  # ... with exactly one agent reply and never reopened
    rate: float | None


@dataclass(frozen=True, slots=True)
class Attainment:
    met: int
    breached: int
    pending: int  # due time not reached yet and no answer/resolution yet
    rate: float | None  # met / (met + breached)


@dataclass(frozen=True, slots=True)
class SlaAttainment:
    first_response: Attainment
    resolution: Attainment


@dataclass(frozen=True, slots=True)
class DayFlow:
    day: date
    created: int
    resolved: int
    backlog: int  # unresolved tickets at the end of the day (at ``until`` for the last day)


@dataclass(frozen=True, slots=True)
class Flow:
    created: int
    resolved: int
    backlog_start: int
    backlog_end: int
    days: list[DayFlow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reopens:
    resolved: int  # opened in the period and resolved at least once
    reopened: int  # ... and reopened at least once
    rate: float | None


@dataclass(frozen=True, slots=True)
class StatusTime:
    status: str
    visits: int  # stays in the status that overlap the period
    total_seconds: float  # ticket-seconds in the status within the period
    mean_seconds: float  # per visit, clipped to the period


@dataclass(frozen=True, slots=True)
class Csat:
    responses: int
    average: float | None
    surveyed: int  # resolved in the period by an agent (a survey went out)
    answered: int  # ... that got a CSAT answer
    response_rate: float | None


@dataclass(frozen=True, slots=True)
class Nps:
    responses: int
    promoters: int  # 9-10
    passives: int  # 7-8
    detractors: int  # 0-6
    score: float | None  # % promoters - % detractors, -100..100


@dataclass(frozen=True, slots=True)
class Deflection:
    opened: int
    deflected: int  # resolved by the customer with a KB article
    rate: float | None


@dataclass(frozen=True, slots=True)
class KbGap:
    question: str
    count: int
    tickets: int
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class Dashboard:
    filter: ReportFilter
    first_response: Durations
    resolution: Durations
    first_contact_resolution: FirstContactResolution
    sla: SlaAttainment
    flow: Flow
    reopens: Reopens
    time_in_status: list[StatusTime]
    csat: Csat
    nps: Nps
    deflection: Deflection
    kb_gaps: list[KbGap]


# -- the KPIs --------------------------------------------------------------------------------


def _distribution(conn: Connection, value: Any, where: list[ColumnElement[bool]]) -> Durations:
    """count, mean, p50, p90 of ``value`` over the rows matching ``where``.

    One unordered read of the period's values, ranked here: a window function (``row_number()
    OVER (ORDER BY v)``) made SQLite buffer and sort every row through its generic record
    sorter, ~4x the cost of reading the floats and sorting them in Python (measured over the
    ~80,000 tickets of 30 days, see bench/reports.py). Same numbers on both backends.
    """
    values = sorted(float(v) for v in conn.execute(select(value).where(*where)).scalars())
    n = len(values)
    if not n:
        return Durations(0, None, None, None)
    # nearest rank: the ceil(p * n)-th value, ceil in integer arithmetic
    return Durations(
        n,
        _secs(math.fsum(values) / n),
        _secs(values[(n + 1) // 2 - 1]),
        _secs(values[(9 * n + 9) // 10 - 1]),
    )


def first_response(conn: Connection, f: ReportFilter) -> Durations:
    """Time from opening to the first agent reply, of the answered tickets opened in the period."""
    return _distribution(
        conn,
        seconds_between(tickets.c.first_response_at, tickets.c.created_at),
        [*_opened(f), tickets.c.first_response_at.is_not(None)],
    )


def resolution(conn: Connection, f: ReportFilter) -> Durations:
    """Time from opening to the (latest) resolution, of the tickets resolved in the period."""
    return _distribution(
        conn, seconds_between(tickets.c.resolved_at, tickets.c.created_at), _resolved(f)
    )


def first_contact_resolution(conn: Connection, f: ReportFilter) -> FirstContactResolution:
    """Of the tickets resolved in the period with an agent reply: resolved after exactly one
    reply and never reopened."""
    replies = (
        select(func.count())
        .where(history.c.ticket_id == tickets.c.id, history.c.kind == "replied")
        .scalar_subquery()
    )
    # MATERIALIZED: inlined, the correlated count would run once per reference below
    # (measured: twice the probes into the history)
    t = (
        select(replies.label("replies"), tickets.c.reopen_count)
        .where(*_resolved(f))
        .cte("per_ticket")
        .prefix_with("MATERIALIZED")
    )
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((t.c.replies > 0, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((and_(t.c.replies == 1, t.c.reopen_count == 0), 1), else_=0)), 0
            ),
        )
    ).one()
    resolved, answered, first = (int(v) for v in row)
    return FirstContactResolution(resolved, answered, first, _rate(first, answered))


def _attainment(met: int, breached: int, pending: int) -> Attainment:
    return Attainment(met, breached, pending, _rate(met, met + breached))


def sla_attainment(conn: Connection, f: ReportFilter) -> SlaAttainment:
    """Of the tickets opened in the period with a due time: met when answered (resolved) at or
    before it; breached when later, or still not done at ``until`` with the due time past."""
    until = _moment(f.until)

    def counts(done: Any, due: Any) -> list[Any]:
        met = and_(done.is_not(None), done <= due)
        breached = or_(done > due, and_(done.is_(None), due < until))
        pending = and_(done.is_(None), due >= until)
        return [func.coalesce(func.sum(case((c, 1), else_=0)), 0) for c in (met, breached, pending)]

    row = conn.execute(
        select(
            *counts(tickets.c.first_response_at, tickets.c.first_response_due),
            *counts(tickets.c.resolved_at, tickets.c.resolution_due),
        ).where(*_opened(f))
    ).one()
    n = [int(v) for v in row]
    return SlaAttainment(_attainment(*n[:3]), _attainment(*n[3:]))


def flow(conn: Connection, f: ReportFilter) -> Flow:
    """Created and resolved per UTC day, and the backlog (unresolved tickets) at each day's end.

    The backlog at ``since`` is derived from now backwards (unresolved now, minus those created
    since, plus those resolved since), so the statement reads the period's rows and the few open
    tickets, never the whole history. A ticket counts as unresolved from its creation to its
    latest resolution.

    Each day is a range count over the ``created_at`` and ``resolved_at`` indexes (day bounds
    computed here), not a GROUP BY of a per-row ``date()``: no function call and no sort per
    ticket (measured: ~5x faster unfiltered).
    """
    filters = _ticket_filters(f)
    # [since, first midnight), whole days..., [last midnight, until), then [until, now]
    bounds = [f.since]
    midnight = datetime.combine(f.since.astimezone(UTC).date(), time(), UTC)
    while (midnight := midnight + timedelta(days=1)) < f.until:
        bounds.append(midnight)
    bounds.append(f.until)

    def counts(column: Any) -> list[Any]:
        def between(lo: datetime, hi: datetime | None) -> Any:
            where = [column >= _moment(lo), *filters]
            if hi is not None:
                where.append(column < _moment(hi))
            return select(func.count()).where(*where).scalar_subquery()

        ranges = [*pairwise(bounds), (f.until, None)]
        return [between(lo, hi) for lo, hi in ranges]

    open_now = select(func.count()).where(tickets.c.resolved_at.is_(None), *filters)
    row = conn.execute(
        select(
            *counts(tickets.c.created_at),
            *counts(tickets.c.resolved_at),
            open_now.scalar_subquery(),
        )
    ).one()
    days_n = len(bounds) - 1
    created, resolved = [int(v) for v in row[: days_n + 1]], [int(v) for v in row[days_n + 1 : -1]]
    backlog = int(row[-1]) - sum(created) + sum(resolved)
    start, days = backlog, []
    for i in range(days_n):
        backlog += created[i] - resolved[i]
        day = bounds[i].astimezone(UTC).date()
        days.append(DayFlow(day, created[i], resolved[i], backlog))
    return Flow(
        created=sum(d.created for d in days),
        resolved=sum(d.resolved for d in days),
        backlog_start=start,
        backlog_end=backlog,
        days=days,
    )


def reopen_rate(conn: Connection, f: ReportFilter) -> Reopens:
    """Of the tickets opened in the period and resolved at least once: reopened at least once."""
    ever_resolved = or_(tickets.c.resolved_at.is_not(None), tickets.c.reopen_count > 0)
    row = conn.execute(
        select(
            func.coalesce(func.sum(case((ever_resolved, 1), else_=0)), 0),
            func.coalesce(func.sum(case((tickets.c.reopen_count > 0, 1), else_=0)), 0),
        ).where(*_opened(f))
    ).one()
    resolved, reopened = int(row[0]), int(row[1])
    return Reopens(resolved, reopened, _rate(reopened, resolved))


def time_in_status(conn: Connection, f: ReportFilter) -> list[StatusTime]:
    """Ticket time spent in each active status (new, open, pending) within the period.

    Every status change is an event leaving ``previous`` and entering ``current`` (opening
    enters "new"), so the time in S over the period is, without pairing events up,
    ``n(since) * L + sum(until - at, entries in the period) - sum(until - at, exits in it)``,
    where ``n(since)``, the tickets in S at ``since``, is the tickets in S now minus the entries
    since plus the exits since. One ordered pass over the period's events (the ``(kind, at)``
    index) and a count of the few active tickets, instead of a window function over every
    ticket's history (measured: 10x slower, see bench/reports.py). A visit is a stay in the
    status that overlaps the period; its time is clipped to the period.

    Status changes are grouped by their stored JSON text, which takes a handful of values,
    and each group's text is decoded here: extracting two JSON fields per event in SQL was
    most of the cost (measured: 2.5x slower). Openings need no data (index only).
    """
    until = _moment(f.until)
    inside = history.c.at < until

    def sums(kind: str, *columns: Any) -> Select[Any]:
        return select(
            literal(kind),
            *columns,
            func.count(),
            func.coalesce(func.sum(case((inside, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((inside, seconds_between(until, history.c.at)), else_=0.0)), 0.0
            ),
        ).where(history.c.kind == kind, history.c.at >= f.since)

    data = json_text(history.c.data)
    opened, changed = sums("opened", literal("")), sums("status", data).group_by(data)
    now_query = select(tickets.c.status, func.count()).where(
        tickets.c.status.in_(sorted(s.value for s in ACTIVE))
    )
    if filters := _ticket_filters(f):
        on = tickets.c.id == history.c.ticket_id
        opened = opened.join(tickets, on).where(*filters)
        changed = changed.join(tickets, on).where(*filters)
        now_query = now_query.where(*filters)
    events = []
    for kind, text, n, n_inside, rest in conn.execute(union_all(opened, changed)):
        if kind == "opened":
            events.append((TicketStatus.NEW.value, "", n, n_inside, rest))
        else:
            change = json.loads(text) if text else {}
            events.append((change.get("current"), change.get("previous"), n, n_inside, rest))
    in_status_now = dict(conn.execute(now_query.group_by(tickets.c.status)).tuples().all())
    active = (TicketStatus.NEW.value, TicketStatus.OPEN.value, TicketStatus.PENDING.value)
    since_entries = {s: 0 for s in active}
    since_exits = dict(since_entries)
    entries = dict(since_entries)
    seconds: dict[str, float] = {s: 0.0 for s in active}
    for into, out_of, n, n_inside, rest in events:
        if into in since_entries:
            since_entries[into] += int(n)
            entries[into] += int(n_inside)
            seconds[into] += float(rest)
        if out_of in since_exits:
            since_exits[out_of] += int(n)
            seconds[out_of] -= float(rest)
    length = (f.until - f.since).total_seconds()
    out = []
    for s in active:
        at_since = int(in_status_now.get(s, 0)) - since_entries[s] + since_exits[s]
        total = at_since * length + seconds[s]
        visits = at_since + entries[s]
        out.append(
            StatusTime(s, visits, round(total, 3), round(total / visits, 3) if visits else 0.0)
        )
    return out


def _answers(kind: str, f: ReportFilter) -> Select[Any]:
    return (
        select(responses.c.score)
        .join(tickets, tickets.c.id == responses.c.ticket_id)
        .where(
            responses.c.kind == kind, *_in_period(responses.c.created_at, f), *_ticket_filters(f)
        )
    )


def csat(conn: Connection, f: ReportFilter) -> Csat:
    """The average CSAT (1-5) answered in the period, and the share of the tickets resolved by an
    agent in the period whose survey was answered."""
    answers = _answers("csat", f).subquery()
    count, average = conn.execute(select(func.count(), func.avg(answers.c.score))).one()
    deflected = exists().where(history.c.ticket_id == tickets.c.id, history.c.kind == "deflected")
    answered = exists().where(responses.c.ticket_id == tickets.c.id, responses.c.kind == "csat")
    surveyed, got = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((answered, 1), else_=0)), 0)).where(
            *_resolved(f), ~deflected
        )
    ).one()
    return Csat(
        int(count),
        None if average is None else round(float(average), 3),
        int(surveyed),
        int(got),
        _rate(int(got), int(surveyed)),
    )


def nps(conn: Connection, f: ReportFilter) -> Nps:
    """Net Promoter Score of the answers given in the period."""
    answers = _answers("nps", f).subquery()
    score = answers.c.score
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((score >= 9, 1), else_=0)), 0),
            func.coalesce(func.sum(case((and_(score >= 7, score <= 8), 1), else_=0)), 0),
            func.coalesce(func.sum(case((score <= 6, 1), else_=0)), 0),
        )
    ).one()
    n, promoters, passives, detractors = (int(v) for v in row)
    value = round(100.0 * (promoters - detractors) / n, 1) if n else None
    return Nps(n, promoters, passives, detractors, value)


def deflection(conn: Connection, f: ReportFilter) -> Deflection:
    """Of the tickets opened in the period, the share the customer resolved with a KB article."""
    deflected = exists().where(history.c.ticket_id == tickets.c.id, history.c.kind == "deflected")
    opened, hits = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((deflected, 1), else_=0)), 0)).where(
            *_opened(f)
        )
    ).one()
    return Deflection(int(opened), int(hits), _rate(int(hits), int(opened)))


def normalize_question(text: str) -> str:
    """What the intake records as a KB gap's question: case-folded, whitespace collapsed,
    surrounding punctuation dropped, at most 200 characters (so repeats group together)."""
    folded = " ".join(text.casefold().split())
    return re.sub(r"^[\W_]+|[\W_]+$", "", folded)[:MAX_QUESTION]


def kb_gaps(conn: Connection, f: ReportFilter, limit: int = 10) -> list[KbGap]:
    """The most frequent questions of the period for which the KB had no suggestion."""
    question = func.lower(func.trim(history.c.data["question"].as_string()))
    query = select(
        question.label("q"),
        func.count().label("n"),
        func.count(history.c.ticket_id.distinct()),
        func.max(history.c.at),
    ).where(history.c.kind == "kb_gap", *_in_period(history.c.at, f))
    if filters := _ticket_filters(f):
        query = query.join(tickets, tickets.c.id == history.c.ticket_id).where(*filters)
    rows = conn.execute(
        query.group_by(question).order_by(literal_column("n").desc(), question).limit(limit)
    ).all()
    return [KbGap(str(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows if r[0]]


KPIS: dict[str, Callable[[Connection, ReportFilter], Any]] = {
    "first-response": first_response,
    "resolution": resolution,
    "first-contact-resolution": first_contact_resolution,
    "sla": sla_attainment,
    "flow": flow,
    "reopens": reopen_rate,
    "time-in-status": time_in_status,
    "csat": csat,
    "nps": nps,
    "deflection": deflection,
    "kb-gaps": kb_gaps,
}


def all_kpis(conn: Connection, f: ReportFilter) -> Dashboard:
    """Everything the dashboard shows, read in the caller's one transaction (one snapshot)."""
    return Dashboard(
        filter=f,
        first_response=first_response(conn, f),
        resolution=resolution(conn, f),
        first_contact_resolution=first_contact_resolution(conn, f),
        sla=sla_attainment(conn, f),
        flow=flow(conn, f),
        reopens=reopen_rate(conn, f),
        time_in_status=time_in_status(conn, f),
        csat=csat(conn, f),
        nps=nps(conn, f),
        deflection=deflection(conn, f),
        kb_gaps=kb_gaps(conn, f),
    )
