"""Admin routes: the quarantine of inbound data that could not become a message."""

from __future__ import annotations

from aiohttp import web

from adapters.email_parse import UnparseableEmail, parse_email
from core import quarantine
from core.accounts import Role
from core.errors import InvalidInput, NotFound
from gateway.api import iso, principal
from gateway.http import Api, problem, query_int
from gateway.state import HELPDESK

admin = Api()

ENTRY_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}


def _entry_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"quarantine entry {raw} not found")
    return int(raw)


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
    await principal(request, Role.ADMIN)
    entry_id = _entry_id(request)
    row = await request.app[HELPDESK].db.read(lambda c: quarantine.entry(c, entry_id))
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
    await principal(request, Role.ADMIN)
    entry_id = _entry_id(request)
    helpdesk = request.app[HELPDESK]
    row = await helpdesk.db.read(lambda c: quarantine.entry(c, entry_id))
    if row.processed_at is not None:
        return problem(409, f"quarantine entry {entry_id} was already re-processed")
    if row.channel != "email":
        return problem(422, f"entries of channel {row.channel!r} cannot be re-processed")
    try:
        msg = parse_email(row.raw, received_at=helpdesk.clock())
        result = await helpdesk.ingest(msg)
    except (UnparseableEmail, InvalidInput) as err:
        return problem(422, f"still cannot be processed: {err}")
    await helpdesk.db.write(
        lambda c: quarantine.mark_processed(
            c, entry_id, helpdesk.clock(), f"ticket #{result.ticket_number}"
        )
    )
    return web.json_response(
        {
            "id": entry_id,
            "ticket": {"number": result.ticket_number, "status_url": result.status_url},
        }
    )
