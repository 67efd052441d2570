"""Outbound pacing, on a simulated clock."""

from __future__ import annotations

from core.ratelimit import Pace, RateGate


def max_in_window(times: list[float], per: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + per) for t in times)


def test_one_channel_burst_keeps_the_rate_and_uses_it() -> None:
    gate = RateGate(clock=lambda: 0.0)
    times = [gate.reserve([Pace("slack:C1", 1, 1.0)], 0.0) for _ in range(500)]
    assert max_in_window(times, 1.0) == 1
    assert 500 / (times[-1] + 1) >= 0.95  # at least 95% of the allowed rate


def test_many_chats_share_the_global_allowance_without_head_of_line_blocking() -> None:
    gate = RateGate(clock=lambda: 0.0)
    sent: dict[str, list[float]] = {}
    everything: list[float] = []
    for i in range(500):
        chat = f"chat{i % 50}"
        at = gate.reserve([Pace("bot", 30, 1.0), Pace(chat, 1, 1.0)], 0.0)
        sent.setdefault(chat, []).append(at)
        everything.append(at)
    assert max_in_window(everything, 1.0) <= 30
    assert all(max_in_window(t, 1.0) == 1 for t in sent.values())
    assert 500 / (max(everything) + 1 / 30) >= 0.95 * 30


def test_a_group_is_paced_per_minute() -> None:
    gate = RateGate(clock=lambda: 0.0)
    times = [gate.reserve([Pace("group", 20, 60.0)], 0.0) for _ in range(45)]
    assert max_in_window(times, 60.0) <= 20


def test_retry_after_holds_the_key() -> None:
    now = [10.0]
    gate = RateGate(clock=lambda: now[0])
    gate.hold("slack:C1", 30)
    assert gate.reserve([Pace("slack:C1", 1, 1.0)], now[0]) >= 40.0
    assert gate.reserve([Pace("slack:C2", 1, 1.0)], now[0]) == 10.0  # other keys go on


async def test_wait_sleeps_until_the_reserved_instant() -> None:
    """Three waits issued at once (as concurrent senders do) leave 1.02 s apart."""
    import asyncio

    now = [0.0]
    departures: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        start = now[0]
        await asyncio.sleep(0)  # let the other senders book their slots meanwhile
        now[0] = max(now[0], round(start + seconds, 6))

    gate = RateGate(clock=lambda: now[0], sleep=fake_sleep)

    async def send() -> None:
        await gate.wait([Pace("k", 1, 1.0)])
        departures.append(now[0])

    await asyncio.gather(*(send() for _ in range(3)))
    assert departures == [0.0, 1.02, 2.04]


async def test_a_late_wake_up_waits_instead_of_crowding_the_window() -> None:
    """A busy loop woke the second sender 0.5 s late; the third must keep 1 s after it."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds + (0.5 if len(slept) == 1 else 0.0)  # the first wake-up is late

    gate = RateGate(clock=lambda: now[0], sleep=sleep)
    await gate.wait([Pace("k", 1, 1.0)])  # leaves at 0
    await gate.wait([Pace("k", 1, 1.0)])  # booked for 1.02, woken at 1.52
    await gate.wait([Pace("k", 1, 1.0)])  # booked for 2.04: only 0.52 after the last one
    departures = [0.0, 1.52]
    assert now[0] >= departures[-1] + 1.0  # waited until a full second after the late one


def test_idle_chats_are_forgotten() -> None:
    gate = RateGate(clock=lambda: 0.0)
    for i in range(1_000):  # a day's customers, each written to once
        gate.reserve([Pace("tg", 30, 1.0), Pace(f"tg:{i}", 1, 1.0)], i * 0.05)
    gate.hold("tg:7", 5.0)
    assert gate.tracked() > 900  # the last minute's chats are still remembered
    later = 1_000 * 0.05 + 120
    at = gate.reserve([Pace("tg", 30, 1.0), Pace("tg:new", 1, 1.0)], later)
    assert at == later and gate.tracked() == 2  # the bot's key and the new chat
    # a chat forgotten while idle is paced as before when it comes back
    again = gate.reserve([Pace("tg", 30, 1.0), Pace("tg:new", 1, 1.0)], later)
    assert again >= later + 1.0
