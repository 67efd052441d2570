"""Admin routes: the quarantine of inbound data that could not become a message, and the audit
log. Every admin action records itself in the audit log in its own transaction."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Connection

from adapters.email_parse import UnparseableEmail, parse_email
from core import audit, quarantine
from core.accounts import Principal, Role
from core.errors import InvalidInput, NotFound
from core.messages import Attachment, Channel, InboundMessage, Sender
from gateway.api import iso, principal
from gateway.http import Api, client_ip, problem, query_int
from gateway.state import HELPDESK
from gateway.validation import clean_email, clean_name, parse_id

admin = Api()

ENTRY_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}


def api_actor(who: Principal) -> str:
    """The audit log's actor for a bearer token: its name and id (names need not be unique)."""
    return f"token:{who.name}#{who.token_id}"


def kept_submission(entry_id: int, raw: bytes, now: datetime) -> InboundMessage:
    """A web form or JSON submission the per-sender limit kept (gateway/api.py, pages.py), as
    intake would have taken it; InvalidInput for anything else (a honeypot catch stays)."""
    try:
        data = json.loads(raw)
        fields = data["submission"]
        email = clean_email(fields["email"])
        web_form = data["channel"] == "web"
        key = data["form_id"] if web_form else data["idempotency_key"]
        attachments = tuple(
            Attachment(a["filename"], a["content_type"], base64.b64decode(a["content"]))
            for a in data.get("attachments", ())
        )
        return InboundMessage(
            channel=Channel.WEB if web_form else Channel.API,
            external_id=key or f"quarantine:{entry_id}",
            sender=Sender(address=email, name=clean_name(fields.get("name", "")), email=email),
            subject=fields.get("subject", "").strip(),
            text=fields["message" if web_form else "body"],
            attachments=attachments,
            received_at=now,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidInput(f"not a kept submission ({err!r})", "raw") from None


def _entry_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if (entry_id := parse_id(raw)) is None:
        raise NotFound(f"quarantine entry {raw} not found")
    return entry_id


@admin.route(
    "GET",
    "/api/v1/quarantine",
    summary="Inbound data kept because it could not be processed",
    role=Role.ADMIN,
    tag="admin",
    params=[
        {"name": "all", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
    ],
    responses={200: "Entries, newest first", 403: "Needs admin"},
)
async def list_quarantine(request: web.Request) -> web.Response:
    await principal(request, Role.ADMIN)
    limit = query_int(request, "limit", 100, low=1, high=200)
    pending_only = request.query.get("all", "").lower() not in ("1", "true", "yes")
    rows = await request.app[HELPDESK].db.read(
        lambda c: quarantine.entries(c, pending_only=pending_only, limit=limit)
    )
    return web.json_response(
        {
            "entries": [
                {
                    "id": r.id,
                    "channel": r.channel,
                    "reason": r.reason,
                    "created_at": iso(r.created_at),
                    "processed_at": iso(r.processed_at),
                }
                for r in rows
            ]
        }
    )


@admin.route(
    "GET",
    "/api/v1/quarantine/{id}/raw",
    summary="The raw bytes of an entry",
    role=Role.ADMIN,
    tag="admin",
    params=[ENTRY_PARAM],
    responses={200: "The raw data", 403: "Needs admin", 404: "Unknown entry"},
)
async def quarantine_raw(request: web.Request) -> web.Response:
    who = await principal(request, Role.ADMIN)
    entry_id = _entry_id(request)
    helpdesk = request.app[HELPDESK]

    def read(c: Connection) -> Any:
        # raw customer data leaving the service: an admin action like any other
        row = quarantine.entry(c, entry_id)
        audit.record_admin_action(
            c,
            actor=api_actor(who),
            action="quarantine.raw",
            target=f"quarantine:{entry_id}",
            ip=client_ip(request),
            now=helpdesk.clock(),
        )
        return row

    row = await helpdesk.db.write(read)
    kind = "message/rfc822" if row.channel == "email" else "application/octet-stream"
    return web.Response(
        body=row.raw,
        content_type=kind,
        headers={"Content-Disposition": f"attachment; filename=q{entry_id}"},
    )


@admin.route(
    "POST",
    "/api/v1/quarantine/{id}/reprocess",
    summary="Run an entry through intake again (after the cause is fixed)",
    role=Role.ADMIN,
    tag="admin",
    params=[ENTRY_PARAM],
    responses={
        200: "Processed into a ticket",
        403: "Needs admin",
        404: "Unknown entry",
        409: "Already re-processed",
        422: "Still cannot be processed",
    },
)
async def reprocess(request: web.Request) -> web.Response:
    who = await principal(request, Role.ADMIN)
    entry_id = _entry_id(request)
    helpdesk = request.app[HELPDESK]
    row = await helpdesk.db.read(lambda c: quarantine.entry(c, entry_id))
    if row.processed_at is not None:
        return problem(409, f"quarantine entry {entry_id} was already re-processed")
    if row.channel not in ("email", "api", "web"):
        return problem(422, f"entries of channel {row.channel!r} cannot be re-processed")
    try:
        if row.channel == "email":
            msg = parse_email(row.raw, received_at=helpdesk.clock())
        else:
            msg = kept_submission(entry_id, row.raw, helpdesk.clock())
        result = await helpdesk.ingest(msg)
    except (UnparseableEmail, InvalidInput) as err:
        return problem(422, f"still cannot be processed: {err}")

    def done(c: Connection) -> None:
        now = helpdesk.clock()
        quarantine.mark_processed(c, entry_id, now, f"ticket #{result.ticket_number}")
        audit.record_admin_action(
            c,
            actor=api_actor(who),
            action="quarantine.reprocess",
            target=f"quarantine:{entry_id}",
            details={"ticket": result.ticket_number},
            ip=client_ip(request),
            now=now,
        )

    await helpdesk.db.write(done)
    return web.json_response(
        {
            "id": entry_id,
            "ticket": {"number": result.ticket_number, "status_url": result.status_url},
        }
    )


@admin.route(
    "GET",
    "/api/v1/audit",
    summary="The audit log of admin actions, newest first",
    role=Role.ADMIN,
    tag="admin",
    params=[
        {"name": "action", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer"}},
    ],
    responses={200: "A page of entries", 400: "Bad parameter", 403: "Needs admin"},
)
async def list_audit(request: web.Request) -> web.Response:
    await principal(request, Role.ADMIN)
    limit = query_int(request, "limit", 50, low=1, high=200)
    offset = query_int(request, "offset", 0, low=0, high=10**9)
    action = request.query.get("action") or None
    rows, total = await request.app[HELPDESK].db.read(
        lambda c: audit.entries(c, limit=limit, offset=offset, action=action)
    )
    return web.json_response(
        {
            "entries": [
                {
                    "id": r.id,
                    "at": iso(r.at),
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "details": r.details,
                    "ip": r.ip,
                }
                for r in rows
            ],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )
