"""Outbound pacing: never send faster than a platform allows, so we provoke no 429s.

A ``Pace`` is "at most ``count`` messages per ``per`` seconds" for one key (a Slack channel, a
Telegram chat, the whole bot), enforced as a minimum spacing of ``per / count`` between two
messages on that key. ``RateGate.wait`` reserves the earliest instant at which a message keeps
that spacing on every key it touches, then sleeps until it. Reservations may fill gaps: a
message to an idle chat does not queue behind one that waits for a busy chat, so a burst over
many chats still uses the whole global allowance.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Pace:
    key: str
    count: int
    per: float

    def spacing(self, margin: float) -> float:
        return self.per / self.count * (1 + margin)


class RateGate:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        margin: float = 0.02,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        # a little slack on every spacing: the two ends of the wire measure time differently
        self.margin = margin
        self._reserved: dict[str, list[float]] = {}
        self._held: dict[str, float] = {}
        self._departed: dict[str, deque[float]] = {}
        # keys are per chat: forget the idle ones now and then, or a bot that has talked to a
        # million customers keeps a million of them
        self._longest = 0.0  # the longest window seen: what is older never matters
        self._next_sweep = 0.0

    def tracked(self) -> int:
        """How many keys are remembered (not ``__len__``: an empty gate must stay truthy)."""
        return len(self._reserved.keys() | self._held.keys() | self._departed.keys())

    def reserve(self, paces: list[Pace], now: float) -> float:
        """Book the earliest instant >= now that keeps every pace; returns it."""
        if now >= self._next_sweep:
            self._forget_idle(now)
        self._longest = max([self._longest, *(p.per * (1 + self.margin) for p in paces)])
        at = max([now, *(self._held.get(p.key, now) for p in paces)])
        moved = True
        while moved:  # each move goes forward past a booking, so this ends
            moved = False
            for pace in paces:
                gap = pace.spacing(self.margin)
                booked = self._reserved.get(pace.key, [])
                # the first booking closer than `gap` to `at`, on either side (exactly `gap`
                # apart is fine; EPSILON keeps float rounding from seeing a conflict there)
                i = bisect.bisect_right(booked, at - gap + EPSILON)
                if i < len(booked) and booked[i] < at + gap - EPSILON:
                    at = booked[i] + gap
                    moved = True
        for pace in paces:
            booked = self._reserved.setdefault(pace.key, [])
            bisect.insort(booked, at)
            horizon = bisect.bisect_left(booked, now - pace.per)  # forget what cannot matter
            del booked[:horizon]
        return at

    def _forget_idle(self, now: float) -> None:
        """Drop the keys whose bookings, departures and holds are all too old to matter."""
        horizon = now - self._longest
        self._reserved = {k: b for k, b in self._reserved.items() if b and b[-1] > horizon}
        self._departed = {k: d for k, d in self._departed.items() if d and d[-1] > horizon}
        self._held = {k: until for k, until in self._held.items() if until > now}
        self._next_sweep = now + max(self._longest, 60.0)  # O(keys) once per window at most

    async def wait(self, paces: list[Pace]) -> None:
        # no lock needed: reserve() does not await, so it runs atomically on the event loop
        delay = self.reserve(paces, self.clock()) - self.clock()
        if delay > 0:
            await self.sleep(delay)
        # A busy event loop may wake us late, next to a message that left on time: check what
        # really departed, so a late message waits instead of crowding the next window. And a
        # "retry after" that came in while we slept binds a slot booked before it as well.
        while (late := max(self._too_soon(paces), self._held_for(paces))) > 0:
            await self.sleep(late)
        now = self.clock()
        for pace in paces:
            departed = self._departed.get(pace.key)
            if departed is None or departed.maxlen != pace.count:
                departed = self._departed[pace.key] = deque(departed or (), maxlen=pace.count)
            departed.append(now)

    def _too_soon(self, paces: list[Pace]) -> float:
        """Seconds until one more departure keeps every window, by actual departure times."""
        now = self.clock()
        wait = 0.0
        for pace in paces:
            departed = self._departed.get(pace.key)
            if departed is not None and len(departed) >= pace.count:
                wait = max(wait, departed[0] + pace.per * (1 + self.margin) - now)
        return wait

    def _held_for(self, paces: list[Pace]) -> float:
        """Seconds until every key's "retry after" has run out."""
        now = self.clock()
        return max((self._held.get(p.key, now) - now for p in paces), default=0.0)

    def hold(self, key: str, seconds: float) -> None:
        """The platform said "retry after": nothing goes to this key before then."""
        until = self.clock() + seconds
        self._held[key] = max(self._held.get(key, until), until)
