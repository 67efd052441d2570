"""Agents' operations: compare-and-set claims, replies through the outbox, notes, statuses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from core import accounts
from core.desk import Actor
from core.errors import AlreadyClaimed, InvalidInput, InvalidTransition, Unauthorized
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Sender
from core.persistence.models import OutboxRow, Ticket, TicketEvent
from core.tickets import Priority, TicketStatus


async def agents(helpdesk: Helpdesk, n: int) -> list[Actor]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        agent_id = await helpdesk.db.write(
            lambda c, i=i: accounts.add_agent(
                c, name=f"Agent {i}", email=f"a{i}@support.test", role=accounts.Role.AGENT, now=now
            )
        )
        out.append(Actor(agent_id, f"Agent {i}", "agent"))
    return out


async def new_ticket(helpdesk: Helpdesk) -> int:
    result = await helpdesk.ingest(
        InboundMessage(
            Channel.TELEGRAM,
            "u1",
            Sender("4242", "Tom"),
            "The app crashes",
            datetime(2026, 3, 2, tzinfo=UTC),
        )
    )
    assert result.ticket_number is not None
    return result.ticket_number


async def table(helpdesk: Helpdesk, model: Any) -> list[Any]:
    t = model.__table__
    return await helpdesk.db.read(lambda c: c.execute(select(t).order_by(t.c.id)).all())


async def test_of_many_simultaneous_claims_exactly_one_wins(helpdesk: Helpdesk) -> None:
    number = await new_ticket(helpdesk)
    team = await agents(helpdesk, 8)
    outcomes = await asyncio.gather(
        *(helpdesk.claim(number, a) for a in team), return_exceptions=True
    )
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    losers = [o for o in outcomes if isinstance(o, AlreadyClaimed)]
    assert len(winners) == 1 and len(losers) == 7
    holder = next(a for a in team if a.agent_id == winners[0])
    assert all(err.holder == holder.name for err in losers)
    assert f"already claimed by {holder.name}" in str(losers[0])
    [ticket] = await table(helpdesk, Ticket)
    assert ticket.assignee_id == holder.agent_id and ticket.status == "open"
    assert await helpdesk.claim(number, holder) == holder.agent_id  # repeated click: no error


async def test_reply_goes_out_on_the_customers_channel(helpdesk: Helpdesk) -> None:
    number = await new_ticket(helpdesk)
    [agent] = await agents(helpdesk, 1)
    await helpdesk.reply(number, "Please update to 4.2.1", agent)
    rows = await table(helpdesk, OutboxRow)
    assert [r.idempotency_key.split(":")[0] for r in rows] == ["ack", "reply"]
    reply = rows[1]
    assert (reply.channel, reply.address) == ("telegram", "4242")
    assert reply.payload["text"].startswith("Please update to 4.2.1")
    [ticket] = await table(helpdesk, Ticket)
    assert ticket.first_response_at is not None and ticket.status == "open"


async def test_internal_note_is_never_sent(helpdesk: Helpdesk) -> None:
    number = await new_ticket(helpdesk)
    [agent] = await agents(helpdesk, 1)
    await helpdesk.note(number, "Customer is on the beta build", agent)
    assert [r.idempotency_key for r in await table(helpdesk, OutboxRow)] == ["ack:1"]


async def test_invalid_transition_is_refused_and_changes_nothing(helpdesk: Helpdesk) -> None:
    number = await new_ticket(helpdesk)
    [agent] = await agents(helpdesk, 1)
    with pytest.raises(InvalidTransition, match="'new' to 'closed'"):
        await helpdesk.set_status(number, TicketStatus.CLOSED, agent)
    [ticket] = await table(helpdesk, Ticket)
    assert ticket.status == "new"


async def test_status_priority_tags_are_recorded_in_history(helpdesk: Helpdesk) -> None:
    number = await new_ticket(helpdesk)
    [agent] = await agents(helpdesk, 1)
    await helpdesk.update_fields(
        number, agent, priority=Priority.URGENT, add_tags=["VIP", "mobile"]
    )
    await helpdesk.update_fields(number, agent, remove_tags=["mobile"])
    await helpdesk.set_status(number, TicketStatus.RESOLVED, agent, "fixed in 4.2.1")
    [ticket] = await table(helpdesk, Ticket)
    assert (ticket.priority, ticket.tags, ticket.status) == ("urgent", ["vip"], "resolved")
    history = [(e.kind, e.actor, e.reason, e.data) for e in await table(helpdesk, TicketEvent)]
    assert history[1] == (
        "updated",
        f"agent:{agent.agent_id}",
        "",
        {"priority": "urgent", "tags": ["mobile", "vip"]},
    )
    assert history[-1][:3] == ("status", f"agent:{agent.agent_id}", "fixed in 4.2.1")
    with pytest.raises(InvalidInput, match="tag"):
        await helpdesk.update_fields(number, agent, add_tags=["two words"])


async def test_assign_and_unassign(helpdesk: Helpdesk) -> None:
    number = await new_ticket(helpdesk)
    first, second = await agents(helpdesk, 2)
    await helpdesk.claim(number, first)
    await helpdesk.assign(number, second.agent_id, first, "off shift")
    assert (await table(helpdesk, Ticket))[0].assignee_id == second.agent_id
    await helpdesk.assign(number, None, first)
    assert (await table(helpdesk, Ticket))[0].assignee_id is None
    await helpdesk.claim(number, first)  # back in the queue, so claimable again


async def test_tokens_are_stored_hashed_and_revocable(helpdesk: Helpdesk) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = await helpdesk.db.write(
        lambda c: accounts.create_token(c, name="ci", role=accounts.Role.SUPERVISOR, now=now)
    )
    who = await helpdesk.db.read(lambda c: accounts.authenticate(c, token))
    assert who.role is accounts.Role.SUPERVISOR
    stored = await helpdesk.db.read(
        lambda c: c.execute(select(accounts.tokens.c.token_hash)).scalar_one()
    )
    assert token not in stored and stored == accounts.hash_token(token)
    await helpdesk.db.write(lambda c: accounts.revoke_token(c, who.token_id, now))
    with pytest.raises(Unauthorized):
        await helpdesk.db.read(lambda c: accounts.authenticate(c, token))
