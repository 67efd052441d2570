"""Dashboard KPIs benchmark: every KPI of ``core.reports`` over 1,000,000 tickets on SQLite.

Generates a year of helpdesk history straight into a migrated SQLite file with bulk INSERTs
(tickets, their history events, survey answers; cached in /tmp, keyed by ``VERSION`` and the
size), then times the KPIs the way the server reads them, median of ``--runs``, for the
dashboard's default period (the last 30 days) with and without filters, plus longer periods
for information: ``read_all_kpis`` (the dashboard: two groups of KPIs in two reader threads at
the same time; the target) and, beside it, ``all_kpis`` in one read transaction.

    python -m bench.reports                 # 1,000,000 tickets (generation ~1 min, once)
    python -m bench.reports --check         # exit 1 when a target row is >= 500 ms
    python -m bench.reports --without-indexes   # also time with each report index dropped
    python -m bench.reports --tickets 100000 --per-kpi

Target (the issue's): all dashboard KPIs over 1,000,000 tickets < 500 ms on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import math
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from core import reports
from core.persistence.database import Database, open_database
from core.persistence.migrate import upgrade
from core.reports import ReportFilter

VERSION = 3  # bump when the generated data changes: the cached file is then rebuilt
TARGET_MS = 500.0
END = datetime(2026, 3, 1, tzinfo=UTC)  # "now" of the generated history
DAYS = 365
EPOCH = int(END.timestamp()) - DAYS * 86400

TEAMS = [("billing", 0.3), ("tech", 0.45), ("sales", 0.1), ("onboarding", 0.15)]
AGENTS_PER_TEAM = 10
CHANNELS = [("email", 0.4), ("web", 0.25), ("telegram", 0.15), ("slack", 0.1), ("api", 0.1)]
PRIORITIES = [("low", 0.2), ("normal", 0.6), ("high", 0.15), ("urgent", 0.05)]
# median first response (minutes) and SLA targets (hours: first response, resolution)
FRT_MEDIAN_MIN = {"low": 180, "normal": 60, "high": 25, "urgent": 10}
SLA_HOURS = {"low": (24, 120), "normal": (8, 72), "high": (4, 24), "urgent": (1, 4)}
CSAT_SCORES = [(1, 0.05), (2, 0.05), (3, 0.1), (4, 0.3), (5, 0.5)]
QUESTIONS = [
    f"how do i {verb} {thing}"
    for verb in ("change", "export", "delete", "merge", "find")
    for thing in (
        "my invoice",
        "the api key",
        "a team member",
        "my data",
        "two accounts",
        "the audit log",
        "a webhook",
        "my plan",
        "sso",
        "the mobile app",
    )
]


def _pick(options: list[tuple[Any, float]]) -> tuple[list[Any], list[float]]:
    """Population and cumulative weights (``choices`` then skips summing them per call)."""
    return [o for o, _ in options], list(itertools.accumulate(w for _, w in options))


def _status(previous: str, current: str) -> str:
    return json.dumps({"previous": previous, "current": current})


# -- generation ------------------------------------------------------------------------------


@dataclass
class Generated:
    tickets: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    answers: list[tuple[Any, ...]]


def generate(n: int, seed: int) -> Generated:
    """A year of tickets with plausible timings; each ticket's state is its history cut at END."""
    rng = random.Random(seed)
    now = int(END.timestamp())
    created_all = sorted(EPOCH + int(rng.random() * DAYS * 86400) for _ in range(n))
    teams, team_w = _pick([(i + 1, w) for i, (_, w) in enumerate(TEAMS)])
    channels, channel_w = _pick(CHANNELS)
    priorities, priority_w = _pick(PRIORITIES)
    scores, score_w = _pick(CSAT_SCORES)
    # Zipf: a few questions dominate
    question_w = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(QUESTIONS))))
    gap_json = [json.dumps({"question": q}) for q in QUESTIONS]
    rated_json = {score: json.dumps({"survey": "csat", "score": score}) for score in scores}
    status_json = {
        (a, b): _status(a, b)
        for a in ("new", "open", "pending", "resolved")
        for b in ("open", "pending", "resolved", "closed")
    }
    empty = "{}"
    transition = {data: pair for pair, data in status_json.items()}
    no_change = (None, None)  # the status columns of an event that is not a status change
    tickets: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    answers: list[tuple[Any, ...]] = []
    ev = events.append
    for tid, created in enumerate(created_all, start=1):
        team = rng.choices(teams, cum_weights=team_w)[0]
        channel = rng.choices(channels, cum_weights=channel_w)[0]
        priority = rng.choices(priorities, cum_weights=priority_w)[0]
        agent = (team - 1) * AGENTS_PER_TEAM + rng.randrange(AGENTS_PER_TEAM) + 1
        frt_due_h, res_due_h = SLA_HOURS[priority]
        status, assignee = "new", None
        first_at = resolved_at = closed_at = None
        reopens = replies_n = 0
        deflected = False
        ev((tid, created, "customer", "opened", empty, None, "new"))
        if rng.random() < 0.1:
            ev(
                (
                    tid,
                    created,
                    "bot",
                    "kb_gap",
                    rng.choices(gap_json, cum_weights=question_w)[0],
                    *no_change,
                )
            )
        # the ticket's story as (time, actor, kind, data); cut at `now` below
        story: list[tuple[int, str, str, str]] = []
        if rng.random() < 0.06:  # the customer solved it with a KB article
            t = created + rng.randint(120, 3600)
            story += [
                (t, "customer", "deflected", empty),
                (t, "customer", "status", status_json["new", "resolved"]),
            ]
            last_resolved = t
        else:
            frt = rng.lognormvariate(math.log(FRT_MEDIAN_MIN[priority] * 60), 1.0)
            first = created + int(frt)
            claim = first - int(rng.random() * min(frt, 600))
            actor = f"agent:{agent}"
            story += [
                (claim, actor, "claimed", empty),
                (claim, actor, "status", status_json["new", "open"]),
                (first, actor, "replied", empty),
            ]
            end = first + int(rng.lognormvariate(math.log(6 * 3600), 1.2))
            replies = rng.choices((1, 2, 3), cum_weights=(0.6, 0.88, 1.0))[0]
            middle = (first + end) // 2
            if rng.random() < 0.35:  # waiting for the customer, who answers halfway
                story += [
                    (first, actor, "status", status_json["open", "pending"]),
                    (middle, "customer", "status", status_json["pending", "open"]),
                ]
            for k in range(1, replies):
                story.append((middle + (end - middle) * k // replies, actor, "replied", empty))
            story.append((end, actor, "status", status_json["open", "resolved"]))
            last_resolved = end
            if rng.random() < 0.08:  # the customer writes again
                back = end + rng.randint(3600, 3 * 86400)
                again = back + int(rng.lognormvariate(math.log(3 * 3600), 1.0))
                story += [
                    (back, "customer", "status", status_json["resolved", "open"]),
                    ((back + again) // 2, actor, "replied", empty),
                    (again, actor, "status", status_json["open", "resolved"]),
                ]
                last_resolved = again
            if last_resolved <= now and rng.random() < 0.35:
                t = last_resolved + rng.randint(600, 2 * 86400)
                score = rng.choices(scores, cum_weights=score_w)[0]
                story.append((t, "customer", "rated", rated_json[score]))
                if t <= now:
                    answers.append((tid, "csat", score, t))
                if rng.random() < 0.35:
                    nps = min(10, max(0, int(rng.gauss(8, 2.2))))
                    if t + 60 <= now:
                        answers.append((tid, "nps", nps, t + 60))
        closing = last_resolved + 3 * 86400
        story.append((closing, "system", "status", status_json["resolved", "closed"]))
        story.sort(key=lambda step: step[0])  # stable: same-instant steps keep order
        for t, actor, kind, data in story:
            if t > now:
                break
            change = transition[data] if kind == "status" else None
            ev((tid, t, actor, kind, data, *(change or no_change)))
            if kind == "claimed":
                assignee = agent
            elif kind == "deflected":
                deflected = True
            elif kind == "replied":
                replies_n += 1
                first_at = t if first_at is None else first_at
            elif change is not None:  # a status change
                previous, status = change
                if status == "resolved":
                    resolved_at = t
                elif status == "closed":
                    closed_at = t
                elif previous == "resolved":
                    resolved_at, reopens = None, reopens + 1
        updated = max([created, *(t for t, *_ in story if t <= now)])
        tickets.append(
            (
                tid,
                tid,
                tid % 100_000 + 1,
                channel,
                f"Question {tid}",
                status,
                priority,
                team,
                assignee,
                tid % 100_000 + 1,
                reopens,
                created,
                updated,
                first_at,
                resolved_at,
                closed_at,
                created + frt_due_h * 3600,
                created + res_due_h * 3600,
                # what the writers keep for the reports (core/desk.py, core/intake.py...)
                replies_n,
                None if first_at is None else float(first_at - created),
                None if resolved_at is None else float(resolved_at - created),
                int(deflected),
            )
        )
    return Generated(tickets, events, answers)


def _ts(column: str) -> str:
    """Epoch seconds -> the text SQLAlchemy stores on SQLite ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    return f"strftime('%Y-%m-%d %H:%M:%S', {column}, 'unixepoch') || '.000000'"


def build(path: Path, n: int, seed: int) -> None:
    started = time.perf_counter()
    tmp = path.with_suffix(".part")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    db = open_database(f"sqlite:///{tmp}", durable=False)
    upgrade(db, "0006")  # the KPI columns; later migrations run on the loaded tables
    asyncio.run(db.close())
    data = generate(n, seed)
    print(
        f"generated {len(data.tickets):,} tickets, {len(data.events):,} events, "
        f"{len(data.answers):,} survey answers in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    con = sqlite3.connect(tmp, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA temp_store=MEMORY")  # the sort and the index builds stay in RAM
    con.execute("PRAGMA cache_size=-2000000")  # 2 GB
    # indexes are built once after the load (much faster than row by row)
    indexes = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('tickets', 'ticket_events', 'survey_responses', 'customers', "
        "'identities')"
    ).fetchall()
    con.execute("BEGIN")
    for name, _ in indexes:
        con.execute(f"DROP INDEX {name}")
    now = _ts(str(int(END.timestamp())))
    con.executemany(
        "INSERT INTO teams (id, name) VALUES (?, ?)",
        [(i + 1, name) for i, (name, _) in enumerate(TEAMS)],
    )
    con.executemany(
        "INSERT INTO agents (id, name, email, role, team_id, skills, max_open_tickets, active, "
        f"created_at) VALUES (?, ?, ?, 'agent', ?, '[]', 25, 1, {now})",
        [
            (a, f"Agent {a}", f"agent{a}@support.test", (a - 1) // AGENTS_PER_TEAM + 1)
            for a in range(1, len(TEAMS) * AGENTS_PER_TEAM + 1)
        ],
    )
    customers = min(n, 100_000)
    con.execute(
        "INSERT INTO customers (id, name, email, attributes, created_at) "
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) "
        f"SELECT i, 'Customer ' || i, 'c' || i || '@example.org', '{{}}', {now} FROM k",
        (customers,),
    )
    con.execute(
        "INSERT INTO identities (id, customer_id, channel, address, display_name, bouncing, "
        f"created_at) SELECT id, id, 'email', email, name, 0, {now} FROM customers"
    )
    con.execute(
        "CREATE TEMP TABLE t (id, number, customer_id, channel, subject, status, "
        "priority, team_id, assignee_id, identity_id, reopen_count, c, u, f, r, x, "
        "fd, rd, replies, frs, rs, deflected)"
    )
    con.executemany(f"INSERT INTO t VALUES ({', '.join('?' * 22)})", data.tickets)
    con.execute(
        "INSERT INTO tickets (id, number, customer_id, channel, subject, status, priority, "
        "team_id, assignee_id, tags, reply_identity_id, portal_version, reopen_count, "
        "created_at, updated_at, first_response_at, resolved_at, closed_at, first_response_due, "
        "resolution_due, agent_replies, first_response_seconds, resolution_seconds, deflected) "
        "SELECT id, number, customer_id, channel, subject, status, priority, "
        f"team_id, assignee_id, '[]', identity_id, 1, reopen_count, {_ts('c')}, {_ts('u')}, "
        f"{_ts('f')}, {_ts('r')}, {_ts('x')}, {_ts('fd')}, {_ts('rd')}, replies, frs, rs, "
        "deflected FROM t ORDER BY id"
    )
    con.execute("CREATE TEMP TABLE e (ticket_id, at, actor, kind, data, prev, cur)")
    con.executemany("INSERT INTO e VALUES (?, ?, ?, ?, ?, ?, ?)", data.events)
    con.execute(  # in time order, as a live system appends them
        "INSERT INTO ticket_events (ticket_id, at, actor, kind, data, reason, previous_status, "
        f"current_status) SELECT ticket_id, {_ts('at')}, actor, kind, data, '', prev, cur "
        "FROM e ORDER BY at, rowid"
    )
    answers_in_time_order = sorted(data.answers, key=lambda answer: answer[3])
    con.executemany(
        "INSERT INTO survey_responses (ticket_id, kind, score, comment, created_at) "
        f"VALUES (?, ?, ?, '', {_ts('?')})",
        answers_in_time_order,
    )
    con.execute("INSERT INTO counters (name, value) VALUES ('ticket', ?)", (n,))
    for _, sql in indexes:
        con.execute(sql)
    con.execute("COMMIT")
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    db = open_database(f"sqlite:///{tmp}", durable=False)
    upgrade(db)
    asyncio.run(db.close())
    tmp.rename(path)
    print(
        f"built {path} ({path.stat().st_size / 1e6:,.0f} MB) in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )


# -- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], ReportFilter]
    target: bool  # counts for PASS/FAIL (the dashboard's default 30-day period)


def cases() -> list[Case]:
    def last(days: int, **filters: Any) -> Callable[[], ReportFilter]:
        return lambda: ReportFilter.last(days, END, **filters)

    return [
        Case("30 days", last(30), True),
        Case("30 days, team=tech", last(30, team="tech"), True),
        Case("30 days, agent=12", last(30, agent_id=12), True),
        Case(
            "30 days, channel=email, priority=high",
            last(30, channel="email", priority="high"),
            True,
        ),
        Case("7 days", last(7), False),
        Case("90 days", last(90), False),
        Case("365 days", last(365), False),
    ]


def _time(read: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    async def go() -> list[float]:
        await read()  # warm-up: page cache, statement cache
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            await read()
            samples.append((time.perf_counter() - start) * 1000)
        return samples

    return asyncio.run(go())


def _reading(
    db: Database, kpi: Callable[[Connection, ReportFilter], Any], f: ReportFilter
) -> Callable[[], Awaitable[Any]]:
    """One read of ``kpi`` for ``f``, to time (bound here, not to the caller's loop variables)."""
    return lambda: db.read(lambda conn: kpi(conn, f))


@dataclass(frozen=True)
class Row:
    case: Case
    dashboard: float  # read_all_kpis: the KPI groups read at the same time (ms, median)
    one_snapshot: float  # all_kpis in one read transaction
    parts: dict[str, float]  # each KPI alone, with --per-kpi


def measure(path: Path, runs: int, per_kpi: bool, targets_only: bool = False) -> list[Row]:
    db = open_database(f"sqlite:///{path}", durable=False)
    out = []
    try:
        for case in [each for each in cases() if each.target or not targets_only]:
            f = case.make()
            dashboard = _time(functools.partial(reports.read_all_kpis, db, f), runs)
            one = _time(_reading(db, reports.all_kpis, f), runs)
            parts: dict[str, float] = {}
            if per_kpi:
                for name, kpi in reports.KPIS.items():
                    alone = _time(_reading(db, kpi, f), runs)
                    parts[name] = statistics.median(alone)
            out.append(Row(case, statistics.median(dashboard), statistics.median(one), parts))
    finally:
        asyncio.run(db.close())
    return out


REPORT_INDEXES = [
    ("ix_tickets_created_report", "tickets (created_at, filters, KPI columns)"),
    ("ix_tickets_resolved_report", "tickets (resolved_at, filters, KPI columns)"),
    ("ix_tickets_status_updated", "tickets (status, updated_at, filters)"),
    ("ix_ticket_events_kind_status", "ticket_events (kind, current_status, previous_status, at)"),
    ("ix_ticket_events_status_changes", "ticket_events (ticket_id, at, statuses) status changes"),
    ("ix_survey_responses_kind_created", "survey_responses (kind, created_at)"),
]


@contextlib.contextmanager
def without(path: Path, names: list[str]) -> Iterator[None]:
    """The database with these indexes dropped for the duration (then rebuilt)."""
    con = sqlite3.connect(path, isolation_level=None)
    saved = [
        con.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        for name in names
    ]
    for name in names:
        con.execute(f"DROP INDEX {name}")
    try:
        yield
    finally:
        for sql in saved:
            con.execute(sql)
        con.close()


def table(title: str, rows: list[Row]) -> bool:
    ok = True
    print(f"\n{title}")
    print(
        f"| {'case':<40} | dashboard ms (median) | < {TARGET_MS:.0f} ms "
        "| one snapshot ms (median) |"
    )
    print(f"|{'-' * 42}|{'-' * 23}|{'-' * 10}|{'-' * 26}|")
    for row in rows:
        passed = row.dashboard < TARGET_MS
        verdict = ("PASS" if passed else "FAIL") if row.case.target else "(info)"
        ok &= passed or not row.case.target
        print(
            f"| {row.case.name:<40} | {row.dashboard:>21.1f} | {verdict:<8} "
            f"| {row.one_snapshot:>24.1f} |"
        )
    if any(row.parts for row in rows):
        names = list(reports.KPIS)
        print("\nper KPI, ms (median):")
        print("| case | " + " | ".join(names) + " |")
        for row in rows:
            cells = " | ".join(f"{row.parts[k]:.1f}" for k in names)
            print(f"| {row.case.name} | {cells} |")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--per-kpi", action="store_true", help="also time each KPI alone")
    p.add_argument(
        "--without-indexes",
        action="store_true",
        help="also time with each of the report indexes dropped, then all",
    )
    p.add_argument("--rebuild", action="store_true", help="regenerate the cached database")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()
    path = Path(f"/tmp/helpline-bench-reports-v{VERSION}-{args.tickets}-{args.seed}.db")
    if args.rebuild or not path.exists():
        build(path, args.tickets, args.seed)
    print(f"{args.tickets:,} tickets, SQLite {sqlite3.sqlite_version}, {path}")
    ok = table(
        "with the report indexes (migrations 0004, 0006)", measure(path, args.runs, args.per_kpi)
    )
    if args.without_indexes:
        for name, what in REPORT_INDEXES:
            with without(path, [name]):
                table(f"without {what}", measure(path, args.runs, args.per_kpi, True))
        with without(path, [name for name, _ in REPORT_INDEXES]):
            table("without any of them", measure(path, args.runs, args.per_kpi, True))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
