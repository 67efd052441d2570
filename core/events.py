"""Past-tense domain events and a small in-process bus for after-commit listeners."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    ticket_id: int
    ticket_number: int
    at: datetime


@dataclass(frozen=True, slots=True)
class TicketOpened(Event):
    customer_id: int
    channel: str
    subject: str
    priority: str
    team: str | None = None
    text: str = ""
    # routing rules' actions: a reply in place of the standard acknowledgement, people to ping
    auto_reply: str | None = None
    notify: tuple[str, ...] = ()
    # knowledge-base articles that may answer it: (slug, title), best first
    suggestions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MessageAppended(Event):
    message_id: int
    kind: str
    author: str
    text: str = ""
    html: str | None = None


@dataclass(frozen=True, slots=True)
class TicketReopened(Event):
    previous_status: str


@dataclass(frozen=True, slots=True)
class TicketClaimed(Event):
    agent_id: int
    agent_name: str


@dataclass(frozen=True, slots=True)
class TicketAssigned(Event):
    agent_id: int | None
    agent_name: str | None
    by: str


@dataclass(frozen=True, slots=True)
class StatusChanged(Event):
    previous: str
    current: str
    by: str


@dataclass(frozen=True, slots=True)
class TicketResolved(Event):
    by: str


@dataclass(frozen=True, slots=True)
class TicketUpdated(Event):
    changes: dict[str, Any] = field(default_factory=dict)
    by: str = "system"


@dataclass(frozen=True, slots=True)
class TicketEscalated(Event):
    """Someone (an agent's button, later the SLA engine) asked supervisors to step in."""

    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class SlaWarning(Event):
    """A target is near (``warn_at`` of it used up): the assignee hears of it."""

    target: str  # "first_response" or "resolution"
    due: datetime
    policy: str


@dataclass(frozen=True, slots=True)
class SlaBreached(Event):
    """A target was missed: the supervisors are pinged; ``actions`` says what the policy did."""

    target: str
    due: datetime
    policy: str
    actions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SurveyAnswered(Event):
    kind: str
    score: int


Listener = Callable[[Event], Awaitable[None]]


class EventBus:
    """Delivers committed events to listeners; a failing listener is logged, never fatal."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, events: list[Event]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    await listener(event)
                except Exception:
                    log.exception("event listener failed on %s", type(event).__name__)
