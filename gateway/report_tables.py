"""KPI results as plain values and tables: the report filter from query parameters or CLI
options, JSON-ready values, the long (kpi, key, metric, value) rows and their CSV. Shared by the
reports API, the dashboard and ``helpline report``, which must start without the web stack."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from core import reports as kpis
from core.errors import InvalidInput
from core.messages import Channel
from core.reports import ReportFilter
from core.tickets import parse_priority
from gateway.validation import parse_id

DEFAULT_DAYS = 30


def parse_moment(value: str, field: str) -> datetime:
    """ISO 8601 with an offset (``Z`` too), or a date meaning its UTC midnight."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} must be an ISO 8601 date or date-time", field) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} needs a UTC offset (e.g. {value}Z)", field)
    return moment


def parse_filter(query: Mapping[str, str], now: datetime) -> ReportFilter:
    """The report filter from query parameters (or CLI options); InvalidInput names the field."""
    until = parse_moment(query["until"], "until") if query.get("until") else now
    since = (
        parse_moment(query["since"], "since")
        if query.get("since")
        else until - timedelta(days=DEFAULT_DAYS)
    )
    team = query.get("team") or None
    if team is not None and len(team) > 100:
        raise InvalidInput("team is longer than 100 characters", "team")
    agent = query.get("agent") or None
    agent_id = parse_id(agent) if agent is not None else None
    if agent is not None and agent_id is None:
        raise InvalidInput("agent must be an agent id (an integer)", "agent")
    channel = query.get("channel") or None
    if channel is not None and channel not in {c.value for c in Channel}:
        allowed = ", ".join(c.value for c in Channel)
        raise InvalidInput(f"unknown channel {channel!r} (one of: {allowed})", "channel")
    priority = query.get("priority") or None
    return ReportFilter(
        since,
        until,
        team=team,
        agent_id=agent_id,
        channel=channel,
        priority=parse_priority(priority).value if priority else None,
    )


def plain(value: Any) -> Any:
    """Dataclasses, dates and lists as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def rows(kpi: str, value: Any) -> list[tuple[str, str, str, Any]]:
    """(kpi, key, metric, value) rows: scalars under an empty key, list items under their first
    field (a day, a status, a question), nested results as dotted metric names."""
    out: list[tuple[str, str, str, Any]] = []

    def walk(obj: Any, key: str, prefix: str) -> None:
        if isinstance(obj, list):
            for entry in obj:
                first, *rest = entry
                walk({k: entry[k] for k in rest}, str(entry[first]), prefix)
            return
        for name, item in obj.items():
            if isinstance(item, dict | list):
                walk(item, key, f"{prefix}{name}.")
            else:
                out.append((kpi, key, f"{prefix}{name}", item))

    walk(plain(value), "", "")
    return out


def csv_text(table: list[tuple[str, str, str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kpi", "key", "metric", "value"])
    writer.writerows(("" if v is None else v for v in row) for row in table)
    return buffer.getvalue()


def dashboard_rows(board: kpis.Dashboard) -> list[tuple[str, str, str, Any]]:
    table = []
    for name in kpis.KPIS:
        table += rows(name, getattr(board, name.replace("-", "_")))
    return table
