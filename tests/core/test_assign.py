"""Assignment strategies: who gets a ticket, and why nobody does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.assign import (
    STRATEGIES,
    AgentLoad,
    AssignmentContext,
    WorkingHours,
    choose_agent,
    least_loaded,
    nearest_region,
    parse_hours,
    region_distance,
    round_robin,
    skills_match,
)

# Monday 2 March 2026, 10:00 UTC = 11:00 in Berlin (CET)
MONDAY_10_UTC = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BERLIN_DAY = WorkingHours.parse(
    tz="Europe/Berlin", days=["mon", "tue", "wed", "thu", "fri"], hours="09:00-17:00"
)
TOKYO_DAY = WorkingHours.parse(tz="Asia/Tokyo", hours="09:00-17:00")  # 19:00 there: off shift


def agent(agent_id: int, **kw: object) -> AgentLoad:
    values: dict[str, object] = {"name": f"a{agent_id}", "team": "billing", **kw}
    return AgentLoad(agent_id, **values)  # type: ignore[arg-type]


def ctx(**kw: object) -> AssignmentContext:
    return AssignmentContext(now=MONDAY_10_UTC, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hours", "when", "inside"),
    [
        (BERLIN_DAY, datetime(2026, 3, 2, 8, 0, tzinfo=UTC), True),  # 09:00 CET: start is inside
        (BERLIN_DAY, datetime(2026, 3, 2, 16, 0, tzinfo=UTC), False),  # 17:00 CET: end is not
        (BERLIN_DAY, datetime(2026, 3, 7, 10, 0, tzinfo=UTC), False),  # Saturday
        (BERLIN_DAY, datetime(2026, 7, 6, 7, 30, tzinfo=UTC), True),  # 09:30 CEST (summer)
        (BERLIN_DAY, datetime(2026, 1, 5, 7, 30, tzinfo=UTC), False),  # 08:30 CET (winter)
        (TOKYO_DAY, MONDAY_10_UTC, False),
        # a night shift belongs to the day it starts: Friday 22:00-06:00 covers Saturday 02:00
        (
            WorkingHours.parse(days=["fri"], hours="22:00-06:00"),
            datetime(2026, 3, 7, 2, 0, tzinfo=UTC),
            True,
        ),
        (
            WorkingHours.parse(days=["fri"], hours="22:00-06:00"),
            datetime(2026, 3, 6, 2, 0, tzinfo=UTC),
            False,
        ),
    ],
)
def test_working_hours(hours: WorkingHours, when: datetime, inside: bool) -> None:
    assert hours.contains(when) is inside


@pytest.mark.parametrize(
    "text", ["9-17", "25:00-26:00", "09:00-09:00", "00:00-24:00", "09:60-10:00"]
)
def test_bad_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(text)


def test_round_robin_takes_the_next_id_and_wraps_skipping_the_ineligible() -> None:
    team = [agent(3), agent(1), agent(7, available=False), agent(5, open_tickets=25, max_open=25)]
    picks = []
    last = None
    for _ in range(3):
        result = round_robin(team, last)
        picks.append(result.agent_id)
        last = result.agent_id
    assert picks == [1, 3, 1]  # 5 is full, 7 is away
    assert "round robin" in round_robin(team, 1).reason


def test_least_loaded_compares_share_of_capacity() -> None:
    team = [
        agent(1, open_tickets=5, max_open=10),  # 50%
        agent(2, open_tickets=6, max_open=25),  # 24%
        agent(3, open_tickets=2, max_open=4),  # 50%
    ]
    result = least_loaded(team, MONDAY_10_UTC)
    assert result.agent_id == 2
    assert "6/25 open" in result.reason


def test_least_loaded_respects_working_hours() -> None:
    team = [agent(1, working_hours=TOKYO_DAY), agent(2, open_tickets=9, working_hours=BERLIN_DAY)]
    assert least_loaded(team, MONDAY_10_UTC).agent_id == 2


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"refund", "chargeback"}, 2),  # covers both
        ({"REFUND"}, 1),  # case-insensitive; 1 and 2 tie, 1 is less loaded
        ({"api"}, 3),
    ],
)
def test_skills_match_prefers_coverage_then_load(tags: set[str], expected: int) -> None:
    team = [
        agent(1, skills=frozenset({"refund"}), open_tickets=1),
        agent(2, skills=frozenset({"Refund", "chargeback"}), open_tickets=4),
        agent(3, skills=frozenset({"api"})),
    ]
    assert skills_match(team, tags).agent_id == expected


def test_skills_match_with_no_skilled_agent_leaves_the_ticket_in_the_queue() -> None:
    result = skills_match([agent(1, skills=frozenset({"api"}))], {"gdpr"}, team="billing")
    assert result.agent_id is None
    assert result.reason == (
        "nobody available in team 'billing' (1 free but none has a skill for tags [gdpr]); "
        "left in the team queue"
    )


@pytest.mark.parametrize(
    ("customer_region", "table", "expected"),
    [
        ("de", None, 2),  # same region
        ("fr", None, 1),  # same continent (eu/de both Europe): 1 is less loaded than 2
        ("jp", None, 3),
        ("br", None, 4),  # americas
        ("br", {("br", "jp"): 0.5}, 3),  # an explicit table wins
        ("", None, 1),  # unknown: least loaded
    ],
)
def test_nearest_region(
    customer_region: str, table: dict[tuple[str, str], float] | None, expected: int
) -> None:
    team = [
        agent(1, region="eu", open_tickets=1),
        agent(2, region="de", open_tickets=3),
        agent(3, region="jp", open_tickets=2),
        agent(4, region="us", open_tickets=5),
    ]
    assert nearest_region(team, customer_region, table).agent_id == expected


def test_region_distance_rule() -> None:
    assert region_distance("DE", "de") == 0
    assert region_distance("de", "uk") == 1
    assert region_distance("de", "us") == 2
    assert region_distance("mars", "venus") == 2
    assert region_distance("x", "y", continents={"x": "c", "y": "c"}) == 1


FULL = dict(open_tickets=25, max_open=25)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize(
    ("team", "reason"),
    [
        (
            [agent(1, **FULL), agent(2, **FULL), agent(3, working_hours=TOKYO_DAY)],
            "nobody available in team 'billing' (2 at capacity, 1 off shift); "
            "left in the team queue",
        ),
        (
            [agent(1, available=False), agent(2, open_tickets=30, max_open=25)],
            "nobody available in team 'billing' (1 at capacity, 1 unavailable); "
            "left in the team queue",
        ),
        ([], "nobody available in team 'billing' (no agents); left in the team queue"),
    ],
)
def test_nobody_available_for_any_strategy(
    strategy: str, team: list[AgentLoad], reason: str
) -> None:
    result = choose_agent(
        strategy, team, ctx(team="billing", ticket_tags={"refund"}, customer_region="de")
    )
    assert (result.agent_id, result.reason, result.strategy) == (None, reason, strategy)
    assert not result.assigned


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_no_strategy_picks_an_agent_at_capacity_away_or_off_shift(strategy: str) -> None:
    team = [
        agent(1, skills=frozenset({"refund"}), region="de", **FULL),
        agent(2, skills=frozenset({"refund"}), region="de", available=False),
        agent(3, skills=frozenset({"refund"}), region="de", working_hours=TOKYO_DAY),
        agent(
            4, skills=frozenset({"refund"}), region="us", open_tickets=20, working_hours=BERLIN_DAY
        ),
        agent(5, skills=frozenset({"refund"}), region="de", team="sales"),  # another team
    ]
    context = ctx(team="billing", ticket_tags={"refund"}, customer_region="de", last_assigned_id=1)
    result = choose_agent(strategy, team, context)
    assert result.agent_id == 4
    assert result.assigned


def test_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown assignment strategy 'random'"):
        choose_agent("random", [agent(1)], ctx())
