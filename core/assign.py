"""Who gets a routed ticket: round-robin, least-loaded, skills match, nearest region.

Pure: the caller loads each candidate's load (open tickets, capacity, availability) and passes
the clock in. Every strategy first drops agents that are unavailable, off shift or at capacity,
so no strategy can pick them; when nobody is left, the result says why and the ticket stays in
the team queue.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name; ``ValueError`` names it when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def parse_hours(text: str) -> tuple[int, int]:
    """ "HH:MM-HH:MM" -> (start, end) in minutes after midnight; start > end crosses midnight."""
    m = _HOURS.match(text)
    if not m:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{text!r} is not a valid time range")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end or (start == 0 and end == 24 * 60):
        # "09:00-09:00" is ambiguous (empty or all day); a whole day is written by omitting hours
        raise ValueError(f"{text!r} is empty or the whole day (omit hours for all day)")
    return start, end


def parse_days(days: Iterable[str]) -> frozenset[int]:
    """["mon", "Sat"] -> {0, 5}; ValueError names a bad day."""
    found = set()
    for day in days:
        if not isinstance(day, str) or day.strip().lower()[:3] not in DAYS:
            raise ValueError(f"{day!r} is not a weekday (mon..sun)")
        found.add(DAYS.index(day.strip().lower()[:3]))
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """A weekly window in a time zone: ``days`` (0 = Monday; empty = every day) and a daily
    ``start``-``end`` in minutes (``None`` = all day). A window crossing midnight belongs to the
    day it starts on: Friday 18:00-08:00 includes Saturday 03:00, not Friday 03:00."""

    tz: str = "UTC"
    days: frozenset[int] = frozenset()
    start: int | None = None
    end: int | None = None
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", zone(self.tz))
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        days = ",".join(DAYS[d] for d in sorted(self.days)) or "every day"
        hours = ""
        if self.start is not None and self.end is not None:
            hours = f" {_hm(self.start)}-{_hm(self.end)}"
        object.__setattr__(self, "_text", f"{days}{hours} {self.tz}")

    @classmethod
    def parse(cls, tz: str = "UTC", days: Iterable[str] = (), hours: str = "") -> WorkingHours:
        start, end = parse_hours(hours) if hours else (None, None)
        return cls(tz=tz, days=parse_days(days), start=start, end=end)

    def local(self, now: datetime) -> datetime:
        if now.tzinfo is None:
            raise ValueError("a naive datetime has no time zone; pass an aware one")
        return now.astimezone(self._zone)

    def contains(self, now: datetime) -> bool:
        return self.contains_local(self.local(now))

    def contains_local(self, local: datetime) -> bool:
        """``local`` already in this window's zone (routing converts once per zone per ticket)."""
        day = local.weekday()
        start, end = self.start, self.end
        if start is None or end is None:
            return not self.days or day in self.days
        minute = local.hour * 60 + local.minute
        if start < end:
            inside = start <= minute < end
        elif minute >= start:
            inside = True
        elif minute < end:
            day = (day - 1) % 7  # the small hours belong to the evening that started the window
            inside = True
        else:
            inside = False
        return inside and (not self.days or day in self.days)

    def describe(self) -> str:
        """ "sat,sun 18:00-08:00 Europe/Berlin" (worked out once)."""
        return self._text


def _hm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """An agent as assignment sees them: the caller counts ``open_tickets`` from the database."""

    agent_id: int
    name: str
    team: str
    skills: frozenset[str] = frozenset()
    region: str = ""
    open_tickets: int = 0
    max_open: int = 25
    available: bool = True  # active and not marked away
    working_hours: WorkingHours | None = None

    @property
    def load(self) -> float:
        return self.open_tickets / self.max_open if self.max_open > 0 else 1.0


@dataclass(frozen=True, slots=True)
class AssignmentResult:
    """``agent_id`` None means nobody: the ticket stays in the team queue; ``reason`` goes into
    the ticket's history either way."""

    agent_id: int | None
    reason: str
    strategy: str = ""

    @property
    def assigned(self) -> bool:
        return self.agent_id is not None


@dataclass(frozen=True, slots=True)
class AssignmentContext:
    now: datetime
    team: str = ""  # when set, candidates of other teams are ignored
    last_assigned_id: int | None = None  # round-robin: the team's previous pick
    ticket_tags: Collection[str] = ()  # skills match
    customer_region: str = ""  # nearest region
    region_distance: Mapping[tuple[str, str], float] | None = None
    continents: Mapping[str, str] | None = None  # region -> continent, overrides the default


# The default "same continent" rule for region codes we commonly see; a deployment with other
# codes passes its own ``continents`` or an explicit ``region_distance`` table.
_REGIONS_BY_CONTINENT = {
    "europe": "eu uk gb ie de at ch fr be nl lu es pt it pl cz se no dk fi emea",
    "americas": "us ca mx na amer latam br ar cl co",
    "asia-pacific": "apac jp cn hk tw kr sg my th vn id ph in au nz",
    "middle-east-africa": "mea ae sa il za eg ng ke",
}
CONTINENTS: Mapping[str, str] = {
    region: continent
    for continent, regions in _REGIONS_BY_CONTINENT.items()
    for region in regions.split()
}
SAME_REGION, SAME_CONTINENT, FAR = 0.0, 1.0, 2.0


def region_distance(
    a: str,
    b: str,
    table: Mapping[tuple[str, str], float] | None = None,
    continents: Mapping[str, str] | None = None,
) -> float:
    """0 same region, 1 same continent, 2 otherwise; an explicit table entry wins (either order)."""
    a, b = a.strip().lower(), b.strip().lower()
    if table:
        if (a, b) in table:
            return table[(a, b)]
        if (b, a) in table:
            return table[(b, a)]
    if a == b:
        return SAME_REGION
    cont = CONTINENTS if continents is None else continents
    ca, cb = cont.get(a), cont.get(b)
    return SAME_CONTINENT if ca is not None and ca == cb else FAR


def eligible(
    candidates: Iterable[AgentLoad], now: datetime | None
) -> tuple[list[AgentLoad], dict[str, int]]:
    """The agents who may take one more ticket now, and how many were excluded for what.
    With ``now`` None, working hours are not checked (availability and capacity still are)."""
    ok: list[AgentLoad] = []
    excluded = {"at capacity": 0, "off shift": 0, "unavailable": 0}  # the order of the reason
    for agent in candidates:
        if not agent.available:
            excluded["unavailable"] += 1
        elif (
            now is not None
            and agent.working_hours is not None
            and not agent.working_hours.contains(now)
        ):
            excluded["off shift"] += 1
        elif agent.open_tickets >= agent.max_open:
            excluded["at capacity"] += 1
        else:
            ok.append(agent)
    return ok, excluded


def nobody(team: str, total: int, excluded: Mapping[str, int], extra: str = "") -> str:
    where = f"in team {team!r}" if team else "in the queue's team"
    if total == 0:
        why = "no agents"
    else:
        why = ", ".join(f"{n} {what}" for what, n in excluded.items() if n) or extra
        if extra and why != extra:
            why += f"; {extra}"
    return f"nobody available {where} ({why}); left in the team queue"


def _by_load(agent: AgentLoad) -> tuple[float, int, int]:
    return (agent.load, agent.open_tickets, agent.agent_id)


def _who(agent: AgentLoad) -> str:
    return f"{agent.name} (#{agent.agent_id}, {agent.open_tickets}/{agent.max_open} open)"


def round_robin(
    candidates: Sequence[AgentLoad],
    last_assigned_id: int | None,
    *,
    now: datetime | None = None,
    team: str = "",
) -> AssignmentResult:
    """The next eligible agent after ``last_assigned_id`` in agent id order, wrapping around.
    The order is by id (stable across restarts and processes); the caller stores the pick."""
    ok, excluded = eligible(candidates, now)
    if not ok:
        return AssignmentResult(None, nobody(team, len(candidates), excluded), "round_robin")
    ok.sort(key=lambda a: a.agent_id)
    pick = ok[0]
    if last_assigned_id is not None:
        pick = next((a for a in ok if a.agent_id > last_assigned_id), ok[0])
    after = "" if last_assigned_id is None else f" after #{last_assigned_id}"
    return AssignmentResult(pick.agent_id, f"round robin: {_who(pick)}{after}", "round_robin")


def least_loaded(
    candidates: Sequence[AgentLoad], now: datetime | None, *, team: str = ""
) -> AssignmentResult:
    """The eligible agent with the lowest share of their own capacity in use: 5 of 10 is busier
    than 6 of 25. Ties: fewer open tickets, then lower id."""
    ok, excluded = eligible(candidates, now)
    if not ok:
        return AssignmentResult(None, nobody(team, len(candidates), excluded), "least_loaded")
    pick = min(ok, key=_by_load)
    return AssignmentResult(pick.agent_id, f"least loaded: {_who(pick)}", "least_loaded")


def skills_match(
    candidates: Sequence[AgentLoad],
    ticket_tags: Collection[str],
    *,
    now: datetime | None = None,
    team: str = "",
) -> AssignmentResult:
    """The eligible agent whose skills cover most of the ticket's tags (case-insensitive); ties
    go to the least loaded. Nobody with a matching skill means nobody: a specialist ticket waits
    in the queue rather than going to whoever is free."""
    ok, excluded = eligible(candidates, now)
    if not ok:
        return AssignmentResult(None, nobody(team, len(candidates), excluded), "skills_match")
    tags = {t.casefold() for t in ticket_tags}
    scored = [(len(tags & {s.casefold() for s in a.skills}), a) for a in ok]
    best = max((score for score, _ in scored), default=0)
    if best == 0:
        wanted = ", ".join(sorted(tags)) or "none"
        extra = f"{len(ok)} free but none has a skill for tags [{wanted}]"
        return AssignmentResult(
            None, nobody(team, len(candidates), excluded, extra), "skills_match"
        )
    pick = min((a for score, a in scored if score == best), key=_by_load)
    matched = ", ".join(sorted(tags & {s.casefold() for s in pick.skills}))
    return AssignmentResult(
        pick.agent_id, f"skills match [{matched}]: {_who(pick)}", "skills_match"
    )


def nearest_region(
    candidates: Sequence[AgentLoad],
    customer_region: str,
    region_distance_table: Mapping[tuple[str, str], float] | None = None,
    *,
    continents: Mapping[str, str] | None = None,
    now: datetime | None = None,
    team: str = "",
) -> AssignmentResult:
    """The eligible agent nearest the customer's region (table, else same region < same
    continent < elsewhere); ties go to the least loaded. Without a customer region every agent
    is equally near, so it is least-loaded."""
    ok, excluded = eligible(candidates, now)
    if not ok:
        return AssignmentResult(None, nobody(team, len(candidates), excluded), "nearest_region")
    if not customer_region.strip():
        pick = min(ok, key=_by_load)
        return AssignmentResult(
            pick.agent_id,
            f"customer region unknown; least loaded: {_who(pick)}",
            "nearest_region",
        )

    def key(a: AgentLoad) -> tuple[float, tuple[float, int, int]]:
        far = region_distance(customer_region, a.region, region_distance_table, continents)
        return (far if a.region else FAR + 1, _by_load(a))

    pick = min(ok, key=key)
    far = key(pick)[0]
    how = {SAME_REGION: "same region", SAME_CONTINENT: "same continent"}.get(
        far, f"distance {far:g}"
    )
    return AssignmentResult(
        pick.agent_id,
        f"nearest region ({how}: customer {customer_region}, agent {pick.region or '?'}): "
        f"{_who(pick)}",
        "nearest_region",
    )


def _round_robin(c: Sequence[AgentLoad], ctx: AssignmentContext) -> AssignmentResult:
    return round_robin(c, ctx.last_assigned_id, now=ctx.now, team=ctx.team)


def _least_loaded(c: Sequence[AgentLoad], ctx: AssignmentContext) -> AssignmentResult:
    return least_loaded(c, ctx.now, team=ctx.team)


def _skills_match(c: Sequence[AgentLoad], ctx: AssignmentContext) -> AssignmentResult:
    return skills_match(c, ctx.ticket_tags, now=ctx.now, team=ctx.team)


def _nearest_region(c: Sequence[AgentLoad], ctx: AssignmentContext) -> AssignmentResult:
    return nearest_region(
        c,
        ctx.customer_region,
        ctx.region_distance,
        continents=ctx.continents,
        now=ctx.now,
        team=ctx.team,
    )


STRATEGIES: Mapping[str, Callable[[Sequence[AgentLoad], AssignmentContext], AssignmentResult]] = {
    "round_robin": _round_robin,
    "least_loaded": _least_loaded,
    "skills_match": _skills_match,
    "nearest_region": _nearest_region,
}


def choose_agent(
    strategy_name: str, candidates: Iterable[AgentLoad], context: AssignmentContext
) -> AssignmentResult:
    """Pick an agent by strategy name (a rule's ``assign``); never one who is unavailable, off
    shift or at capacity. ``ValueError`` for an unknown strategy (rules are validated earlier)."""
    try:
        strategy = STRATEGIES[strategy_name]
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise ValueError(f"unknown assignment strategy {strategy_name!r} ({known})") from None
    pool = [a for a in candidates if not context.team or a.team == context.team]
    return strategy(pool, context)
