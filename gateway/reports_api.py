"""KPI reports for supervisors: GET /api/v1/reports (the dashboard) and /api/v1/reports/{kpi},
as JSON or, with ``?format=csv``, as CSV (long format: kpi, key, metric, value)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core import reports as kpis
from core.accounts import Role
from core.errors import InvalidInput, NotFound
from core.messages import Channel
from gateway.api import principal
from gateway.http import Api
from gateway.report_tables import DEFAULT_DAYS, csv_text, dashboard_rows, parse_filter, plain, rows
from gateway.state import HELPDESK

reports = Api()

STR = {"type": "string"}
FILTER_PARAMS = [
    {"name": n, "in": "query", "required": False, "schema": s, "description": d}
    for n, s, d in [
        ("since", {**STR, "format": "date-time"}, "start (ISO 8601 with offset, or a UTC date)"),
        (
            "until",
            {**STR, "format": "date-time"},
            f"end, exclusive (default: now; the period defaults to the last {DEFAULT_DAYS} days)",
        ),
        ("team", STR, "team name"),
        ("agent", {"type": "integer"}, "agent id (the tickets' assignee)"),
        ("channel", {"enum": [c.value for c in Channel]}, "ticket channel"),
        ("priority", {"enum": ["low", "normal", "high", "urgent"]}, "ticket priority"),
        ("format", {"enum": ["json", "csv"]}, "json (default) or csv"),
    ]
]


async def _report(request: web.Request, kpi: str | None) -> web.Response:
    await principal(request, Role.SUPERVISOR)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidInput("format must be json or csv", "format")
    if kpi is not None and kpi not in kpis.KPIS:
        raise NotFound(f"unknown report {kpi!r} (one of: {', '.join(kpis.KPIS)})")
    helpdesk = request.app[HELPDESK]
    f = parse_filter(request.query, helpdesk.clock())

    if kpi is None:
        result: Any = await kpis.read_all_kpis(helpdesk.db, f)
    else:
        one = kpis.KPIS[kpi]

        def read(conn: Any) -> Any:
            kpis.check_filter(conn, f)
            return one(conn, f)

        result = await helpdesk.db.read(read)
    if fmt == "csv":
        table = dashboard_rows(result) if kpi is None else rows(kpi, result)
        name = f"helpline-{kpi or 'dashboard'}-{f.since:%Y%m%d}-{f.until:%Y%m%d}.csv"
        return web.Response(
            text=csv_text(table),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    if kpi is None:
        return web.json_response(plain(result))
    return web.json_response({"kpi": kpi, "filter": plain(f), "result": plain(result)})


@reports.route(
    "GET",
    "/api/v1/reports",
    summary="Every dashboard KPI for a period (default: the last 30 days)",
    role=Role.SUPERVISOR,
    tag="reports",
    params=FILTER_PARAMS,
    responses={200: "The dashboard (JSON or CSV)", 400: "Invalid filter", 403: "Needs supervisor"},
)
async def get_dashboard(request: web.Request) -> web.Response:
    return await _report(request, None)


@reports.route(
    "GET",
    "/api/v1/reports/{kpi}",
    summary="One KPI: " + ", ".join(kpis.KPIS),
    role=Role.SUPERVISOR,
    tag="reports",
    params=[
        {"name": "kpi", "in": "path", "required": True, "schema": {"enum": list(kpis.KPIS)}},
        *FILTER_PARAMS,
    ],
    responses={
        200: "The KPI (JSON or CSV)",
        400: "Invalid filter",
        403: "Needs supervisor",
        404: "Unknown KPI",
    },
)
async def get_kpi(request: web.Request) -> web.Response:
    return await _report(request, request.match_info["kpi"])
