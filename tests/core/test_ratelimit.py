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
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    gate = RateGate(clock=lambda: 0.0, sleep=fake_sleep)
    for _ in range(3):
        await gate.wait([Pace("k", 1, 1.0)])
    assert slept == [1.02, 2.04]
