"""SLA policies, business-hours calendars, due times, warnings and breaches. Pure: the clock is
passed in.

Business time is counted on wall-clock opening hours in the calendar's time zone ("09:00-17:00"
means 09:00 to 17:00 on the office clock, whatever the UTC offset that day) and measured as real
elapsed time within them. A 9-17 day is 8 hours on DST days too; only hours that cover the
transition itself (say 00:00-06:00 on the night clocks change) are an hour shorter or longer.

Each calendar keeps a lazily built timeline of its opening intervals (UTC microseconds) with
cumulative business time, so "add N business minutes" and "business minutes between" are two
bisections instead of a day-by-day walk.

Firing once: a signal's ``key`` ("warning:first_response", "breach:resolution", ...) goes into the
ticket's ``fired`` set in the same transaction that queues its pings; ``evaluate``/``sweep`` never
return a signal whose key is in the set.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import ConfigError
from core.tables import build
from core.tickets import Priority

Kind = Literal["warning", "breach"]
Target = Literal["first_response", "resolution"]
WARNING: Kind = "warning"
BREACH: Kind = "breach"
FIRST_RESPONSE: Target = "first_response"
RESOLUTION: Target = "resolution"

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = "24x7"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_MINUTE_US = 60_000_000
# An add_business_time that needs more than this many years of timeline is a configuration error
# (a calendar that never opens, a target of centuries), not something to loop on.
_MAX_YEARS_AHEAD = 20

Range = tuple[int, int]  # minutes since local midnight, [start, end); end may be 1440 (24:00)
_FULL_DAY: Range = (0, 1440)


def _us(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass an aware (UTC) datetime")
    return (at - _EPOCH) // _US


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _minutes_us(minutes: float) -> int:
    return round(minutes * _MINUTE_US)


@dataclass(frozen=True, slots=True)
class _Timeline:
    """Opening intervals of local days [first_day, end_day), merged and in UTC microseconds.

    ``cums[i]`` is the business time before ``starts[i]``, counted from a fixed anchor so that
    values stay valid when the timeline is rebuilt over a wider range.
    """

    first_day: date
    end_day: date
    lo_us: int
    hi_us: int
    starts: list[int]
    ends: list[int]
    cums: list[int]
    head_cum: int
    end_cum: int


class _TimelineCache:
    __slots__ = ("anchor_us", "continuous", "lock", "timeline", "zone")

    def __init__(self, zone: ZoneInfo, continuous: bool) -> None:
        self.zone = zone
        self.continuous = continuous
        self.timeline: _Timeline | None = None
        self.anchor_us: int | None = None
        # Rebuilds are rare and serialized (a sweep thread and the event loop may share a
        # calendar); readers take no lock: each uses one immutable _Timeline.
        self.lock = threading.Lock()


@dataclass(frozen=True)
class Calendar:
    """Weekly opening hours (Monday first, several ranges a day allowed) and holidays, in a zone.

    Datetimes in and out are aware; results are in UTC. Holidays are local dates.
    """

    name: str
    timezone: str = "UTC"
    hours: tuple[tuple[Range, ...], ...] = ((),) * 7
    holidays: frozenset[date] = frozenset()
    _cache: _TimelineCache = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if len(self.hours) != 7:
            raise ValueError("hours: one entry per weekday, Monday first")
        for day, ranges in zip(DAYS, self.hours, strict=True):
            previous = 0
            for start, end in ranges:
                if not previous <= start < end <= 1440:
                    raise ValueError(f"hours.{day}: ranges must be ordered, disjoint, in 0..1440")
                previous = end
        if not any(self.hours):
            raise ValueError("hours: the calendar is never open")
        continuous = not self.holidays and all(day == (_FULL_DAY,) for day in self.hours)
        object.__setattr__(self, "_cache", _TimelineCache(zone, continuous))

    @classmethod
    def always(cls, name: str = ALWAYS, timezone: str = "UTC") -> Calendar:
        return cls(name, timezone, ((_FULL_DAY,),) * 7)

    @classmethod
    def from_hours(
        cls,
        name: str,
        timezone: str,
        hours: Mapping[str, Any],
        holidays: Iterable[date | str] = (),
    ) -> Calendar:
        """``hours`` like {"mon": ["09:00-12:00", "13:00-17:00"], ...}; a missing day is closed."""
        return cls(
            name,
            timezone,
            _parse_hours(hours, "hours"),
            frozenset(_parse_holiday(h, f"holidays[{i}]") for i, h in enumerate(holidays)),
        )

    @property
    def continuous(self) -> bool:
        """Open around the clock every day: business time is plain elapsed time."""
        return self._cache.continuous

    # -- public API -------------------------------------------------------------------------

    def add_business_time(self, start: datetime, minutes: float) -> datetime:
        """The earliest instant by which ``minutes`` of business time have passed since ``start``.

        Starting outside hours counts from the next opening; a target that ends exactly at a
        closing time is due at that closing time (not at the next opening).
        """
        return _dt(self._add_us(_us(start), _minutes_us(minutes)))

    def business_minutes_between(self, a: datetime, b: datetime) -> float:
        """Business minutes from ``a`` to ``b`` (negative when ``b`` is before ``a``)."""
        a_us, b_us = _us(a), _us(b)
        return (self._cum(b_us) - self._cum(a_us)) / _MINUTE_US

    def is_open(self, at: datetime) -> bool:
        t = _us(at)
        if self._cache.continuous:
            return True
        timeline = self._cover(t)
        i = bisect_right(timeline.starts, t) - 1
        return i >= 0 and t < timeline.ends[i]

    # -- cumulative business time --------------------------------------------------------------

    def _add_us(self, start: int, delta: int) -> int:
        if delta < 0:
            raise ValueError("business time to add must not be negative")
        if delta == 0:
            return start
        return self._inv(self._cum(start) + delta)

    def _cum(self, t: int) -> int:
        """Business microseconds from the anchor to ``t`` (any monotonic origin will do)."""
        if self._cache.continuous:
            return t
        tl = self._cover(t)
        i = bisect_right(tl.starts, t) - 1
        if i < 0:
            return tl.head_cum
        return tl.cums[i] + min(t, tl.ends[i]) - tl.starts[i]

    def _inv(self, x: int) -> int:
        """The earliest instant whose cumulative business time reaches ``x``."""
        if self._cache.continuous:
            return x
        tl = self._cache.timeline
        assert tl is not None, "_inv is only called with a value from _cum"
        limit = tl.end_day.year + _MAX_YEARS_AHEAD
        while x > tl.end_cum:
            if tl.end_day.year >= limit:
                raise ValueError(f"calendar {self.name!r}: target beyond {limit} (never open?)")
            with self._cache.lock:
                tl = self._cache.timeline or tl
                if x > tl.end_cum:
                    # widen once by about the years still missing, not a year per rebuild
                    years = max(1, tl.end_day.year - tl.first_day.year)
                    per_year = max(1, (tl.end_cum - tl.head_cum) // years)
                    more = min(-(-(x - tl.end_cum) // per_year) + 1, limit - tl.end_day.year)
                    tl = self._rebuild(tl.first_day, _add_years(tl.end_day, more))
        j = bisect_left(tl.cums, x)
        if j == 0:
            return tl.starts[0]
        return tl.starts[j - 1] + (x - tl.cums[j - 1])

    def _cover(self, t: int) -> _Timeline:
        tl = self._cache.timeline
        if tl is not None and tl.lo_us <= t < tl.hi_us:
            return tl
        year = _dt(t).astimezone(self._cache.zone).year
        first, end = _add_years(date(year, 1, 1), -1), _add_years(date(year, 1, 1), 2)
        with self._cache.lock:
            tl = self._cache.timeline  # another thread may have widened it meanwhile
            if tl is not None:
                if tl.lo_us <= t < tl.hi_us:
                    return tl
                # only ever widen, so the anchor stays inside and old cumulative values hold
                first, end = min(first, tl.first_day), max(end, tl.end_day)
            return self._rebuild(first, end)

    def _rebuild(self, first: date, end: date) -> _Timeline:
        starts: list[int] = []
        ends: list[int] = []
        day = first
        while day < end:
            ranges = self.hours[day.weekday()]
            if ranges and day not in self.holidays:
                for start_minute, end_minute in ranges:
                    a, b = self._wall_us(day, start_minute), self._wall_us(day, end_minute)
                    if starts and a <= ends[-1]:  # 24:00 meets the next day's 00:00: one interval
                        ends[-1] = max(ends[-1], b)
                    elif b > a:  # a range inside a DST gap has no real duration
                        starts.append(a)
                        ends.append(b)
            day += _DAY
        cums: list[int] = []
        total = 0
        for a, b in zip(starts, ends, strict=True):
            cums.append(total)
            total += b - a
        lo_us, hi_us = self._wall_us(first, 0), self._wall_us(end, 0)
        cache = self._cache
        if cache.anchor_us is None:
            cache.anchor_us = lo_us
        # shift so that the anchor keeps cumulative value 0 across rebuilds
        i = bisect_right(starts, cache.anchor_us) - 1
        shift = 0 if i < 0 else cums[i] + min(cache.anchor_us, ends[i]) - starts[i]
        timeline = _Timeline(
            first_day=first,
            end_day=end,
            lo_us=lo_us,
            hi_us=hi_us,
            starts=starts,
            ends=ends,
            cums=[c - shift for c in cums],
            head_cum=-shift,
            end_cum=total - shift,
        )
        cache.timeline = timeline  # one reference swap: a concurrent reader sees old or new
        return timeline

    def _wall_us(self, day: date, minute: int) -> int:
        """A local wall-clock time as UTC microseconds; a time inside a DST gap (which the
        office clock skips) maps to the instant the clocks jump."""
        if minute == 1440:
            day, minute = day + _DAY, 0
        zone = self._cache.zone
        wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
        t = _us(wall)  # fold=0: an ambiguous (fall-back) time is its first occurrence
        back = _dt(t).astimezone(zone)
        if back.replace(tzinfo=None) == wall.replace(tzinfo=None):
            return t
        # In a gap, fold=1 maps before the jump and fold=0 after it: bisect for the jump.
        lo, hi = _us(wall.replace(fold=1)), t
        after = _dt(hi).astimezone(zone).utcoffset()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _dt(mid).astimezone(zone).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi


def _add_years(day: date, years: int) -> date:
    return date(min(max(day.year + years, 2), 9998), day.month, day.day)


_RANGE = re.compile(r"^(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})$")


def _parse_hours(spec: Mapping[str, Any], where: str) -> tuple[tuple[Range, ...], ...]:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a table like {{mon = ['09:00-17:00']}}")
    unknown = sorted(set(spec) - set(DAYS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown day (one of: {', '.join(DAYS)})")
    week: list[tuple[Range, ...]] = []
    for day in DAYS:
        key = f"{where}.{day}"
        value = spec.get(day, [])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError(f"{key}: expected a list of 'HH:MM-HH:MM'")
        ranges: list[Range] = []
        for item in items:
            match = _RANGE.match(item.strip()) if isinstance(item, str) else None
            if match is None:
                raise ValueError(f"{key}: {item!r} is not HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
                raise ValueError(f"{key}: {item!r} is not a time of day")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start >= end:
                # overnight shifts are written as two ranges: "22:00-24:00" and "00:00-06:00"
                raise ValueError(f"{key}: {item!r} ends before it starts (split at 24:00)")
            ranges.append((start, end))
        ranges.sort()
        for (_, end1), (start2, _) in pairwise(ranges):
            if start2 < end1:
                raise ValueError(f"{key}: ranges overlap")
        week.append(tuple(ranges))
    if not any(week):
        raise ValueError(f"{where}: the calendar is never open")
    return tuple(week)


def _parse_holiday(value: object, where: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{where}: {value!r} is not a date (YYYY-MM-DD)")


# -- policies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreachAction:
    """What a breach does besides pinging the supervisors (which it always does)."""

    raise_priority_to: str | None = None
    reassign: str | None = None  # an assignment strategy's name


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    first_response_minutes: float
    resolution_minutes: float
    # empty = any; a ticket matches when both match
    priorities: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    calendar: str = ALWAYS
    # share of a target after which the assignee is warned; 0 = no warning
    warn_at: float = 0.8
    on_breach: BreachAction = BreachAction()

    def __post_init__(self) -> None:
        if self.first_response_minutes <= 0 or self.resolution_minutes <= 0:
            raise ValueError(f"policy {self.name!r}: targets must be positive")
        if not 0 <= self.warn_at < 1:
            raise ValueError(f"policy {self.name!r}: warn_at must be in [0, 1)")

    def matches(self, priority: str, tier: str | None) -> bool:
        return (not self.priorities or priority in self.priorities) and (
            not self.tiers or tier in self.tiers
        )


def choose_policy(
    policies: Sequence[SlaPolicy], priority: str, tier: str | None
) -> SlaPolicy | None:
    """The first policy, in configuration order, that matches; None = no SLA."""
    for policy in policies:
        if policy.matches(priority, tier):
            return policy
    return None


def priority_after_breach(policy: SlaPolicy, current: str) -> str | None:
    """The priority a breach raises the ticket to; None when it would not be higher."""
    target = policy.on_breach.raise_priority_to
    if target is None:
        return None
    order = list(Priority)
    rank = order.index(Priority(current)) if current in order else -1
    return target if order.index(Priority(target)) > rank else None


@dataclass(frozen=True, slots=True)
class _Targets:
    """A policy's targets in microseconds; warn offsets rounded once so every path agrees."""

    first_response: int
    first_response_warn: int  # 0 = no warning
    resolution: int
    resolution_warn: int

    @classmethod
    def of(cls, policy: SlaPolicy) -> _Targets:
        fr, res = _minutes_us(policy.first_response_minutes), _minutes_us(policy.resolution_minutes)
        return cls(fr, round(fr * policy.warn_at), res, round(res * policy.warn_at))


def due_times(
    policy: SlaPolicy, calendar: Calendar, opened_at: datetime
) -> tuple[datetime, datetime]:
    """(first_response_due, resolution_due) for a ticket opened at ``opened_at``, no pauses."""
    t = _Targets.of(policy)
    opened = _us(opened_at)
    return (
        _dt(calendar._add_us(opened, t.first_response)),
        _dt(calendar._add_us(opened, t.resolution)),
    )


Pause = tuple[datetime, datetime | None]


def resolution_due(
    policy: SlaPolicy, calendar: Calendar, opened_at: datetime, paused: Sequence[Pause]
) -> datetime | None:
    """The resolution due time when the clock stops during ``paused`` (pending on the customer).

    A pause still open (end None) stops the clock: None, unless the target was reached before
    that pause began (then the due time stands: the breach already happened).
    """
    due = _due_with_pauses(
        calendar, _us(opened_at), _Targets.of(policy).resolution, _pauses_us(paused)
    )
    return None if due is None else _dt(due)


def resume_due(
    calendar: Calendar, due: datetime, paused_since: datetime, now: datetime
) -> datetime:
    """The stored resolution due time once a pause (pending since ``paused_since``) ends at
    ``now``: pushed back by the business time the pause covered. A due time reached before the
    pause began stands (the breach had already happened)."""
    start, end, at = _us(paused_since), _us(now), _us(due)
    if at <= start or end <= start:
        return due
    return _dt(calendar._inv(calendar._cum(at) + calendar._cum(end) - calendar._cum(start)))


def _pauses_us(paused: Sequence[Pause]) -> list[tuple[int, int | None]]:
    pauses = [(_us(a), None if b is None else _us(b)) for a, b in paused]
    if len(pauses) > 1:
        pauses.sort(key=lambda p: p[0])
    return pauses


def _due_with_pauses(
    calendar: Calendar, opened: int, target: int, pauses: Sequence[tuple[int, int | None]]
) -> int | None:
    if not pauses:
        return calendar._add_us(opened, target)
    x = calendar._cum(opened) + target  # the cumulative business time at which it is due
    cursor = opened  # pauses are clipped to start after the ticket opened and after each other
    for start, end in pauses:
        start = max(start, cursor)
        if end is not None and end <= start:
            continue
        at_start = calendar._cum(start)
        if at_start >= x:
            break  # reached before this pause began
        if end is None:
            return None
        x += calendar._cum(end) - at_start
        cursor = end
    return calendar._inv(x)


# -- evaluation ----------------------------------------------------------------------------


def fired_key(kind: Kind, target: Target) -> str:
    return f"{kind}:{target}"


_FR_WARN = fired_key(WARNING, FIRST_RESPONSE)
_FR_BREACH = fired_key(BREACH, FIRST_RESPONSE)
_RES_WARN = fired_key(WARNING, RESOLUTION)
_RES_BREACH = fired_key(BREACH, RESOLUTION)


@dataclass(frozen=True, slots=True)
class SlaSignal:
    kind: Kind
    target: Target
    due: datetime  # the target's due time (for a warning: when it will breach)
    policy: str

    @property
    def key(self) -> str:
        """What to add to the ticket's ``fired`` set once the signal's pings are queued."""
        return fired_key(self.kind, self.target)


@dataclass(frozen=True, slots=True)
class SlaSnapshot:
    """What the SLA engine needs of one ticket (a row of the sweep's query).

    ``first_response_due``/``resolution_due`` are the stored due times: ``due_times`` at
    opening, and ``resolution_due`` over the *closed* pauses, recomputed when a pause ends (so
    while pending it keeps its value from before). ``sweep`` trusts them and computes from the
    calendar only when one is None. ``paused`` is the ticket's pending intervals in order; only
    the last may be open (end None: pending now). ``policy`` names the policy the due times
    came from; None (or a policy no longer configured) = match by priority and tier.
    """

    ticket_id: int
    opened_at: datetime
    priority: str = Priority.NORMAL.value
    tier: str | None = None
    policy: str | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    paused: tuple[Pause, ...] = ()
    fired: frozenset[str] = frozenset()

    @property
    def pending(self) -> bool:
        return bool(self.paused) and self.paused[-1][1] is None


def _crossed(
    target: Target,
    due: int | None,
    warn: int | None,
    now: int,
    fired: Collection[str],
    policy: str,
) -> SlaSignal | None:
    warn_key, breach_key = fired_key(WARNING, target), fired_key(BREACH, target)
    if due is not None and now >= due:
        if breach_key not in fired:
            return SlaSignal(BREACH, target, _dt(due), policy)
    elif (
        warn is not None
        and due is not None
        and now >= warn
        and warn_key not in fired
        and breach_key not in fired
    ):
        return SlaSignal(WARNING, target, _dt(due), policy)
    return None


def evaluate(
    snapshot: SlaSnapshot, now: datetime, calendar: Calendar, policy: SlaPolicy
) -> list[SlaSignal]:
    """Warnings and breaches crossed by ``now`` and not yet fired, computed from scratch.

    A target stops counting once met (first response sent, ticket resolved). A warning that
    the breach overtook (both crossed since the last look) is not sent: the breach says more.
    While pending, the resolution clock stands still and warns nobody; a breach reached
    before the pause began still fires.
    """
    t = _Targets.of(policy)
    now_us, opened = _us(now), _us(snapshot.opened_at)
    signals: list[SlaSignal] = []
    if snapshot.first_response_at is None:
        due = calendar._add_us(opened, t.first_response)
        warn = calendar._add_us(opened, t.first_response_warn) if t.first_response_warn else None
        if signal := _crossed(FIRST_RESPONSE, due, warn, now_us, snapshot.fired, policy.name):
            signals.append(signal)
    if snapshot.resolved_at is None:
        signal = _resolution_signal(snapshot, now_us, calendar, policy.name, t)
        if signal:
            signals.append(signal)
    return signals


def _resolution_signal(
    snapshot: SlaSnapshot, now: int, calendar: Calendar, policy: str, t: _Targets
) -> SlaSignal | None:
    pauses = _pauses_us(snapshot.paused)
    opened = _us(snapshot.opened_at)
    due = _due_with_pauses(calendar, opened, t.resolution, pauses)
    warn = None
    if t.resolution_warn and not snapshot.pending:
        warn = _due_with_pauses(calendar, opened, t.resolution_warn, pauses)
    return _crossed(RESOLUTION, due, warn, now, snapshot.fired, policy)


def next_check(snapshot: SlaSnapshot, calendar: Calendar, policy: SlaPolicy) -> datetime | None:
    """The earliest time at which ``sweep`` can find a signal for the ticket as stored; None
    when nothing is left to fire for now (targets met or fired, or the clock stopped). The sweep
    only reads tickets whose stored check time has come, so it costs what is due, not what is
    open. A warning is due once the due time falls within the warning margin of now:
    ``add(now, margin) >= due``, i.e. ``now >= inv(cum(due) - margin)``."""
    t = _Targets.of(policy)
    fired, opened = snapshot.fired, _us(snapshot.opened_at)
    times: list[int] = []
    if snapshot.first_response_at is None and _FR_BREACH not in fired:
        stored = snapshot.first_response_due
        due = _us(stored) if stored is not None else calendar._add_us(opened, t.first_response)
        if t.first_response_warn and _FR_WARN not in fired:
            margin = t.first_response - t.first_response_warn
            times.append(calendar._inv(calendar._cum(due) - margin))
        else:
            times.append(due)
    if snapshot.resolved_at is None and _RES_BREACH not in fired:
        stored = snapshot.resolution_due
        due_or_none = (
            _us(stored)
            if stored is not None
            else _due_with_pauses(calendar, opened, t.resolution, _pauses_us(snapshot.paused))
        )
        if due_or_none is None:
            pass  # pending with the target not reached before the pause: nothing until resumed
        elif snapshot.pending:
            if due_or_none <= _us(snapshot.paused[-1][0]):
                times.append(due_or_none)  # reached before the pause: the breach still fires
        elif t.resolution_warn and _RES_WARN not in fired:
            margin = t.resolution - t.resolution_warn
            times.append(calendar._inv(calendar._cum(due_or_none) - margin))
        else:
            times.append(due_or_none)
    return _dt(min(times)) if times else None


@dataclass(frozen=True, slots=True)
class _Prepared:
    policy: SlaPolicy
    calendar: Calendar
    targets: _Targets
    # A stored due time at or before the cutoff means the warning share has passed: remaining
    # business time <= (1 - warn_at) x target. One calendar call per policy, not per ticket.
    first_response_cutoff: datetime | None
    resolution_cutoff: datetime | None


def sweep(
    snapshots: Iterable[SlaSnapshot],
    now: datetime,
    policies: Sequence[SlaPolicy],
    calendars: Mapping[str, Calendar],
) -> list[tuple[int, SlaSignal]]:
    """``evaluate`` over many tickets, fast: stored due times are compared with ``now`` and with
    per-policy warning cutoffs; only pending tickets and tickets without stored due times are
    computed from the calendar. The result equals the per-ticket ``evaluate`` loop when the
    stored due times are the ones ``due_times``/``resolution_due`` gave and closed pauses lie
    before ``now``.
    """
    now_us = _us(now)
    # Aware datetimes with the same tzinfo compare without utcoffset() calls: stored due
    # times are UTC, so compare in UTC.
    now = now.astimezone(UTC)
    prepared: dict[str, _Prepared] = {}
    for policy in policies:
        calendar = calendars.get(policy.calendar)
        if calendar is None:
            raise ValueError(f"policy {policy.name!r}: unknown calendar {policy.calendar!r}")
        t = _Targets.of(policy)
        fr_cut = res_cut = None
        if t.first_response_warn:
            fr_cut = _dt(calendar._add_us(now_us, t.first_response - t.first_response_warn))
        if t.resolution_warn:
            res_cut = _dt(calendar._add_us(now_us, t.resolution - t.resolution_warn))
        prepared.setdefault(policy.name, _Prepared(policy, calendar, t, fr_cut, res_cut))
    by_match: dict[tuple[str, str | None], _Prepared | None] = {}

    out: list[tuple[int, SlaSignal]] = []
    append = out.append
    for s in snapshots:
        prep = prepared.get(s.policy) if s.policy is not None else None
        if prep is None:
            match_key = (s.priority, s.tier)
            if match_key not in by_match:
                chosen = choose_policy(policies, s.priority, s.tier)
                by_match[match_key] = None if chosen is None else prepared[chosen.name]
            prep = by_match[match_key]
            if prep is None:
                continue
        fired = s.fired
        if s.first_response_at is None:
            due = s.first_response_due
            if due is None:
                due = _dt(prep.calendar._add_us(_us(s.opened_at), prep.targets.first_response))
            if due <= now:
                if _FR_BREACH not in fired:
                    append((s.ticket_id, SlaSignal(BREACH, FIRST_RESPONSE, due, prep.policy.name)))
            elif (
                prep.first_response_cutoff is not None
                and due <= prep.first_response_cutoff
                and _FR_WARN not in fired
                and _FR_BREACH not in fired
            ):
                append((s.ticket_id, SlaSignal(WARNING, FIRST_RESPONSE, due, prep.policy.name)))
        if s.resolved_at is None:
            paused = s.paused
            due = s.resolution_due
            if due is None:
                signal = _resolution_signal(
                    s, now_us, prep.calendar, prep.policy.name, prep.targets
                )
                if signal is not None:
                    append((s.ticket_id, signal))
            elif paused and paused[-1][1] is None:
                # Pending: the stored due time (from the closed pauses) only counts if it came
                # before the clock stopped; a pending ticket is not warned.
                if due <= now and due <= paused[-1][0] and _RES_BREACH not in fired:
                    append((s.ticket_id, SlaSignal(BREACH, RESOLUTION, due, prep.policy.name)))
            elif due <= now:
                if _RES_BREACH not in fired:
                    append((s.ticket_id, SlaSignal(BREACH, RESOLUTION, due, prep.policy.name)))
            elif (
                prep.resolution_cutoff is not None
                and due <= prep.resolution_cutoff
                and _RES_WARN not in fired
                and _RES_BREACH not in fired
            ):
                append((s.ticket_id, SlaSignal(WARNING, RESOLUTION, due, prep.policy.name)))
    return out


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarSettings:
    """``[[sla.calendars]]`` as written in the TOML file."""

    name: str
    hours: dict[str, Any]  # mon..sun -> ["09:00-17:00", ...]
    timezone: str = "UTC"
    holidays: tuple[object, ...] = ()  # "2026-12-25" strings or TOML dates


@dataclass(frozen=True)
class PolicySettings:
    """``[[sla.policies]]`` as written in the TOML file."""

    name: str
    first_response_minutes: float
    resolution_minutes: float
    priorities: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    calendar: str = ALWAYS
    warn_at: float = 0.8
    raise_priority_to: str = ""
    reassign: str = ""


@dataclass(frozen=True)
class _SlaTable:
    calendars: tuple[CalendarSettings, ...] = ()
    policies: tuple[PolicySettings, ...] = ()


@dataclass(frozen=True)
class SlaSettings:
    """Validated SLA configuration: calendars (plus the built-in "24x7") and ordered policies."""

    calendars: tuple[Calendar, ...] = ()
    policies: tuple[SlaPolicy, ...] = ()

    @property
    def calendar_map(self) -> dict[str, Calendar]:
        return {ALWAYS: _ALWAYS, **{c.name: c for c in self.calendars}}

    def calendar_for(self, policy: SlaPolicy) -> Calendar:
        return self.calendar_map[policy.calendar]


_ALWAYS = Calendar.always()


def parse_sla(
    table: Mapping[str, Any],
    *,
    reassign_strategies: Collection[str] | None = None,
    where: str = "sla",
) -> SlaSettings:
    """Validate the ``[sla]`` table; every error is a ConfigError naming the key.

    ``reassign_strategies``, when given, is the set of assignment strategy names a policy's
    ``reassign`` may use.
    """
    raw: _SlaTable = build(_SlaTable, table, where)
    calendars: list[Calendar] = []
    names: set[str] = {ALWAYS}
    for i, c in enumerate(raw.calendars):
        key = f"{where}.calendars[{i}]"
        if c.name in names:
            builtin = " (built in)" if c.name == ALWAYS else ""
            raise ConfigError(f"{key}.name: calendar {c.name!r} is defined twice{builtin}")
        names.add(c.name)
        try:
            hours = _parse_hours(c.hours, f"{key}.hours")
            holidays = frozenset(
                _parse_holiday(h, f"{key}.holidays[{j}]") for j, h in enumerate(c.holidays)
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None
        try:
            calendars.append(Calendar(c.name, c.timezone, hours, holidays))
        except ValueError:
            raise ConfigError(f"{key}.timezone: unknown time zone {c.timezone!r}") from None

    priorities = {p.value for p in Priority}
    policies: list[SlaPolicy] = []
    for i, p in enumerate(raw.policies):
        key = f"{where}.policies[{i}]"
        if any(p.name == other.name for other in policies):
            raise ConfigError(f"{key}.name: policy {p.name!r} is defined twice")
        if p.calendar not in names:
            raise ConfigError(f"{key}.calendar: unknown calendar {p.calendar!r}")
        for j, priority in enumerate(p.priorities):
            if priority not in priorities:
                raise ConfigError(
                    f"{key}.priorities[{j}]: unknown priority {priority!r} "
                    f"(one of: {', '.join(sorted(priorities))})"
                )
        if p.raise_priority_to and p.raise_priority_to not in priorities:
            raise ConfigError(f"{key}.raise_priority_to: unknown priority {p.raise_priority_to!r}")
        if p.reassign and reassign_strategies is not None and p.reassign not in reassign_strategies:
            raise ConfigError(
                f"{key}.reassign: unknown strategy {p.reassign!r} "
                f"(one of: {', '.join(sorted(reassign_strategies))})"
            )
        for name in ("first_response_minutes", "resolution_minutes"):
            if getattr(p, name) <= 0:
                raise ConfigError(f"{key}.{name}: must be positive")
        if not 0 <= p.warn_at < 1:
            raise ConfigError(f"{key}.warn_at: must be at least 0 and below 1 (0 = no warning)")
        policies.append(
            SlaPolicy(
                name=p.name,
                first_response_minutes=p.first_response_minutes,
                resolution_minutes=p.resolution_minutes,
                priorities=frozenset(p.priorities),
                tiers=frozenset(t.strip().lower() for t in p.tiers),
                calendar=p.calendar,
                warn_at=p.warn_at,
                on_breach=BreachAction(p.raise_priority_to or None, p.reassign or None),
            )
        )
    return SlaSettings(tuple(calendars), tuple(policies))
