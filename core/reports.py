"""KPIs as SQL aggregates: each one a function of (connection, ReportFilter) -> a dataclass.

Every KPI is a few statements whose work grows with the period, not with the history, and reads
covering indexes only (migration 0006; ``bench/reports.py`` measures the dashboard over
1,000,000 tickets). What would cost per-row work is written when the ticket changes: the
seconds to the first response and to the resolution, the agent replies and the deflected flag
on ``tickets``, a status change's previous and current status on ``ticket_events`` (see
``core.persistence.records.record``, ``core.desk``, ``core.intake``, ``core.proactive``).
Statements are the same on SQLite and PostgreSQL except for one expression compiled per dialect
(a duration in seconds). No per-row JSON parsing, date formatting, window function or sort
(each was measured as the bulk of a KPI's time on SQLite), and as few aggregates per row as
possible: on SQLite each SUM costs about as much as reading the index entry.

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
intake records one (``core.triage``) when a new ticket's message got no knowledge-base
suggestion.

``all_kpis`` reads every KPI in the caller's one transaction (one snapshot: the CLI, the
digest). ``read_all_kpis`` is the dashboard's: two groups of KPIs of about equal cost, each in
its own read transaction, at the same time. SQLite runs a statement without Python's GIL, so
on two cores the dashboard answers in about 60% of the time; each KPI is still consistent in
itself, and the two snapshots are a few milliseconds apart.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Select,
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
from core.persistence.database import Database
from core.persistence.models import (
    Agent,
    SurveyResponse,
    Team,
    Ticket,
    TicketEvent,
    UtcDateTime,
    table_of,
)
from core.tickets import TicketStatus

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


# Two counts in one SUM (the low and high 32 bits): on SQLite every aggregate is a function
# call per row, and splitting the SLA's six SUMs this way made it ~2.5x faster.
_HIGH = 1 << 32


def _counts(low: ColumnElement[bool], high: ColumnElement[bool]) -> Any:
    """One aggregate counting the rows where ``low`` holds, and (the others) where ``high``."""
    return func.coalesce(
        func.sum(case((low, literal_column("1")), (high, literal_column(str(_HIGH))))), 0
    )


def _split(packed: Any) -> tuple[int, int]:
    value = int(packed)
    return value % _HIGH, value // _HIGH


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
    values = sorted(_column(conn, select(value).where(*where, value.is_not(None))))
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


def _column(conn: Connection, query: Select[Any]) -> list[Any]:
    """The values of the query's one column (no result processing needed).

    On SQLite, inside a transaction, read from the DBAPI cursor of the same connection (as
    ``core.persistence.prepared`` does): SQLAlchemy's result rows cost twice the query itself
    over the ~80,000 values of 30 days."""
    if conn.dialect.name != "sqlite" or not conn.in_transaction():
        return list(conn.execute(query).scalars())
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    process = cast(dict[str, Callable[[Any], Any]], compiled._bind_processors)
    values = [
        process[name](params[name]) if name in process else params[name]
        for name in compiled.positiontup or ()
    ]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return [v for (v,) in cursor.execute(compiled.string, values)]
    finally:
        cursor.close()


def first_response(conn: Connection, f: ReportFilter) -> Durations:
    """Time from opening to the first agent reply, of the answered tickets opened in the period."""
    return _distribution(conn, tickets.c.first_response_seconds, _opened(f))


def resolution(conn: Connection, f: ReportFilter) -> Durations:
    """Time from opening to the (latest) resolution, of the tickets resolved in the period."""
    return _distribution(conn, tickets.c.resolution_seconds, _resolved(f))


def first_contact_resolution(conn: Connection, f: ReportFilter) -> FirstContactResolution:
    """Of the tickets resolved in the period with an agent reply: resolved after exactly one
    reply and never reopened."""
    replies = tickets.c.agent_replies
    first = and_(replies == 1, tickets.c.reopen_count == 0)
    resolved, packed = conn.execute(
        select(func.count(), _counts(first, replies > 0)).where(*_resolved(f))
    ).one()
    first_contact, others = _split(packed)
    answered = first_contact + others
    return FirstContactResolution(
        int(resolved), answered, first_contact, _rate(first_contact, answered)
    )


def _attainment(met: int, breached: int, pending: int) -> Attainment:
    return Attainment(met, breached, pending, _rate(met, met + breached))


def sla_attainment(conn: Connection, f: ReportFilter) -> SlaAttainment:
    """Of the tickets opened in the period with a due time: met when answered (resolved) at or
    before it; breached when later, or still not done at ``until`` with the due time past."""
    until = _moment(f.until)

    def counts(done: Any, due: Any) -> list[Any]:
        # with a due time, a ticket is met, breached or else pending: two counts and the total
        return [_counts(done <= due, or_(done > due, due < until)), func.count(due)]

    row = conn.execute(
        select(
            *counts(tickets.c.first_response_at, tickets.c.first_response_due),
            *counts(tickets.c.resolved_at, tickets.c.resolution_due),
        ).where(*_opened(f))
    ).one()

    def attainment(packed: Any, due: Any) -> Attainment:
        met, breached = _split(packed)
        return _attainment(met, breached, int(due) - met - breached)

    return SlaAttainment(attainment(row[0], row[1]), attainment(row[2], row[3]))


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
    reopened = tickets.c.reopen_count > 0
    (packed,) = conn.execute(
        select(_counts(reopened, tickets.c.resolved_at.is_not(None))).where(*_opened(f))
    ).one()
    again, once = _split(packed)
    return Reopens(again + once, again, _rate(again, again + once))


_STATUSES = [s.value for s in TicketStatus]
_ACTIVE = (TicketStatus.NEW.value, TicketStatus.OPEN.value, TicketStatus.PENDING.value)


def time_in_status(conn: Connection, f: ReportFilter) -> list[StatusTime]:
    """Ticket time spent in each active status (new, open, pending) within the period.

    Every status change is an event leaving ``previous_status`` and entering ``current_status``
    (opening enters "new"), so the time in S over the period is, without pairing events up,
    ``n(since) * L + sum(until - at, entries in the period) - sum(until - at, exits in it)``,
    where ``n(since)``, the tickets in S at ``since``, is the tickets in S now minus the entries
    since plus the exits since. A visit is a stay in the status that overlaps the period; its
    time is clipped to the period.

    Unfiltered, per status: seeks into the ``(kind, current_status, previous_status, at)``
    index, one per status pair (the statuses are enumerated), so the period's changes are
    read once, index-only, already grouped (a GROUP BY sorted them: 4x slower). Filtered: see
    ``_filtered_changes``.
    """
    length = (f.until - f.since).total_seconds()
    changes = _status_changes(conn, f)
    now_query = select(tickets.c.status, func.count()).where(tickets.c.status.in_(_ACTIVE))
    now_query = now_query.where(*_ticket_filters(f)).group_by(tickets.c.status)
    in_status_now = dict(conn.execute(now_query).tuples().all())
    out = []
    for s in _ACTIVE:
        entries, entries_inside, exits, seconds = changes[s]
        at_since = int(in_status_now.get(s, 0)) - entries + exits
        total = at_since * length + seconds
        visits = at_since + entries_inside
        out.append(
            StatusTime(s, visits, round(total, 3), round(total / visits, 3) if visits else 0.0)
        )
    return out


def _status_changes(conn: Connection, f: ReportFilter) -> dict[str, list[Any]]:
    """Per active status S: [entries since ``since``, of them before ``until``, exits since
    ``since``, sum of ``until - at`` over the entries before ``until`` minus the exits']."""
    sums = {s: [0, 0, 0, 0.0] for s in _ACTIVE}
    if _ticket_filters(f):
        for s, (entries, exits, seconds) in _filtered_changes(conn, f, since=True).items():
            sums[s] = [entries, entries, exits, seconds]
        for s, (entries, exits, _) in _filtered_changes(conn, f, since=False).items():
            sums[s][0] += entries
            sums[s][2] += exits
        return sums
    until = _moment(f.until)
    current, previous = history.c.current_status, history.c.previous_status
    # (entering, leaving, seek): "" is a side not counted (any status)
    groups: list[tuple[str, str, list[ColumnElement[bool]]]] = []
    for s in _ACTIVE:
        groups += [
            (s, "", [history.c.kind == "opened", current == s, previous.is_(None)]),
            (s, "", [history.c.kind == "status", current == s, previous.in_(_STATUSES)]),
            ("", s, [history.c.kind == "status", current.in_(_STATUSES), previous == s]),
        ]
    parts: list[Select[Any]] = []
    inside = [history.c.at >= f.since, history.c.at < until]
    rest: Any = func.coalesce(func.sum(seconds_between(until, history.c.at)), 0.0)
    phases: list[tuple[int, list[ColumnElement[bool]], Any]] = [
        (0, inside, rest),
        (1, [history.c.at >= until], literal(0.0)),
    ]
    for phase, where, seconds in phases:
        for entering, leaving, seek in groups:
            columns: list[Any] = [literal(phase), literal(entering), literal(leaving)]
            parts.append(select(*columns, func.count(), seconds).where(*seek, *where))
    for phase, entering, leaving, n, seconds in conn.execute(union_all(*parts)):
        if entering in sums:
            sums[entering][0] += int(n)
            if phase == 0:
                sums[entering][1] += int(n)
                sums[entering][3] += float(seconds)
        if leaving in sums:
            sums[leaving][2] += int(n)
            sums[leaving][3] -= float(seconds)
    return sums


def _filtered_changes(
    conn: Connection, f: ReportFilter, *, since: bool
) -> dict[str, tuple[int, int, float]]:
    """Per active status: entries, exits and (entries' minus exits') ``until - at`` of the
    matching tickets' changes in the period (``since``), else from ``until`` on.

    The tickets come first: a ticket with changes since a time was updated since then (every
    status change sets ``updated_at``), found with the filter columns in the ``(status,
    updated_at, ...)`` index, then their changes of the period through the partial
    ``(ticket_id, at, ...) WHERE current_status IS NOT NULL`` index (migration 0010: half the
    time of ``(ticket_id, kind, at, ...)``, which stepped over the other events); a lookup of
    the ticket per event of the period cost 2-8x more. One row of sums, no GROUP BY (its sort
    cost as much as the join): a change never enters the status it leaves, so a change counts
    for S as an entry or an exit, never both.
    """
    until = _moment(f.until)
    current, previous = history.c.current_status, history.c.previous_status
    bound, where = (
        (f.since, [history.c.at >= f.since, history.c.at < until])
        if since
        else (until, [history.c.at >= until])
    )
    rest = seconds_between(until, history.c.at)
    columns: list[Any] = []
    for s in _ACTIVE:
        columns.append(_counts(current == s, previous == s))
        if since:
            columns.append(
                func.coalesce(func.sum(case((current == s, rest), (previous == s, -rest))), 0.0)
            )
    # "current_status is set" rather than the kinds: a kind condition let SQLite's planner walk
    # the period's events first and look each ticket up (measured: 20x slower)
    changes = tickets.join(history, and_(history.c.ticket_id == tickets.c.id, current.is_not(None)))
    row = conn.execute(
        select(*columns)
        .select_from(changes)
        .where(
            tickets.c.status.in_(_STATUSES),
            tickets.c.updated_at >= bound,
            *_ticket_filters(f),
            *where,
        )
    ).one()
    out = {}
    step = 2 if since else 1
    for i, s in enumerate(_ACTIVE):
        entries, exits = _split(row[i * step])
        out[s] = (entries, exits, float(row[i * step + 1]) if since else 0.0)
    return out


def _answers(kind: str, f: ReportFilter) -> Select[Any]:
    query = select(responses.c.score).where(
        responses.c.kind == kind, *_in_period(responses.c.created_at, f)
    )
    if filters := _ticket_filters(f):  # the ticket is looked up only to filter
        query = query.join(tickets, tickets.c.id == responses.c.ticket_id).where(*filters)
    return query


def csat(conn: Connection, f: ReportFilter) -> Csat:
    """The average CSAT (1-5) answered in the period, and the share of the tickets resolved by an
    agent in the period whose survey was answered."""
    answers = _answers("csat", f).subquery()
    count, average = conn.execute(select(func.count(), func.avg(answers.c.score))).one()
    answered = exists().where(responses.c.ticket_id == tickets.c.id, responses.c.kind == "csat")
    surveyed, got = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((answered, 1), else_=0)), 0)).where(
            *_resolved(f), tickets.c.deflected.is_(False)
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
    opened, hits = conn.execute(
        select(
            func.count(), func.coalesce(func.sum(case((tickets.c.deflected, 1), else_=0)), 0)
        ).where(*_opened(f))
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
    ).where(
        history.c.kind == "kb_gap",
        # no status columns: the (kind, current_status, previous_status, at) index seeks the period
        history.c.current_status.is_(None),
        history.c.previous_status.is_(None),
        *_in_period(history.c.at, f),
    )
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
    return Dashboard(filter=f, **_kpis(conn, f, KPIS))


# Of about equal cost, with or without filters (bench/reports.py --per-kpi): time in status
# and CSAT; the rest.
KPI_GROUPS = (
    ("time-in-status", "csat"),
    tuple(name for name in KPIS if name not in ("time-in-status", "csat")),
)


def _kpis(conn: Connection, f: ReportFilter, names: Iterable[str]) -> dict[str, Any]:
    """The named KPIs, keyed by their ``Dashboard`` field."""
    return {name.replace("-", "_"): KPIS[name](conn, f) for name in names}


async def read_all_kpis(db: Database, f: ReportFilter) -> Dashboard:
    """``check_filter`` and ``all_kpis``, read as ``KPI_GROUPS`` at the same time (see the
    module's docstring)."""

    def group(names: tuple[str, ...], check: bool) -> Callable[[Connection], dict[str, Any]]:
        def read(conn: Connection) -> dict[str, Any]:
            if check:
                check_filter(conn, f)
            return _kpis(conn, f, names)

        return read

    first, *rest = KPI_GROUPS
    reads = [group(first, check=True), *(group(names, check=False) for names in rest)]
    groups = await asyncio.gather(*(db.read(read) for read in reads))
    return Dashboard(filter=f, **{k: v for part in groups for k, v in part.items()})
