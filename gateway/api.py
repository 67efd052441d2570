"""REST API under /api/v1: public JSON intake, and the agents' ticket API with bearer tokens."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from core import queries
from core.accounts import Principal, Role, authenticate
from core.desk import Actor
from core.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from core.messages import Channel, InboundMessage, Sender
from core.tickets import TicketStatus, parse_priority, parse_status
from core.views import TicketView, view_from_row
from gateway.http import (
    Api,
    client_ip,
    field_str,
    path_number,
    problem,
    query_int,
    read_json,
    sender_key,
)
from gateway.pages import sanitize
from gateway.state import HELPDESK, INTAKE_LIMITER, SENDER_LIMITER
from gateway.validation import clean_email, clean_name, parse_id

api = Api()

TICKET_PARAM = {"name": "number", "in": "path", "required": True, "schema": {"type": "integer"}}
STR = {"type": "string"}


async def principal(request: web.Request, needed: Role) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    helpdesk = request.app[HELPDESK]
    who = await helpdesk.db.read(lambda conn: authenticate(conn, token.strip()))
    if not who.role.allows(needed):
        raise Forbidden(f"this needs the {needed.value} role; the token has {who.role.value}")
    return who


def actor_of(who: Principal) -> Actor:
    return Actor(who.agent_id, who.agent_name or who.name, who.role.value, who.team_id)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def ticket_json(view: TicketView, row: Any) -> dict[str, Any]:
    return {
        "number": view.number,
        "subject": view.subject,
        "status": view.status,
        "priority": view.priority,
        "channel": view.channel,
        "team": view.team,
        "assignee": {"id": view.assignee_id, "name": view.assignee_name}
        if view.assignee_id
        else None,
        "customer": {
            "id": view.customer_id,
            "name": view.customer_name,
            "email": view.customer_email,
        },
        "tags": list(row.tags),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "first_response_at": iso(row.first_response_at),
        "resolved_at": iso(row.resolved_at),
        "first_response_due": iso(row.first_response_due),
        "resolution_due": iso(row.resolution_due),
        "reopen_count": row.reopen_count,
        "related_ticket": row.related_ticket_id,
        "status_url": view.status_url,
    }


def _visible(who: Principal, row: Any) -> None:
    if who.role is Role.AGENT and not queries.is_visible(row, who.team_id, who.agent_id):
        raise NotFound(f"ticket #{row.number} not found")


# -- public intake -------------------------------------------------------------------------

MESSAGE_BODY = {
    "type": "object",
    "required": ["email", "body"],
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "email": {"type": "string", "format": "email", "maxLength": 320},
        "subject": {"type": "string", "maxLength": 300},
        "body": {"type": "string", "minLength": 1},
    },
}


@api.route(
    "POST",
    "/api/v1/messages",
    summary="Submit a customer message (opens a ticket)",
    role=None,
    body=MESSAGE_BODY,
    tag="intake",
    params=[
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 200},
        }
    ],
    responses={
        201: "Ticket opened",
        200: "Same Idempotency-Key: the same ticket",
        400: "Invalid input",
        413: "Too large",
        429: "Rate limited",
    },
)
async def submit_message(request: web.Request) -> web.Response:
    if (wait := request.app[INTAKE_LIMITER].check(client_ip(request))) is not None:
        return problem(
            429,
            "too many submissions from this address; try again later",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    data = await read_json(request)
    helpdesk = request.app[HELPDESK]
    limits = helpdesk.settings.intake
    email = clean_email(field_str(data, "email", max_len=320))
    name = clean_name(field_str(data, "name", required=False, max_len=200))
    subject = field_str(data, "subject", required=False, max_len=limits.max_subject_chars)
    body = field_str(data, "body", max_len=limits.max_body_chars)
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 200:
        raise InvalidInput("Idempotency-Key is longer than 200 characters", "Idempotency-Key")
    wait = request.app[SENDER_LIMITER].check(sender_key(email), key or None)
    if wait is not None:
        # one sender flooding (a loop, a script): refuse, but keep what they sent
        raw = json.dumps({"channel": "api", "idempotency_key": key, "submission": data}).encode()
        await helpdesk.quarantine(
            Channel.API.value, f"rate limit per sender exceeded: {email}", raw
        )
        return problem(
            429,
            "too many submissions from this sender: this one is kept for review; "
            "send again later to open a ticket at once",
            headers={"Retry-After": str(max(1, round(wait)))},
            kept=True,
        )
    msg = InboundMessage(
        channel=Channel.API,
        external_id=key or f"auto:{uuid.uuid4()}",
        sender=Sender(address=email, name=name, email=email),
        subject=subject.strip(),
        text=body,
        received_at=helpdesk.clock(),
    )
    result = await helpdesk.ingest(msg)
    payload = {
        "ticket": {"number": result.ticket_number, "status_url": result.status_url},
        "duplicate": result.duplicate,
    }
    return web.json_response(payload, status=200 if result.duplicate else 201)


# -- agent API -----------------------------------------------------------------------------

LIST_PARAMS = [
    {"name": n, "in": "query", "required": False, "schema": s}
    for n, s in [
        ("status", STR),
        ("priority", STR),
        ("channel", STR),
        ("team", STR),
        ("assignee", {"type": "string", "description": "me, none or an agent id"}),
        ("tag", STR),
        ("customer", STR),
        ("q", STR),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
        ("offset", {"type": "integer", "minimum": 0}),
    ]
]


@api.route(
    "GET",
    "/api/v1/tickets",
    summary="List, filter and search tickets",
    role=Role.AGENT,
    params=LIST_PARAMS,
    responses={200: "A page of tickets", 400: "Bad filter", 401: "No token"},
)
async def list_tickets(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    q = request.query
    assignee = q.get("assignee")
    assignee_id = None
    if assignee == "me":
        if who.agent_id is None:
            raise InvalidInput("assignee=me needs a token that belongs to an agent", "assignee")
        assignee_id = who.agent_id
    elif assignee and assignee != "none" and (assignee_id := parse_id(assignee)) is None:
        raise InvalidInput("assignee must be me, none or an agent id", "assignee")
    f = queries.TicketFilter(
        status=tuple(parse_status(s) for s in q.get("status", "").split(",") if s),
        priority=tuple(parse_priority(p) for p in q.get("priority", "").split(",") if p),
        channel=q.get("channel") or None,
        team=q.get("team") or None,
        assignee_id=assignee_id,
        unassigned=assignee == "none",
        tag=q.get("tag") or None,
        customer_email=q.get("customer") or None,
        q=q.get("q") or None,
        limit=query_int(request, "limit", 50),
        # bounded: a number past 64 bits would overflow the database driver (a 500)
        offset=query_int(request, "offset", 0, low=0, high=10**9),
        visible_to_team=who.team_id if who.role is Role.AGENT else None,
        visible_to_agent=who.agent_id if who.role is Role.AGENT else None,
    )
    if who.role is Role.AGENT and f.visible_to_team is None and f.visible_to_agent is None:
        f = queries.TicketFilter(**{**f.__dict__, "visible_to_agent": -1})
    helpdesk = request.app[HELPDESK]
    rows, total = await helpdesk.read(lambda conn, ctx: queries.list_tickets(conn, ctx, f))
    return web.json_response(
        {
            "tickets": [ticket_json(v, r) for v, r in rows],
            "total": total,
            "limit": f.limit,
            "offset": f.offset,
        }
    )


@api.route(
    "GET",
    "/api/v1/tickets/{number}",
    summary="A ticket with its messages and history",
    role=Role.AGENT,
    params=[TICKET_PARAM],
    responses={200: "The ticket", 401: "No token", 404: "Unknown ticket"},
)
async def get_ticket(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    number = path_number(request)
    helpdesk = request.app[HELPDESK]

    def load(conn: Any, ctx: Any) -> dict[str, Any]:
        row = queries.ticket_row(conn, number)
        _visible(who, row)
        data = ticket_json(view_from_row(row, ctx), row)
        data["messages"] = [
            {
                "id": m.id,
                "kind": m.kind,
                "channel": m.channel,
                "author": m.author,
                "subject": m.subject,
                "text": m.text,
                # cleaned like on the pages, so a client may show it as it is; the stored
                # original stays in the database (and the quarantine) for forensics
                "html": str(sanitize(m.html)) if m.html else None,
                "automatic": m.automatic,
                "created_at": iso(m.created_at),
                "attachments": [
                    {
                        "id": a.id,
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "size": a.size,
                        "sha256": a.sha256,
                    }
                    for a in files
                ],
            }
            for m, files in queries.ticket_messages(conn, row.id)
        ]
        data["history"] = [
            {"at": iso(h.at), "actor": h.actor, "kind": h.kind, "reason": h.reason, "data": h.data}
            for h in queries.ticket_history(conn, row.id)
        ]
        return data

    return web.json_response(await helpdesk.read(load))


async def _ticket_for(request: web.Request, who: Principal) -> int:
    number = path_number(request)
    helpdesk = request.app[HELPDESK]
    row = await helpdesk.db.read(lambda conn: queries.ticket_row(conn, number))
    _visible(who, row)
    return number


TEXT_BODY = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "minLength": 1}},
}
REPLY_BODY = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "html": {"type": "string"},
        "status": {"type": "string", "enum": ["open", "pending", "resolved"]},
    },
}


@api.route(
    "POST",
    "/api/v1/tickets/{number}/replies",
    summary="Reply to the customer (sent on their channel through the outbox)",
    role=Role.AGENT,
    body=REPLY_BODY,
    params=[TICKET_PARAM],
    responses={
        201: "Reply stored and queued",
        400: "Invalid input",
        404: "Unknown ticket",
        409: "Invalid status change",
    },
)
async def post_reply(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    number = await _ticket_for(request, who)
    data = await read_json(request)
    text = field_str(data, "text")
    html = field_str(data, "html", required=False) or None
    status = parse_status(data["status"]) if isinstance(data.get("status"), str) else None
    if data.get("status") is not None and status is None:
        raise InvalidInput("status must be a string", "status")
    message_id = await request.app[HELPDESK].reply(
        number, text, actor_of(who), html=html, status=status
    )
    return web.json_response({"message_id": message_id}, status=201)


@api.route(
    "POST",
    "/api/v1/tickets/{number}/notes",
    summary="Add an internal note",
    role=Role.AGENT,
    body=TEXT_BODY,
    params=[TICKET_PARAM],
    responses={201: "Note stored", 400: "Invalid input", 404: "Unknown ticket"},
)
async def post_note(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    number = await _ticket_for(request, who)
    data = await read_json(request)
    message_id = await request.app[HELPDESK].note(number, field_str(data, "text"), actor_of(who))
    return web.json_response({"message_id": message_id}, status=201)


@api.route(
    "POST",
    "/api/v1/tickets/{number}/claim",
    summary="Claim the ticket (compare-and-set: one agent wins)",
    role=Role.AGENT,
    params=[TICKET_PARAM],
    responses={200: "Claimed", 404: "Unknown ticket", 409: "Claimed by someone else"},
)
async def post_claim(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    number = await _ticket_for(request, who)
    agent_id = await request.app[HELPDESK].claim(number, actor_of(who))
    return web.json_response(
        {"number": number, "assignee": {"id": agent_id, "name": who.agent_name}}
    )


ASSIGN_BODY = {
    "type": "object",
    "required": ["agent_id"],
    "properties": {"agent_id": {"type": ["integer", "null"]}, "reason": {"type": "string"}},
}


@api.route(
    "POST",
    "/api/v1/tickets/{number}/assign",
    summary="Assign the ticket to an agent (null: back to the queue)",
    role=Role.SUPERVISOR,
    body=ASSIGN_BODY,
    params=[TICKET_PARAM],
    responses={
        200: "Assigned",
        400: "Invalid input",
        403: "Needs supervisor",
        404: "Unknown ticket or agent",
    },
)
async def post_assign(request: web.Request) -> web.Response:
    who = await principal(request, Role.SUPERVISOR)
    number = path_number(request)
    data = await read_json(request)
    if "agent_id" not in data:
        raise InvalidInput("agent_id is required (null unassigns)", "agent_id")
    agent_id = data["agent_id"]
    if agent_id is not None and (not isinstance(agent_id, int) or isinstance(agent_id, bool)):
        raise InvalidInput("agent_id must be an integer or null", "agent_id")
    if agent_id is not None and not 0 < agent_id < 2**63:  # past 64 bits the driver overflows
        raise InvalidInput("agent_id must be a positive 64-bit integer or null", "agent_id")
    reason = field_str(data, "reason", required=False, max_len=500)
    await request.app[HELPDESK].assign(number, agent_id, actor_of(who), reason)
    return web.json_response({"number": number, "assignee": agent_id})


PATCH_BODY = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": [s.value for s in TicketStatus]},
        "priority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
        "add_tags": {"type": "array", "items": {"type": "string"}},
        "remove_tags": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"},
    },
}


def _str_list(data: dict[str, Any], name: str) -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{name} must be a list of strings", name)
    return value


@api.route(
    "PATCH",
    "/api/v1/tickets/{number}",
    summary="Change status, priority or tags",
    role=Role.AGENT,
    body=PATCH_BODY,
    params=[TICKET_PARAM],
    responses={
        200: "The changed ticket",
        400: "Invalid input",
        404: "Unknown ticket",
        409: "Invalid status change",
    },
)
async def patch_ticket(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    number = await _ticket_for(request, who)
    data = await read_json(request)
    unknown = sorted(set(data) - set(PATCH_BODY["properties"]))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", unknown[0])
    for name in ("status", "priority", "reason"):
        if name in data and not isinstance(data[name], str):
            raise InvalidInput(f"{name} must be a string", name)
    helpdesk = request.app[HELPDESK]
    actor = actor_of(who)
    priority = parse_priority(data["priority"]) if "priority" in data else None
    add, remove = _str_list(data, "add_tags"), _str_list(data, "remove_tags")
    if priority or add or remove:
        await helpdesk.update_fields(
            number, actor, priority=priority, add_tags=add, remove_tags=remove
        )
    if "status" in data:
        await helpdesk.set_status(
            number, parse_status(data["status"]), actor, data.get("reason", "")
        )

    def load(conn: Any, ctx: Any) -> dict[str, Any]:
        row = queries.ticket_row(conn, number)
        return ticket_json(view_from_row(row, ctx), row)

    return web.json_response(await helpdesk.read(load))


@api.route(
    "GET",
    "/api/v1/tickets/{number}/attachments/{id}",
    summary="Download an attachment of the ticket",
    role=Role.AGENT,
    params=[
        TICKET_PARAM,
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
    ],
    responses={200: "The file", 404: "Unknown ticket or attachment"},
)
async def get_attachment(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    number = await _ticket_for(request, who)
    attachment_id = parse_id(request.match_info["id"])
    if attachment_id is None:
        raise NotFound("attachment not found")
    helpdesk = request.app[HELPDESK]
    meta = await helpdesk.db.read(lambda c: queries.attachment(c, number, attachment_id))
    content = helpdesk.attachments.get(meta.sha256)
    disposition = "inline" if meta.content_type.startswith("image/") else "attachment"
    return web.Response(
        body=content,
        content_type="application/octet-stream"
        if disposition == "attachment"
        else meta.content_type,
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(meta.filename)}",
            "X-Content-Type-Options": "nosniff",
        },
    )


@api.route(
    "GET",
    "/api/v1/outbox",
    summary="Outbound messages and their delivery state",
    role=Role.SUPERVISOR,
    tag="operations",
    params=[
        {
            "name": "status",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["queued", "sending", "sent", "dead"]},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
    ],
    responses={200: "Outbox rows", 403: "Needs supervisor"},
)
async def get_outbox(request: web.Request) -> web.Response:
    await principal(request, Role.SUPERVISOR)
    status = request.query.get("status") or None
    if status not in (None, "queued", "sending", "sent", "dead"):
        raise InvalidInput("status must be queued, sending, sent or dead", "status")
    limit = query_int(request, "limit", 100, low=1, high=200)
    rows = await request.app[HELPDESK].db.read(lambda c: queries.list_outbox(c, status, limit))
    return web.json_response(
        {
            "rows": [
                {
                    "id": r.id,
                    "idempotency_key": r.idempotency_key,
                    "ticket_id": r.ticket_id,
                    "channel": r.channel,
                    "address": r.address,
                    "status": r.status,
                    "attempts": r.attempts,
                    "next_attempt_at": iso(r.next_attempt_at),
                    "last_error": r.last_error,
                    "external_id": r.external_id,
                    "created_at": iso(r.created_at),
                    "sent_at": iso(r.sent_at),
                    "subject": r.payload.get("subject", ""),
                }
                for r in rows
            ]
        }
    )


@api.route(
    "GET",
    "/api/v1/me",
    summary="Who the token belongs to",
    role=Role.AGENT,
    tag="operations",
    responses={200: "The caller", 401: "No token"},
)
async def get_me(request: web.Request) -> web.Response:
    who = await principal(request, Role.AGENT)
    return web.json_response(
        {
            "name": who.name,
            "role": who.role.value,
            "agent_id": who.agent_id,
            "agent_name": who.agent_name,
            "team_id": who.team_id,
        }
    )
