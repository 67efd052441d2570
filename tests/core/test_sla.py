"""SLA calendars, due times, pauses, warnings and breaches, as tables."""

from __future__ import annotations

import random
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.errors import ConfigError
from core.sla import (
    BreachAction,
    Calendar,
    SlaPolicy,
    SlaSnapshot,
    choose_policy,
    due_times,
    evaluate,
    next_check,
    parse_sla,
    priority_after_breach,
    resolution_due,
    sweep,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")

OFFICE_EU = Calendar.from_hours(
    "eu", "Europe/Berlin", {d: ["09:00-17:00"] for d in WEEKDAYS}, ["2026-12-25", "2026-05-01"]
)
OFFICE_US = Calendar.from_hours("us", "America/New_York", {d: "09:00-17:00" for d in WEEKDAYS})
LUNCH = Calendar.from_hours("lunch", "UTC", {d: ["09:00-12:00", "13:00-17:00"] for d in WEEKDAYS})
ALWAYS = Calendar.always()
ALWAYS_EU = Calendar.always("24x7-eu", "Europe/Berlin")
# Hours that cover the DST change itself (Berlin switches at 02:00/03:00 on Sundays)
SUNDAY_NIGHT = Calendar.from_hours("night", "Europe/Berlin", {"sun": ["00:00-12:00"]})
IN_THE_GAP = Calendar.from_hours("gap", "Europe/Berlin", {"sun": ["02:30-04:00"]})


def eu(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def us(*args: int) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("calendar", "start", "minutes", "expected"),
    [
        # within one business day; a target ending at closing time is due at closing time
        (OFFICE_EU, eu(2026, 3, 2, 10), 120, eu(2026, 3, 2, 12)),
        (OFFICE_EU, eu(2026, 3, 2, 9), 480, eu(2026, 3, 2, 17)),
        (OFFICE_EU, eu(2026, 3, 2, 16), 120, eu(2026, 3, 3, 10)),
        (OFFICE_EU, eu(2026, 3, 2, 10, 15), 0.5, eu(2026, 3, 2, 10, 15, 30)),
        # across a weekend
        (OFFICE_EU, eu(2026, 3, 6, 16), 120, eu(2026, 3, 9, 10)),
        # across a holiday (Friday 25 December) and the weekend after it
        (OFFICE_EU, eu(2026, 12, 24, 16), 120, eu(2026, 12, 28, 10)),
        (OFFICE_EU, eu(2026, 12, 25, 10), 30, eu(2026, 12, 28, 9, 30)),
        # starting outside hours: before opening, after closing, on a Sunday
        (OFFICE_EU, eu(2026, 3, 2, 7), 60, eu(2026, 3, 2, 10)),
        (OFFICE_EU, eu(2026, 3, 2, 18), 60, eu(2026, 3, 3, 10)),
        (OFFICE_EU, eu(2026, 3, 1, 12), 60, eu(2026, 3, 2, 10)),
        (OFFICE_EU, eu(2026, 3, 1, 12), 0, eu(2026, 3, 1, 12)),
        # several ranges a day
        (LUNCH, utc(2026, 3, 2, 11, 30), 60, utc(2026, 3, 2, 13, 30)),
        (LUNCH, utc(2026, 3, 2, 12, 15), 30, utc(2026, 3, 2, 13, 30)),
        # DST, spring forward (Berlin 29 March, New York 8 March): 09:00 is still 09:00
        (OFFICE_EU, eu(2026, 3, 27, 16), 120, eu(2026, 3, 30, 10)),
        (OFFICE_EU, eu(2026, 3, 27, 9), 960, eu(2026, 3, 30, 17)),
        (OFFICE_EU, eu(2026, 3, 23, 9), 5 * 480, eu(2026, 3, 27, 17)),
        (OFFICE_US, us(2026, 3, 6, 16), 120, us(2026, 3, 9, 10)),
        # DST, fall back (Berlin 25 October, New York 1 November)
        (OFFICE_EU, eu(2026, 10, 23, 16), 120, eu(2026, 10, 26, 10)),
        (OFFICE_US, us(2026, 10, 30, 16), 120, us(2026, 11, 2, 10)),
        # 24x7
        (ALWAYS, utc(2026, 3, 7, 23, 30), 90, utc(2026, 3, 8, 1)),
        (ALWAYS_EU, eu(2026, 3, 29, 1, 30), 60, eu(2026, 3, 29, 3, 30)),  # real time: 1 hour
        # opening hours inside the spring-forward gap start when the clocks jump
        (IN_THE_GAP, eu(2026, 3, 29, 0), 10, eu(2026, 3, 29, 3, 10)),
        (IN_THE_GAP, eu(2026, 3, 22, 0), 10, eu(2026, 3, 22, 2, 40)),
    ],
)
def test_add_business_time(
    calendar: Calendar, start: datetime, minutes: float, expected: datetime
) -> None:
    due = calendar.add_business_time(start, minutes)
    assert due == expected
    assert due.tzinfo is UTC


@pytest.mark.parametrize(
    ("calendar", "a", "b", "minutes"),
    [
        (OFFICE_EU, eu(2026, 3, 2, 10), eu(2026, 3, 2, 12), 120),
        (OFFICE_EU, eu(2026, 3, 6, 16), eu(2026, 3, 9, 10), 120),
        (OFFICE_EU, eu(2026, 3, 2, 18), eu(2026, 3, 3, 8), 0),
        (OFFICE_EU, eu(2026, 3, 2, 12), eu(2026, 3, 2, 10), -120),
        # Christmas week: four business days
        (OFFICE_EU, eu(2026, 12, 21, 9), eu(2026, 12, 28, 9), 4 * 480),
        # a 9-17 calendar counts 8 hours a day in DST weeks, in both zones, both directions
        (OFFICE_EU, eu(2026, 3, 23, 9), eu(2026, 3, 30, 9), 5 * 480),
        (OFFICE_EU, eu(2026, 10, 19, 9), eu(2026, 10, 26, 9), 5 * 480),
        (OFFICE_EU, eu(2026, 3, 27, 9), eu(2026, 3, 30, 17), 2 * 480),
        (OFFICE_US, us(2026, 3, 2, 9), us(2026, 3, 9, 9), 5 * 480),
        (OFFICE_US, us(2026, 10, 26, 9), us(2026, 11, 2, 9), 5 * 480),
        (OFFICE_US, us(2026, 3, 6, 9), us(2026, 3, 9, 17), 2 * 480),
        # the same instants given in another zone
        (OFFICE_US, utc(2026, 3, 6, 14), utc(2026, 3, 9, 21), 2 * 480),
        # hours that span the change measure real time: 11 h in spring, 13 h in autumn
        (SUNDAY_NIGHT, eu(2026, 3, 29, 0), eu(2026, 3, 29, 12), 11 * 60),
        (SUNDAY_NIGHT, eu(2026, 10, 25, 0), eu(2026, 10, 25, 12), 13 * 60),
        (ALWAYS_EU, eu(2026, 3, 28, 12), eu(2026, 3, 29, 12), 23 * 60),
        (ALWAYS_EU, eu(2026, 10, 24, 12), eu(2026, 10, 25, 12), 25 * 60),
        (IN_THE_GAP, eu(2026, 3, 29, 0), eu(2026, 3, 29, 12), 60),
        (IN_THE_GAP, eu(2026, 3, 22, 0), eu(2026, 3, 22, 12), 90),
        (ALWAYS, utc(2026, 1, 1), utc(2026, 1, 8), 7 * 1440),
    ],
)
def test_business_minutes_between(
    calendar: Calendar, a: datetime, b: datetime, minutes: float
) -> None:
    assert calendar.business_minutes_between(a, b) == minutes


@pytest.mark.parametrize("calendar", [OFFICE_EU, OFFICE_US, LUNCH, SUNDAY_NIGHT, IN_THE_GAP])
def test_adding_then_measuring_gives_the_minutes_back(calendar: Calendar) -> None:
    rng = random.Random(7)
    base = utc(2025, 12, 1)
    for _ in range(300):  # spans both 2026 DST changes and the year end
        start = base + timedelta(minutes=rng.randrange(0, 400 * 1440))
        minutes = rng.choice([1, 30, 60, 480, 1440, 5000]) + rng.randrange(0, 60)
        due = calendar.add_business_time(start, minutes)
        assert calendar.business_minutes_between(start, due) == minutes
        # due is the earliest such instant: a minute earlier is short of the target
        assert calendar.business_minutes_between(start, due - timedelta(minutes=1)) < minutes


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (eu(2026, 3, 2, 9), True),
        (eu(2026, 3, 2, 17), False),
        (eu(2026, 3, 2, 8, 59), False),
        (eu(2026, 3, 7, 12), False),
        (eu(2026, 12, 25, 12), False),
        (eu(2026, 3, 30, 9, 30), True),
    ],
)
def test_is_open(at: datetime, open_: bool) -> None:
    assert OFFICE_EU.is_open(at) is open_


def test_calendar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="naive"):
        OFFICE_EU.add_business_time(datetime(2026, 3, 2, 9), 10)
    with pytest.raises(ValueError, match="unknown time zone"):
        Calendar.from_hours("x", "Mars/Olympus", {"mon": ["09:00-17:00"]})
    with pytest.raises(ValueError, match="never open"):
        Calendar.from_hours("x", "UTC", {"mon": []})
    with pytest.raises(ValueError, match="negative"):
        OFFICE_EU.add_business_time(eu(2026, 3, 2, 9), -5)


# -- policies, due times, pauses ------------------------------------------------------------

EU_DAY = SlaPolicy("eu-day", first_response_minutes=60, resolution_minutes=480, calendar="eu")
FAST = SlaPolicy(
    "fast",
    first_response_minutes=60,
    resolution_minutes=240,
    warn_at=0.8,
    on_breach=BreachAction(raise_priority_to="urgent", reassign="least_loaded"),
)
MON_9 = eu(2026, 3, 2, 9)


def test_due_times_use_the_calendar() -> None:
    assert due_times(EU_DAY, OFFICE_EU, eu(2026, 3, 6, 16, 30)) == (
        eu(2026, 3, 9, 9, 30),
        eu(2026, 3, 9, 16, 30),
    )


@pytest.mark.parametrize(
    ("paused", "expected"),
    [
        ([], eu(2026, 3, 2, 17)),
        # two business hours pending move the due time two business hours
        ([(eu(2026, 3, 2, 11), eu(2026, 3, 2, 13))], eu(2026, 3, 3, 11)),
        # pending overnight costs no business time
        ([(eu(2026, 3, 2, 17), eu(2026, 3, 3, 9))], eu(2026, 3, 2, 17)),
        # 16:00-17:00 and 09:00-10:00 the next day
        ([(eu(2026, 3, 2, 16), eu(2026, 3, 3, 10))], eu(2026, 3, 3, 11)),
        # still pending: the clock stands still, there is no due time
        ([(eu(2026, 3, 2, 11), None)], None),
        # pending only after the target was reached: the breach stands
        ([(eu(2026, 3, 3, 9), None)], eu(2026, 3, 2, 17)),
        ([(eu(2026, 3, 3, 9), eu(2026, 3, 3, 12))], eu(2026, 3, 2, 17)),
        # overlapping intervals are not counted twice; order does not matter
        (
            [(eu(2026, 3, 2, 12), eu(2026, 3, 2, 14)), (eu(2026, 3, 2, 11), eu(2026, 3, 2, 13))],
            eu(2026, 3, 3, 12),
        ),
        # time pending before the ticket opened is ignored
        ([(eu(2026, 3, 1, 10), eu(2026, 3, 2, 10))], eu(2026, 3, 3, 10)),
        # paused, resumed, paused again and still pending
        ([(eu(2026, 3, 2, 10), eu(2026, 3, 2, 12)), (eu(2026, 3, 2, 13), None)], None),
    ],
)
def test_resolution_due_with_pauses(paused: list, expected: datetime | None) -> None:
    assert resolution_due(EU_DAY, OFFICE_EU, MON_9, paused) == expected


@pytest.mark.parametrize(
    ("priority", "tier", "expected"),
    [
        ("urgent", "gold", "urgent-gold"),
        ("urgent", "silver", "urgent"),
        ("urgent", None, "urgent"),
        ("low", "gold", "gold"),
        ("normal", None, "default"),
    ],
)
def test_choose_policy_takes_the_first_match_in_order(
    priority: str, tier: str | None, expected: str
) -> None:
    policies = [
        SlaPolicy("urgent-gold", 15, 120, frozenset({"urgent"}), frozenset({"gold"})),
        SlaPolicy("urgent", 30, 240, priorities=frozenset({"urgent", "high"})),
        SlaPolicy("gold", 60, 480, tiers=frozenset({"gold", "platinum"})),
        SlaPolicy("default", 240, 2880),
        SlaPolicy("never-reached", 1, 1),
    ]
    chosen = choose_policy(policies, priority, tier)
    assert chosen is not None and chosen.name == expected


def test_no_policy_matches() -> None:
    only_gold = [SlaPolicy("gold", 60, 480, tiers=frozenset({"gold"}))]
    assert choose_policy(only_gold, "normal", None) is None
    assert choose_policy([], "normal", "gold") is None


@pytest.mark.parametrize(
    ("raise_to", "current", "expected"),
    [
        ("urgent", "normal", "urgent"),
        ("high", "urgent", None),
        ("high", "high", None),
        (None, "low", None),
    ],
)
def test_priority_after_breach_only_raises(
    raise_to: str | None, current: str, expected: str | None
) -> None:
    policy = replace(FAST, on_breach=BreachAction(raise_priority_to=raise_to))
    assert priority_after_breach(policy, current) == expected


# -- warnings, breaches, firing once ------------------------------------------------------------

OPENED = utc(2026, 3, 2, 10)
FR_DUE, RES_DUE = utc(2026, 3, 2, 11), utc(2026, 3, 2, 14)


def at(minutes: float) -> datetime:
    return OPENED + timedelta(minutes=minutes)


def ticket(**kw: object) -> SlaSnapshot:
    return SlaSnapshot(ticket_id=1, opened_at=OPENED, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minutes", "fired", "expected"),
    [
        (47, set(), []),
        (48, set(), [("warning", "first_response", FR_DUE)]),  # 80% of 60 minutes
        (48, {"warning:first_response"}, []),
        (59, {"warning:first_response"}, []),
        (60, {"warning:first_response"}, [("breach", "first_response", FR_DUE)]),
        # both crossed since the last look: only the breach (the warning is overtaken)
        (60, set(), [("breach", "first_response", FR_DUE)]),
        (61, {"breach:first_response"}, []),
        (
            192,  # 80% of 240 minutes
            {"warning:first_response", "breach:first_response"},
            [("warning", "resolution", RES_DUE)],
        ),
        (
            240,
            {"breach:first_response", "warning:resolution"},
            [("breach", "resolution", RES_DUE)],
        ),
        (
            240,
            set(),
            [("breach", "first_response", FR_DUE), ("breach", "resolution", RES_DUE)],
        ),
        (5000, {"breach:first_response", "breach:resolution"}, []),
    ],
)
def test_warning_then_breach_not_yet_fired(minutes: float, fired: set, expected: list) -> None:
    signals = evaluate(ticket(fired=frozenset(fired)), at(minutes), ALWAYS, FAST)
    assert [(s.kind, s.target, s.due) for s in signals] == expected
    assert all(s.policy == "fast" for s in signals)


def test_each_signal_fires_once_over_many_sweeps_with_the_fired_set_persisted() -> None:
    fired: frozenset[str] = frozenset()
    seen: list[tuple[float, str]] = []
    for minute in range(0, 600, 3):  # a sweep every 3 minutes, "restarting" from storage each time
        snapshot = ticket(fired=fired)
        for signal in evaluate(snapshot, at(minute), ALWAYS, FAST):
            seen.append((minute, signal.key))
            fired = fired | {signal.key}
    assert seen == [
        (48, "warning:first_response"),
        (60, "breach:first_response"),
        (192, "warning:resolution"),
        (240, "breach:resolution"),
    ]


@pytest.mark.parametrize(
    ("first_response_at", "resolved_at", "expected"),
    [
        (at(30), None, ["breach:resolution"]),
        (None, at(30), ["breach:first_response"]),
        (at(30), at(200), []),
    ],
)
def test_a_met_target_stops_counting(
    first_response_at: datetime | None, resolved_at: datetime | None, expected: list
) -> None:
    snapshot = ticket(first_response_at=first_response_at, resolved_at=resolved_at)
    assert [s.key for s in evaluate(snapshot, at(1000), ALWAYS, FAST)] == expected


ANSWERED = {"first_response_at": at(20)}


@pytest.mark.parametrize(
    ("paused", "minutes", "expected"),
    [
        # pending from minute 30: the resolution clock stands still, nothing fires
        (((at(30), None),), 1000, []),
        # pending after the warning share (minute 192) but before the due time: no warning
        (((at(200), None),), 1000, []),
        # pending only after the breach (minute 240): the breach fires
        (((at(250), None),), 1000, [("breach", RES_DUE)]),
        # resumed at minute 300 after 270 minutes pending: due at 240 + 270
        (((at(30), at(300)),), 461, []),
        (((at(30), at(300)),), 462, [("warning", at(510))]),
        (((at(30), at(300)),), 510, [("breach", at(510))]),
    ],
)
def test_pending_pauses_the_resolution_clock(paused: tuple, minutes: float, expected: list) -> None:
    snapshot = ticket(paused=paused, **ANSWERED)
    assert [(s.kind, s.due) for s in evaluate(snapshot, at(minutes), ALWAYS, FAST)] == expected


def test_business_hours_warning_counts_business_time() -> None:
    # opened Friday 16:00 in Berlin, 60-minute first response: 80% is Monday 09:48
    snapshot = SlaSnapshot(ticket_id=1, opened_at=eu(2026, 3, 6, 16))
    policy = replace(EU_DAY, first_response_minutes=120)
    assert evaluate(snapshot, eu(2026, 3, 9, 9, 35), OFFICE_EU, policy) == []
    (signal,) = evaluate(snapshot, eu(2026, 3, 9, 9, 36), OFFICE_EU, policy)
    assert (signal.kind, signal.due) == ("warning", eu(2026, 3, 9, 10))


def test_no_warning_when_warn_at_is_zero() -> None:
    quiet = replace(FAST, warn_at=0)
    assert evaluate(ticket(), at(59), ALWAYS, quiet) == []
    assert [s.key for s in evaluate(ticket(), at(60), ALWAYS, quiet)] == ["breach:first_response"]


# -- sweep -------------------------------------------------------------------------------------

POLICIES = [
    SlaPolicy("urgent-eu", 30, 240, frozenset({"urgent"}), frozenset({"gold"}), "eu", 0.75),
    SlaPolicy("urgent", 15, 120, priorities=frozenset({"urgent", "high"}), warn_at=0.5),
    SlaPolicy("us", 120, 960, tiers=frozenset({"silver"}), calendar="us"),
    SlaPolicy("default", 240, 2400, calendar="eu", warn_at=0),
]
CALENDARS = {"eu": OFFICE_EU, "us": OFFICE_US, "24x7": ALWAYS}
KEYS = [
    "warning:first_response",
    "breach:first_response",
    "warning:resolution",
    "breach:resolution",
]


def random_snapshot(rng: random.Random, ticket_id: int, now: datetime) -> SlaSnapshot:
    priority = rng.choice(["low", "normal", "high", "urgent"])
    tier = rng.choice([None, "gold", "silver"])
    policy = choose_policy(POLICIES, priority, tier)
    assert policy is not None
    calendar = CALENDARS[policy.calendar]
    opened = now - timedelta(minutes=rng.randrange(0, 8 * 1440))
    paused: tuple = ()
    if rng.random() < 0.4:
        start = opened + (now - opened) * rng.random()
        end = start + (now - start) * rng.random()
        paused = ((start, end if rng.random() < 0.5 else None),)
    closed = tuple(p for p in paused if p[1] is not None)
    store = rng.random() < 0.8
    fr_due, _ = due_times(policy, calendar, opened)
    return SlaSnapshot(
        ticket_id=ticket_id,
        opened_at=opened,
        priority=priority,
        tier=tier,
        policy=policy.name if rng.random() < 0.5 else None,
        first_response_at=opened + timedelta(minutes=5) if rng.random() < 0.3 else None,
        resolved_at=None,
        first_response_due=fr_due if store else None,
        resolution_due=resolution_due(policy, calendar, opened, closed) if store else None,
        paused=paused,
        fired=frozenset(k for k in KEYS if rng.random() < 0.3),
    )


@pytest.mark.parametrize(
    "now", [eu(2026, 3, 30, 10, 5), eu(2026, 10, 25, 23), utc(2026, 12, 28, 8, 1)]
)
def test_sweep_equals_evaluating_each_ticket(now: datetime) -> None:
    rng = random.Random(now.toordinal())
    snapshots = [random_snapshot(rng, i, now) for i in range(2000)]
    expected = []
    for s in snapshots:
        policy = next(p for p in POLICIES if p.name == s.policy) if s.policy else None
        policy = policy or choose_policy(POLICIES, s.priority, s.tier)
        assert policy is not None
        expected += [
            (s.ticket_id, sig) for sig in evaluate(s, now, CALENDARS[policy.calendar], policy)
        ]
    result = sweep(snapshots, now, POLICIES, CALENDARS)
    assert result == expected
    assert {sig.kind for _, sig in result} == {"warning", "breach"}  # the table exercises both


def test_sweep_trusts_stored_due_times() -> None:
    # a stored due time (say, from the policy in force when the ticket opened) wins
    later = at(10_000)
    snapshot = ticket(first_response_due=later, resolution_due=later, policy="fast")
    assert sweep([snapshot], at(500), [FAST], {"24x7": ALWAYS}) == []
    fresh = ticket(policy="fast")
    assert [s.key for _, s in sweep([fresh], at(500), [FAST], {"24x7": ALWAYS})] == [
        "breach:first_response",
        "breach:resolution",
    ]


def test_sweep_skips_tickets_without_a_policy() -> None:
    gold_only = [SlaPolicy("gold", 60, 480, tiers=frozenset({"gold"}))]
    assert sweep([ticket(tier="bronze")], at(10_000), gold_only, {"24x7": ALWAYS}) == []


# -- settings ------------------------------------------------------------------------------

SLA_TOML = """
[[sla.calendars]]
name = "eu"
timezone = "Europe/Berlin"
hours = { mon = ["09:00-12:00", "13:00-17:00"], tue = ["09:00-17:00"], fri = "09:00-15:00" }
holidays = ["2026-12-25", 2026-12-26]

[[sla.policies]]
name = "urgent-gold"
priorities = ["urgent"]
tiers = ["gold"]
calendar = "24x7"
first_response_minutes = 15
resolution_minutes = 240
warn_at = 0.75
raise_priority_to = "urgent"
reassign = "least_loaded"

[[sla.policies]]
name = "default"
calendar = "eu"
first_response_minutes = 240
resolution_minutes = 2400
"""


def test_parse_sla_builds_calendars_and_policies() -> None:
    settings = parse_sla(tomllib.loads(SLA_TOML)["sla"])
    (calendar,) = settings.calendars
    assert calendar.timezone == "Europe/Berlin"
    assert calendar.hours[0] == ((540, 720), (780, 1020))
    assert calendar.hours[4] == ((540, 900),)
    assert calendar.hours[2] == ()
    assert {d.isoformat() for d in calendar.holidays} == {"2026-12-25", "2026-12-26"}
    first, default = settings.policies
    assert first.priorities == frozenset({"urgent"}) and first.warn_at == 0.75
    assert first.on_breach == BreachAction("urgent", "least_loaded")
    assert default.on_breach == BreachAction() and default.warn_at == 0.8
    assert settings.calendar_for(first).continuous
    assert settings.calendar_for(default) is calendar
    assert parse_sla({}) == parse_sla({"calendars": [], "policies": []})


def with_policy(**overrides: object) -> dict:
    policy = {"name": "p", "first_response_minutes": 60, "resolution_minutes": 480}
    return {"policies": [policy | overrides]}


def with_calendar(**overrides: object) -> dict:
    calendar = {"name": "eu", "timezone": "Europe/Berlin", "hours": {"mon": ["09:00-17:00"]}}
    return {"calendars": [calendar | overrides]}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            with_calendar(hours={"mon": ["9-17"]}),
            "sla.calendars[0].hours.mon: '9-17' is not HH:MM-HH:MM",
        ),
        (
            with_calendar(hours={"tue": ["17:00-09:00"]}),
            "sla.calendars[0].hours.tue: '17:00-09:00' ends before it starts",
        ),
        (
            with_calendar(hours={"wed": ["09:00-25:00"]}),
            "sla.calendars[0].hours.wed: '09:00-25:00' is not a time of day",
        ),
        (
            with_calendar(hours={"mon": ["09:00-12:00", "11:00-17:00"]}),
            "sla.calendars[0].hours.mon: ranges overlap",
        ),
        (with_calendar(hours={"funday": []}), "sla.calendars[0].hours.funday: unknown day"),
        (with_calendar(hours={}), "sla.calendars[0].hours: the calendar is never open"),
        (
            with_calendar(timezone="Europe/Atlantis"),
            "sla.calendars[0].timezone: unknown time zone 'Europe/Atlantis'",
        ),
        (
            with_calendar(holidays=["2026-12-25", "25.12.2026"]),
            "sla.calendars[0].holidays[1]: '25.12.2026' is not a date",
        ),
        (with_calendar(name="24x7"), "sla.calendars[0].name: calendar '24x7' is defined twice"),
        ({"calendars": [{"name": "eu"}]}, "sla.calendars[0]: missing required setting"),
        (
            {"policies": [with_policy()["policies"][0], with_policy(calendar="eu")["policies"][0]]},
            "sla.policies[1].name: policy 'p' is defined twice",
        ),
        (
            {
                "policies": [
                    with_policy(name="a")["policies"][0],
                    with_policy(calendar="eu")["policies"][0],
                ]
            },
            "sla.policies[1].calendar: unknown calendar 'eu'",
        ),
        (
            with_policy(priorities=["urgent", "critical"]),
            "sla.policies[0].priorities[1]: unknown priority 'critical'",
        ),
        (with_policy(raise_priority_to="asap"), "sla.policies[0].raise_priority_to: unknown"),
        (with_policy(warn_at=1.5), "sla.policies[0].warn_at: must be at least 0 and below 1"),
        (with_policy(resolution_minutes=0), "sla.policies[0].resolution_minutes: must be positive"),
        (
            with_policy(first_response_minutes="1h"),
            "sla.policies[0].first_response_minutes: expected float",
        ),
        (with_policy(colour="red"), "sla.policies[0].colour: unknown setting"),
        ({"policies": [{"name": "p", "resolution_minutes": 5}]}, "sla.policies[0]: missing"),
        ({"policy": []}, "sla.policy: unknown setting"),
    ],
)
def test_config_errors_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_sla(table)
    assert str(err.value).startswith(message)


def test_reassign_strategy_is_checked_when_strategies_are_known() -> None:
    table = with_policy(reassign="round_robbin")
    assert parse_sla(table).policies[0].on_breach.reassign == "round_robbin"
    with pytest.raises(ConfigError, match=r"sla.policies\[0\].reassign: unknown strategy"):
        parse_sla(table, reassign_strategies={"round_robin", "least_loaded"})


def test_results_hold_while_the_calendar_timeline_widens() -> None:
    calendar = Calendar.from_hours("fresh", "Europe/Berlin", {d: ["09:00-17:00"] for d in WEEKDAYS})
    week = calendar.business_minutes_between(eu(2026, 3, 23, 9), eu(2026, 3, 30, 9))
    # far in the past and far ahead (a target of about two years of business days)
    assert calendar.add_business_time(eu(2015, 3, 6, 16), 120) == eu(2015, 3, 9, 10)
    far = calendar.add_business_time(eu(2026, 3, 2, 9), 520 * 480)
    assert far == eu(2028, 2, 25, 17)  # 104 weeks of five days, ending on a Friday
    assert calendar.business_minutes_between(eu(2026, 3, 23, 9), eu(2026, 3, 30, 9)) == week
    assert calendar.business_minutes_between(eu(2026, 3, 2, 9), far) == 520 * 480
    with pytest.raises(ValueError, match="never open"):
        calendar.add_business_time(eu(2026, 3, 2, 9), 1e9)


def test_next_check_is_never_after_the_first_signal() -> None:
    """The sweep reads a ticket only once its stored check time has come: that time must not
    be later than the first moment ``sweep`` finds a signal, whatever the stored state, and a
    signal must be there at that time (else the ticket would be read for nothing)."""
    rng = random.Random(11)
    calendars = {"24x7": Calendar.always(), "eu": OFFICE_EU, "lunch": LUNCH}
    opened0 = datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    checked = 0
    for i in range(300):
        cal_name = rng.choice(list(calendars))
        calendar = calendars[cal_name]
        policy = SlaPolicy(
            f"p{i}",
            first_response_minutes=rng.choice([15, 60, 240]),
            resolution_minutes=rng.choice([120, 480, 1440]),
            calendar=cal_name,
            warn_at=rng.choice([0, 0.5, 0.8]),
        )
        opened = opened0 + timedelta(minutes=rng.randrange(0, 5 * 1440))
        first_response, resolution = due_times(policy, calendar, opened)
        paused: tuple[tuple[datetime, datetime | None], ...] = ()
        if rng.random() < 0.3:  # pending now, since some time after opening
            paused = ((opened + timedelta(minutes=rng.randrange(1, 600)), None),)
        fired = frozenset(
            k
            for k in ("warning:first_response", "breach:first_response", "warning:resolution")
            if rng.random() < 0.2
        )
        snapshot = SlaSnapshot(
            i,
            opened,
            policy=policy.name,
            first_response_at=opened + timedelta(minutes=5) if rng.random() < 0.3 else None,
            first_response_due=first_response,
            resolution_due=resolution,
            paused=paused,
            fired=fired,
        )
        check = next_check(snapshot, calendar, policy)
        first_signal = None
        at = opened
        while at < opened + timedelta(days=8):
            if sweep([snapshot], at, [policy], calendars):
                first_signal = at
                break
            at += timedelta(minutes=7)
        if first_signal is None:
            assert check is None or sweep([snapshot], check, [policy], calendars) is not False
            continue
        checked += 1
        assert check is not None and check <= first_signal, (snapshot, check, first_signal)
        assert sweep([snapshot], check, [policy], calendars), (snapshot, check)
    assert checked > 150  # most generated tickets do have a signal ahead
