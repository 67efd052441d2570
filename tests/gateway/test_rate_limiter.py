"""The in-memory sliding-window limiter behind the intake and login limits: what it allows, and
that its memory stays bounded under a stream of distinct senders (a spam run, a busy day)."""

from __future__ import annotations

from gateway.http import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_limit_hits_per_window_and_hears_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window=60.0, clock=clock)
    assert [limiter.check("ann") for _ in range(3)] == [None, None, None]
    clock.now += 10
    assert limiter.check("ann") == 50.0  # the first hit leaves the window in 50 s
    assert limiter.check("bob") is None  # other keys count on their own
    clock.now += 50
    assert limiter.check("ann") is None


def test_a_retried_submission_is_allowed_and_not_counted_again() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock=clock)
    assert limiter.check("ann", "key-1") is None
    assert limiter.check("ann", "key-1") is None
    assert limiter.check("ann", "key-2") is None
    assert limiter.check("ann", "key-1") is None  # still in the window: a retry
    assert limiter.check("ann", "key-3") is not None


def test_keys_whose_hits_expired_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(5, window=60.0, clock=clock)
    for i in range(10_000):
        limiter.check(f"sender{i}@example.org")
        clock.now += 0.001
    assert limiter.tracked() == 10_000  # all within the window
    clock.now += 61
    limiter.check("late@example.org")
    assert limiter.tracked() == 1


def test_a_key_refused_long_ago_is_forgotten_within_a_window_more() -> None:
    clock = Clock()
    limiter = RateLimiter(1, window=60.0, clock=clock)
    limiter.check("busy")
    clock.now += 30
    limiter.check("steady")
    clock.now += 1
    assert limiter.check("busy") is not None  # refused: now checked after "steady"
    clock.now += 40  # "busy"'s hit expired, "steady"'s not yet
    limiter.check("new")
    assert limiter.tracked() == 3
    clock.now += 60
    limiter.check("newer")
    assert limiter.tracked() == 1


def test_a_flood_of_distinct_keys_is_capped_and_the_latest_are_kept() -> None:
    clock = Clock()
    limiter = RateLimiter(1, window=60.0, clock=clock, max_keys=100)
    for i in range(1_000):
        limiter.check(f"s{i}")
    assert limiter.tracked() == 100
    assert limiter.check("s999") is not None  # the newest keys still count
    assert limiter.check("s0") is None  # the oldest was forgotten: it counts afresh
