"""SLA sweep benchmark: ``core.sla.sweep`` over 100,000 open tickets vs a per-ticket ``evaluate``.

Builds deterministic open-ticket snapshots (priorities, customer tiers, business-hours and 24x7
policies, answered and unanswered, pending and resumed, due times in the past and the future,
stored the way intake stores them), then times ``sweep`` in two scenarios and, in the same run,
the naive loop calling ``evaluate`` for each ticket; the two must return the same signals.

    python -m bench.sla                 # defaults: 100,000 tickets, 7 runs per scenario
    python -m bench.sla --check         # exit 1 when a sweep run takes >= 1 s

Target (the issue's): an SLA sweep over 100,000 open tickets < 1 s.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from core.sla import (
    Calendar,
    SlaPolicy,
    SlaSignal,
    SlaSnapshot,
    choose_policy,
    due_times,
    evaluate,
    parse_sla,
    resolution_due,
    sweep,
)

MAX_SECONDS = 1.0

# What an admin might write: gold customers and urgent tickets around the clock, the rest on
# office hours in Berlin or New York, low priority without a warning.
SLA = {
    "calendars": [
        {
            "name": "eu",
            "timezone": "Europe/Berlin",
            "hours": {d: ["08:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu")}
            | {"fri": ["08:00-16:00"]},
            "holidays": ["2026-01-01", "2026-04-03", "2026-04-06", "2026-05-01", "2026-12-25"],
        },
        {
            "name": "us",
            "timezone": "America/New_York",
            "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": ["2026-01-01", "2026-05-25", "2026-07-03", "2026-11-26", "2026-12-25"],
        },
    ],
    "policies": [
        {
            "name": "gold-urgent",
            "priorities": ["urgent", "high"],
            "tiers": ["gold"],
            "first_response_minutes": 15,
            "resolution_minutes": 240,
            "warn_at": 0.75,
            "raise_priority_to": "urgent",
        },
        {
            "name": "urgent",
            "priorities": ["urgent"],
            "first_response_minutes": 30,
            "resolution_minutes": 480,
            "reassign": "least_loaded",
        },
        {
            "name": "us",
            "tiers": ["us"],
            "calendar": "us",
            "first_response_minutes": 120,
            "resolution_minutes": 1440,
        },
        {
            "name": "high",
            "priorities": ["high"],
            "calendar": "eu",
            "first_response_minutes": 60,
            "resolution_minutes": 960,
            "raise_priority_to": "urgent",
        },
        {
            "name": "low",
            "priorities": ["low"],
            "calendar": "eu",
            "first_response_minutes": 480,
            "resolution_minutes": 4800,
            "warn_at": 0,
        },
        {
            "name": "default",
            "calendar": "eu",
            "first_response_minutes": 240,
            "resolution_minutes": 2400,
        },
    ],
}

PRIORITIES = (("low", 20), ("normal", 55), ("high", 18), ("urgent", 7))
TIERS = ((None, 45), ("silver", 20), ("gold", 15), ("us", 20))


def _pick(rng: random.Random, table: tuple[tuple[str | None, int], ...]) -> str | None:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def make_snapshots(
    n: int,
    now: datetime,
    policies: tuple[SlaPolicy, ...],
    calendars: dict[str, Calendar],
    rng: random.Random,
) -> list[SlaSnapshot]:
    """Open tickets as the sweep's query would load them, due times stored as intake does."""
    snapshots = []
    for ticket_id in range(1, n + 1):
        priority = _pick(rng, PRIORITIES) or "normal"
        tier = _pick(rng, TIERS)
        policy = choose_policy(policies, priority, tier)
        assert policy is not None  # "default" catches everything
        calendar = calendars[policy.calendar]
        # most open tickets are young; a tail is weeks old
        age = min(rng.expovariate(1 / (2 * 1440)), 30 * 1440)
        opened = now - timedelta(minutes=age, seconds=rng.randrange(60))
        answered = rng.random() < 0.7 and age > 5
        first_response_at = opened + timedelta(minutes=rng.uniform(1, min(age, 600)))
        paused: tuple[tuple[datetime, datetime | None], ...] = ()
        roll = rng.random()
        if answered and roll < 0.25:  # 15% pending now, 10% were pending and are open again
            start = first_response_at + (now - first_response_at) * rng.random()
            end = None if roll < 0.15 else start + (now - start) * rng.random()
            paused = ((start, end),)
        closed = tuple(p for p in paused if p[1] is not None)
        fr_due, _ = due_times(policy, calendar, opened)
        snapshots.append(
            SlaSnapshot(
                ticket_id=ticket_id,
                opened_at=opened,
                priority=priority,
                tier=tier,
                policy=policy.name,
                first_response_at=first_response_at if answered else None,
                first_response_due=fr_due,
                resolution_due=resolution_due(policy, calendar, opened, closed),
                paused=paused,
            )
        )
    return snapshots


def naive_sweep(
    snapshots: list[SlaSnapshot],
    now: datetime,
    by_name: dict[str, SlaPolicy],
    calendars: dict[str, Calendar],
) -> list[tuple[int, SlaSignal]]:
    """The reference: every ticket's due and warning times from the calendar, one by one."""
    out = []
    for s in snapshots:
        policy = by_name[s.policy] if s.policy else None
        if policy is not None:
            calendar = calendars[policy.calendar]
            out += [(s.ticket_id, signal) for signal in evaluate(s, now, calendar, policy)]
    return out


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    signals: Counter[str]
    median: float
    max: float
    naive: float


def _time(fn: Callable[[], object], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        gc.collect()  # start each run from the same heap; collections during the run count
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def run(args: argparse.Namespace) -> bool:
    rng = random.Random(args.seed)
    settings = parse_sla(SLA)
    calendars = settings.calendar_map
    policies = settings.policies
    by_name = {p.name: p for p in policies}
    now = datetime.fromisoformat(args.now).astimezone(UTC)

    start = time.perf_counter()
    fresh = make_snapshots(args.tickets, now, policies, calendars, rng)
    # steady state: the previous sweep ran a minute ago and its signals were persisted
    previous = now - timedelta(seconds=args.interval)
    steady = [
        replace(
            s, fired=frozenset(sig.key for _, sig in naive_sweep([s], previous, by_name, calendars))
        )
        for s in fresh
    ]
    build_s = time.perf_counter() - start

    rows: list[Row] = []
    identical = True
    scenarios = [
        (f"steady (last sweep {args.interval:g} s ago)", steady),
        ("cold (nothing fired yet)", fresh),
    ]
    for name, snapshots in scenarios:
        result = sweep(snapshots, now, policies, calendars)
        seconds = _time(lambda s=snapshots: sweep(s, now, policies, calendars), args.runs)
        naive_start = time.perf_counter()
        reference = naive_sweep(snapshots, now, by_name, calendars)
        naive_s = time.perf_counter() - naive_start
        identical &= result == reference
        signals = Counter(sig.key for _, sig in result)
        rows.append(Row(name, signals, statistics.median(seconds), max(seconds), naive_s))

    pending = sum(s.pending for s in fresh)
    answered = sum(s.first_response_at is not None for s in fresh)
    load = os.getloadavg()[0]
    print(
        f"SLA sweep: {len(fresh):,} open tickets ({answered:,} answered, {pending:,} pending), "
        f"{len(policies)} policies, {len(calendars)} calendars; now {now:%Y-%m-%d %H:%M} UTC; "
        f"built in {build_s:.1f} s"
    )
    print(
        f"Python {platform.python_version()}, load average {load:.1f} on {os.cpu_count()} CPUs; "
        f"{args.runs} runs each"
    )
    header = (
        f"{'scenario':<32}{'signals':>9}{'warn/breach':>13}{'median s':>10}{'max s':>8}"
        f"{'naive s':>9}{'speedup':>9}  < {MAX_SECONDS:g} s"
    )
    print(header)
    ok = identical
    for row in rows:
        warnings = sum(n for k, n in row.signals.items() if k.startswith("warning"))
        breaches = sum(row.signals.values()) - warnings
        passed = row.max < MAX_SECONDS
        ok &= passed
        print(
            f"{row.scenario:<32}{sum(row.signals.values()):>9,}{f'{warnings:,}/{breaches:,}':>13}"
            f"{row.median:>10.3f}{row.max:>8.3f}{row.naive:>9.3f}"
            f"{row.naive / row.median:>8.1f}x  {'PASS' if passed else 'FAIL'}"
        )
    print(f"sweep == per-ticket evaluate: {'yes' if identical else 'NO (bug)'}")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tickets", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=7, help="timed sweeps per scenario")
    p.add_argument("--now", default="2026-03-30T10:05:00+02:00", help="the sweep's clock")
    p.add_argument("--interval", type=float, default=60.0, help="seconds since the last sweep")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--check", action="store_true", help="exit 1 when a sweep takes >= 1 s")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok = run(args)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
