"""What happens when someone clicks a button, types a slash command, or answers in a ticket
card's thread. Channel adapters turn those into ``Interaction``s; this module decides.

Every interaction is handled at most once (a retried webhook or a double click changes
nothing twice); the reply text is shown only to the person who acted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bots.agents import CLAIM, ESCALATE, RESOLVE
from bots.customer import CSAT, KB_MORE, KB_SOLVED, NPS
from bots.templates import render
from core import desk, queries, surveys
from core.accounts import agent_by_chat_id, agent_by_email
from core.config import BotSettings
from core.desk import Actor
from core.errors import AlreadyClaimed, HelplineError, InvalidTransition, NotFound
from core.helpdesk import Helpdesk
from core.messages import Interaction, InteractionReply
from core.once import first_time, forget
from core.tickets import ACTIVE, TicketStatus, parse_priority

log = logging.getLogger(__name__)

HELP = (
    "Commands: /helpline mine · /helpline queue · /helpline claim N · /helpline resolve N · "
    "/helpline priority N low|normal|high|urgent · /helpline assign N <agent email> · "
    "/helpline escalate N <reason>"
)


class Interactions:
    def __init__(self, helpdesk: Helpdesk, settings: BotSettings) -> None:
        self.helpdesk = helpdesk
        self.settings = settings

    async def handle(self, interaction: Interaction) -> InteractionReply:
        helpdesk = self.helpdesk
        scope = f"{interaction.channel.value}:act"
        fresh = await helpdesk.db.write(
            lambda c: first_time(c, scope, interaction.external_id, helpdesk.clock())
        )
        if not fresh:
            return InteractionReply("")  # a retried delivery: it was answered the first time
        try:
            return InteractionReply(await self._dispatch(interaction))
        except AlreadyClaimed as err:
            return InteractionReply(
                f"Ticket #{err.ticket_number} is already claimed by {err.holder}."
            )
        except HelplineError as err:
            return InteractionReply(str(err))  # a domain answer is final, like a success
        except Exception:
            # a failure of ours (the database went away): forget we saw it, so the platform's
            # retry of this very delivery does the work instead of being taken for a duplicate
            await helpdesk.db.write(lambda c: forget(c, scope, interaction.external_id))
            raise

    async def _dispatch(self, i: Interaction) -> str:
        handlers: dict[str, Callable[[Interaction], Awaitable[str]]] = {
            KB_SOLVED: self._kb_solved,
            KB_MORE: self._kb_more,
            CSAT: self._rate,
            NPS: self._rate,
            CLAIM: self._agent_button,
            RESOLVE: self._agent_button,
            ESCALATE: self._agent_button,
            "thread_reply": self._thread_reply,
            "command": self._command,
        }
        handler = handlers.get(i.action)
        if handler is None:
            return f"Unknown action {i.action!r}."
        return await handler(i)

    # -- customers -----------------------------------------------------------------------

    async def _customer_ticket(self, i: Interaction) -> Any:
        """The ticket a customer's button belongs to; only its own customer may press it."""
        number = _number(i.value.split(":", 1)[0])
        row = await self.helpdesk.db.read(lambda c: queries.ticket_row(c, number))
        if row.identity_channel != i.channel.value or row.identity_address != i.user:
            raise NotFound(render("not_yours", row.language))
        return row

    async def _kb_solved(self, i: Interaction) -> str:
        row = await self._customer_ticket(i)
        await self.helpdesk.run(
            lambda c, ctx: desk.resolve_self_service(
                c, ctx, row.number, "self-service: a knowledge-base article solved it"
            )
        )
        return render("deflected", row.language, number=row.number)

    async def _kb_more(self, i: Interaction) -> str:
        row = await self._customer_ticket(i)
        await self.helpdesk.note(
            row.number,
            "The customer read the suggested articles and still needs help.",
            desk.CUSTOMER,
        )
        return render("more_help", row.language, number=row.number)

    async def _rate(self, i: Interaction) -> str:
        row = await self._customer_ticket(i)
        score = i.value.split(":", 1)[-1]
        if not score.isdigit():
            return "Please pick one of the numbers."
        outcome = await self.helpdesk.run(
            lambda c, ctx: surveys.answer(
                c, ctx, row.number, i.action, int(score), self.settings.survey_valid_days
            )
        )
        return {
            surveys.SurveyOutcome.RECORDED: render("rated", row.language),
            surveys.SurveyOutcome.ALREADY_ANSWERED: render("already_rated", row.language),
            surveys.SurveyOutcome.EXPIRED: render("survey_closed", row.language),
        }[outcome]

    # -- agents --------------------------------------------------------------------------

    async def _agent(self, i: Interaction) -> Actor:
        row = await self.helpdesk.db.read(lambda c: agent_by_chat_id(c, i.channel.value, i.user))
        if row is None:
            raise NotFound(
                f"You are not registered as an agent. An admin can link you with: helpline "
                f"agent link --email <your email> --{i.channel.value} {i.user}"
            )
        return Actor(row.id, row.name, row.role, row.team_id)

    async def _agent_button(self, i: Interaction) -> str:
        actor = await self._agent(i)
        number = _number(i.value)
        return await self._agent_action(i.action, number, actor, "")

    async def _agent_action(self, action: str, number: int, actor: Actor, rest: str) -> str:
        helpdesk = self.helpdesk
        if action == CLAIM:
            await helpdesk.claim(number, actor)
            return f"You claimed ticket #{number}."
        if action == RESOLVE:
            try:
                await helpdesk.set_status(number, TicketStatus.RESOLVED, actor, "resolved in chat")
            except InvalidTransition as err:
                return f"Ticket #{number} cannot be resolved now: {err}."
            return f"Ticket #{number} is resolved."
        if action == ESCALATE:
            await helpdesk.escalate(number, actor, rest or f"escalated by {actor.name} in chat")
            return f"Ticket #{number} was escalated to the supervisors."
        return f"Unknown action {action!r}."

    async def _thread_reply(self, i: Interaction) -> str:
        actor = await self._agent(i)
        found = await self.helpdesk.db.read(
            lambda c: queries.ticket_by_refs(c, i.channel.value, i.refs)
        )
        if found is None:
            return ""  # a thread we do not know: not a ticket card
        row, _purpose = found
        text = i.text.strip()
        if text.lower().startswith("note:"):
            await self.helpdesk.note(row.number, text[5:].strip(), actor)
            return f"Internal note added to #{row.number}."
        await self.helpdesk.reply(row.number, text, actor)
        return ""  # the customer got it; the thread shows it already

    async def _command(self, i: Interaction) -> str:
        words = i.text.split()
        verb = words[0].lower() if words else "help"
        if verb in ("help", ""):
            return HELP
        actor = await self._agent(i)
        if verb in ("mine", "queue"):
            return await self._listing(verb, actor)
        if len(words) < 2:
            return HELP
        number = _number(words[1])
        rest = " ".join(words[2:])
        if verb in (CLAIM, RESOLVE, ESCALATE):
            return await self._agent_action(verb, number, actor, rest)
        if verb == "priority" and rest:
            await self.helpdesk.update_fields(number, actor, priority=parse_priority(rest))
            return f"Ticket #{number} now has priority {rest}."
        if verb == "assign" and rest:
            return await self._assign(number, rest, actor)
        return HELP

    async def _assign(self, number: int, who: str, actor: Actor) -> str:
        agent = await self.helpdesk.db.read(lambda c: agent_by_email(c, who))
        if agent is None:
            return f"No agent with email {who}."
        await self.helpdesk.assign(number, agent.id, actor, "reassigned in chat")
        return f"Ticket #{number} is now assigned to {agent.name}."

    async def _listing(self, verb: str, actor: Actor) -> str:
        f = queries.TicketFilter(
            status=tuple(ACTIVE),
            limit=20,
            assignee_id=actor.agent_id if verb == "mine" else None,
            unassigned=verb == "queue",
        )
        rows, total = await self.helpdesk.read(lambda c, ctx: queries.list_tickets(c, ctx, f))
        if not rows:
            return "Nothing here." if verb == "mine" else "The queue is empty."
        lines = [f"#{v.number} [{v.priority}] {v.subject} ({v.status})" for v, _ in rows]
        more = f"\n… and {total - len(rows)} more" if total > len(rows) else ""
        title = "Your open tickets" if verb == "mine" else "Unassigned tickets"
        return f"{title}:\n" + "\n".join(lines) + more


def _number(raw: str) -> int:
    value = raw.strip().lstrip("#")
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"ticket #{raw} not found")
    return int(value)
