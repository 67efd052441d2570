"""The manager's dashboard: GET /dashboard (HTML, no JavaScript) and GET /dashboard.csv.

Every KPI of ``core.reports.all_kpis``, the live SLA queue and the agents' load, read at the
same time in three transactions (``core.reports.read_all_kpis``), with the charts drawn
server-side (gateway/charts.py). Supervisors and admins only, through the signed session of
gateway/login.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import Connection, select

from core import dashboard_queries, reports
from core.dashboard_queries import AgentLoad, QueueEntry
from core.errors import InvalidInput
from core.messages import Channel
from core.persistence.database import Database
from core.persistence.models import Agent, Team, table_of
from core.reports import Dashboard, ReportFilter
from core.tickets import Priority
from gateway import charts, csrf
from gateway.login import add_login_routes, manager_or_refusal
from gateway.pages import render
from gateway.report_tables import csv_text, dashboard_rows, parse_filter
from gateway.state import HELPDESK

PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30
REFRESH_SECONDS = 60
FILTER_KEYS = ("period", "from", "to", "team", "agent", "channel", "priority")


@dataclass(frozen=True, slots=True)
class Board:
    """Everything the page shows (see ``read_board``)."""

    kpis: Dashboard
    queue: list[QueueEntry]
    load: list[AgentLoad]


def _day(query: Mapping[str, str], name: str) -> date:
    try:
        return date.fromisoformat(query[name])
    except ValueError:
        raise InvalidInput(f"{name} must be a date like 2026-03-01", name) from None


def dashboard_filter(query: Mapping[str, str], now: datetime) -> ReportFilter:
    """The period (the last 7, 30 or 90 days, or the days from..to inclusive) and the ticket
    filters from the page's query; InvalidInput names the parameter."""
    period = query.get("period") or ""
    start, end = query.get("from") or "", query.get("to") or ""
    if period and period not in {str(p) for p in PERIODS}:
        raise InvalidInput(f"period must be one of {', '.join(map(str, PERIODS))} (days)", "period")
    if start or end:
        if not (start and end):
            missing = "to" if start else "from"
            raise InvalidInput(f"{missing} is needed too: give both from and to", missing)
        since = datetime.combine(_day(query, "from"), time(), UTC)
        until = datetime.combine(_day(query, "to"), time(), UTC) + timedelta(days=1)
        if since >= until:
            raise InvalidInput("from must not be after to", "from")
        if until - since > reports.MAX_PERIOD:
            raise InvalidInput(f"from..to is longer than {reports.MAX_PERIOD.days} days", "from")
    else:
        until = now
        since = now - timedelta(days=int(period or DEFAULT_PERIOD))
    # the ticket filters are the reports API's: the same validation and messages
    fields = {k: query[k] for k in ("team", "agent", "channel", "priority") if query.get(k)}
    return parse_filter({"since": since.isoformat(), "until": until.isoformat(), **fields}, now)


async def read_board(db: Database, f: ReportFilter, now: datetime) -> Board:
    def live(conn: Connection) -> tuple[list[QueueEntry], list[AgentLoad]]:
        return dashboard_queries.live_queue(conn, now), dashboard_queries.agent_load(conn, now)

    kpis, (queue, load) = await asyncio.gather(reports.read_all_kpis(db, f), db.read(live))
    return Board(kpis, queue, load)


def _choices(conn: Connection) -> tuple[list[str], list[tuple[int, str]]]:
    """The teams and the agents the filter form offers."""
    teams, agents = table_of(Team), table_of(Agent)
    team_names = list(conn.execute(select(teams.c.name).order_by(teams.c.name)).scalars())
    people = conn.execute(select(agents.c.id, agents.c.name).order_by(agents.c.name)).all()
    return team_names, [(int(a.id), a.name) for a in people]


# -- formatting ------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


def relative(minutes: int) -> str:
    if minutes < 0:
        return f"breached {-minutes} min ago"
    return f"due in {minutes} min"


def figures(board: Dashboard) -> dict[str, Markup]:
    """The page's SVG charts, by name."""
    days = board.flow.days
    flow = charts.line_chart(
        "chart-flow",
        "Tickets created and resolved per day, and the backlog",
        [d.day.strftime("%m-%d") for d in days],
        [
            charts.Series("created", [d.created for d in days], "#1f6feb"),
            charts.Series("resolved", [d.resolved for d in days], "#1a7f37"),
            charts.Series("backlog", [d.backlog for d in days], "#8c959f", True, True),
        ],
    )
    statuses = charts.bar_chart(
        "chart-status",
        "Average time per visit in each status",
        [(s.status, s.mean_seconds) for s in board.time_in_status],
        fmt=duration,
        color="#8250df",
    )
    csat = charts.gauge(
        "chart-csat",
        "Customer satisfaction (CSAT, 1-5)",
        board.csat.average,
        1,
        5,
        caption=f"{board.csat.responses} answers",
    )
    nps = charts.bar_chart(
        "chart-nps",
        "NPS answers: promoters, passives, detractors",
        [
            ("promoters (9-10)", board.nps.promoters),
            ("passives (7-8)", board.nps.passives),
            ("detractors (0-6)", board.nps.detractors),
        ],
        color="#bf8700",
        width=360,  # beside the gauge, in the narrow column
        label_width=120,
        value_width=40,
    )
    return {
        k: Markup(v)
        for k, v in (("flow", flow), ("status", statuses), ("csat", csat), ("nps", nps))
    }


# -- routes ----------------------------------------------------------------------------------


async def dashboard_page(request: web.Request) -> web.Response:
    agent, refusal = await manager_or_refusal(request)
    if refusal is not None:
        return refusal
    helpdesk = request.app[HELPDESK]
    now = helpdesk.clock()
    query = {k: request.query.get(k, "") for k in FILTER_KEYS}
    teams, agents = await helpdesk.db.read(_choices)
    context: dict[str, Any] = {
        "agent": agent,
        "query": query,
        "teams": teams,
        "agents": agents,
        "periods": PERIODS,
        "channels": [c.value for c in Channel],
        "priorities": [p.value for p in Priority],
        "refresh": REFRESH_SECONDS,
        "now": now,
        "duration": duration,
        "percent": percent,
        "relative": relative,
    }
    try:
        f = dashboard_filter(request.query, now)
        board = await read_board(helpdesk.db, f, now)
    except InvalidInput as err:
        context.update(error=str(err), field=err.field, board=None)
        return _page(request, 400, context)
    csv_query = urlencode({k: v for k, v in query.items() if v})
    context.update(
        error=None,
        field=None,
        board=board,
        kpis=board.kpis,
        charts=figures(board.kpis),
        csv_url="/dashboard.csv" + (f"?{csv_query}" if csv_query else ""),
    )
    return _page(request, 200, context)


def _page(request: web.Request, status: int, context: dict[str, Any]) -> web.Response:
    cookie, fresh = csrf.browser_cookie(request)
    context["logout"] = csrf.issue(request.app[HELPDESK].secret, cookie)
    response = render(request, "dashboard.html", status, **context)
    response.headers["Cache-Control"] = "no-store"  # numbers for signed-in managers only
    if fresh:
        public_url = request.app[HELPDESK].settings.service.public_url
        csrf.set_cookie(response, cookie, public_url.startswith("https"))
    return response


async def dashboard_csv(request: web.Request) -> web.Response:
    """The same KPIs as CSV, in the reports API's long format (kpi, key, metric, value)."""
    _, refusal = await manager_or_refusal(request)
    if refusal is not None:
        return refusal
    helpdesk = request.app[HELPDESK]
    now = helpdesk.clock()
    f = dashboard_filter(request.query, now)

    board = await reports.read_all_kpis(helpdesk.db, f)
    name = f"helpline-dashboard-{f.since:%Y%m%d}-{f.until:%Y%m%d}.csv"
    return web.Response(
        text=csv_text(dashboard_rows(board)),
        content_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


def add_dashboard_routes(app: web.Application) -> None:
    """Sign-in, sign-out, the dashboard and its CSV export."""
    add_login_routes(app)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/dashboard.csv", dashboard_csv)
