"""CSAT (1-5) and NPS (0-10) answers: one per ticket and kind, within the survey's validity.

The unique (ticket, kind) constraint makes "recorded once" hold even for two clicks at the same
instant; a later click gets a polite answer instead of a second record.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select, update

from core.errors import Conflict, InvalidInput, NotFound
from core.events import SurveyAnswered
from core.persistence.models import SurveyResponse, table_of
from core.persistence.records import insert_ignoring_duplicates, record, tickets
from core.views import UnitContext

responses = table_of(SurveyResponse)

SCALES = {"csat": range(1, 6), "nps": range(0, 11)}
MAX_COMMENT = 5000


class SurveyOutcome(StrEnum):
    RECORDED = "recorded"
    ALREADY_ANSWERED = "already_answered"
    EXPIRED = "expired"


class SurveyClosed(Conflict):
    pass


def _ticket(conn: Connection, number: int) -> Any:
    row = conn.execute(select(tickets).where(tickets.c.number == number)).first()
    if row is None:
        raise NotFound(f"ticket #{number} not found")
    return row


def answer(
    conn: Connection, ctx: UnitContext, number: int, kind: str, score: int, valid_days: int
) -> SurveyOutcome:
    if kind not in SCALES:
        raise InvalidInput(f"unknown survey {kind!r} (csat or nps)", "kind")
    if score not in SCALES[kind]:
        scale = SCALES[kind]
        raise InvalidInput(f"{kind} scores go from {scale.start} to {scale.stop - 1}", "score")
    ticket = _ticket(conn, number)
    if ticket.resolved_at is None or ctx.now - ticket.resolved_at > timedelta(days=valid_days):
        return SurveyOutcome.EXPIRED
    written = insert_ignoring_duplicates(
        conn,
        responses,
        {
            "ticket_id": ticket.id,
            "kind": kind,
            "score": score,
            "comment": "",
            "created_at": ctx.now,
        },
    )
    if not written:
        return SurveyOutcome.ALREADY_ANSWERED
    record(conn, ticket.id, at=ctx.now, actor="customer", kind="rated", survey=kind, score=score)
    ctx.emit(conn, SurveyAnswered(ticket.id, number, ctx.now, kind, score))
    return SurveyOutcome.RECORDED


def comment(
    conn: Connection, ctx: UnitContext, ticket_id: int, text: str, kind: str = "csat"
) -> bool:
    """Attach the customer's free-text comment to their rating (once); False if none to add to."""
    text = text.strip()[:MAX_COMMENT]
    if not text:
        return False
    done = conn.execute(
        update(responses)
        .where(
            responses.c.ticket_id == ticket_id, responses.c.kind == kind, responses.c.comment == ""
        )
        .values(comment=text)
    ).rowcount
    if done:
        record(conn, ticket_id, at=ctx.now, actor="customer", kind="survey_comment", survey=kind)
    return bool(done)


def responses_for(conn: Connection, ticket_id: int) -> list[Any]:
    return list(
        conn.execute(
            select(responses).where(responses.c.ticket_id == ticket_id).order_by(responses.c.id)
        ).all()
    )
