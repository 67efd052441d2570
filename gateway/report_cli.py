"""`helpline report [KPI]`: the dashboard's KPIs in the terminal (or as JSON/CSV)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core import reports as kpis
from core.ports import utc_now
from gateway.report_tables import csv_text, dashboard_rows, parse_filter, plain, rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _table(title: str, header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    line = "  ".join
    out = [
        title,
        line(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        line("-" * w for w in widths),
    ]
    out += [line(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(out)


def render(board: kpis.Dashboard) -> str:
    f = board.filter
    scope = ", ".join(
        f"{k}={v}"
        for k, v in (
            ("team", f.team),
            ("agent", f.agent_id),
            ("channel", f.channel),
            ("priority", f.priority),
        )
        if v is not None
    )
    fr, res = board.first_response, board.resolution
    fcr, sla, flow = board.first_contact_resolution, board.sla, board.flow
    summary = [
        [
            "First response",
            f"{fr.count} tickets",
            _duration(fr.mean),
            _duration(fr.p50),
            _duration(fr.p90),
        ],
        [
            "Resolution",
            f"{res.count} tickets",
            _duration(res.mean),
            _duration(res.p50),
            _duration(res.p90),
        ],
    ]
    rates = [
        ["First-contact resolution", _pct(fcr.rate), f"{fcr.first_contact} of {fcr.answered}"],
        ["SLA first response", _pct(sla.first_response.rate),
         f"{sla.first_response.met} met, {sla.first_response.breached} breached, "
         f"{sla.first_response.pending} pending"],
        ["SLA resolution", _pct(sla.resolution.rate),
         f"{sla.resolution.met} met, {sla.resolution.breached} breached, "
         f"{sla.resolution.pending} pending"],
        ["Reopen rate", _pct(board.reopens.rate),
         f"{board.reopens.reopened} of {board.reopens.resolved}"],
        ["CSAT", "-" if board.csat.average is None else f"{board.csat.average:.2f} / 5",
         f"{board.csat.responses} answers"],
        ["CSAT response rate", _pct(board.csat.response_rate),
         f"{board.csat.answered} of {board.csat.surveyed}"],
        ["NPS", "-" if board.nps.score is None else f"{board.nps.score:+.1f}",
         f"{board.nps.promoters}/{board.nps.passives}/{board.nps.detractors} "
         "promoters/passives/detractors"],
        ["KB deflection", _pct(board.deflection.rate),
         f"{board.deflection.deflected} of {board.deflection.opened} opened"],
    ]  # fmt: skip
    days = [[d.day.isoformat(), str(d.created), str(d.resolved), str(d.backlog)] for d in flow.days]
    statuses = [
        [s.status, str(s.visits), _duration(s.mean_seconds), f"{s.total_seconds / 3600:.1f} h"]
        for s in board.time_in_status
    ]
    gaps = [[g.question, str(g.count), str(g.tickets)] for g in board.kb_gaps]
    parts = [
        f"helpline report {f.since:%Y-%m-%d %H:%M} to {f.until:%Y-%m-%d %H:%M} UTC"
        + (f" ({scope})" if scope else ""),
        _table("", ["Time", "Tickets", "Mean", "Median", "90th pct"], summary),
        _table("", ["KPI", "Value", "Detail"], rates),
        _table(
            f"\nCreated vs resolved: {flow.created} vs {flow.resolved}; backlog "
            f"{flow.backlog_start} -> {flow.backlog_end}",
            ["Day", "Created", "Resolved", "Backlog"],
            days,
        ),
        _table("\nTime in status", ["Status", "Visits", "Mean", "Total"], statuses),
        _table("\nKB gaps (no article matched)", ["Question", "Times", "Tickets"], gaps)
        if gaps
        else "\nKB gaps: none recorded",
    ]
    return "\n".join(parts)


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.cli import _migrated, _settings  # the CLI's own config lookup (lazy: no cycle)

    query = {
        "since": args.since,
        "until": args.until,
        "team": args.team,
        "agent": None if args.agent is None else str(args.agent),
        "channel": args.channel,
        "priority": args.priority,
    }
    f = parse_filter({k: v for k, v in query.items() if v is not None}, utc_now())
    db = _migrated(_settings(args))

    def read(conn: Any) -> Any:
        kpis.check_filter(conn, f)
        return kpis.all_kpis(conn, f) if args.kpi is None else kpis.KPIS[args.kpi](conn, f)

    result = db.run_sync(read)
    if args.format == "json":
        data = plain(result) if args.kpi is None else {"kpi": args.kpi, "result": plain(result)}
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        table = dashboard_rows(result) if args.kpi is None else rows(args.kpi, result)
        print(csv_text(table), end="")
    elif args.kpi is None:
        print(render(result))
    else:
        lines = [
            [key, metric, "-" if value is None else str(value)]
            for _, key, metric, value in rows(args.kpi, result)
        ]
        print(
            _table(
                f"{args.kpi} {f.since:%Y-%m-%d %H:%M} to {f.until:%Y-%m-%d %H:%M} UTC",
                ["Key", "Metric", "Value"],
                lines,
            )
        )
    return 0


def add_parser(sub: Any) -> None:
    """``helpline report``: registered by gateway/cli.py's parser()."""
    report = sub.add_parser("report", help="KPIs in the terminal (default: last 30 days)")
    report.add_argument("--config", default=argparse.SUPPRESS)
    report.add_argument("kpi", nargs="?", choices=list(kpis.KPIS), help="one KPI (default: all)")
    report.add_argument("--since", help="ISO date or date-time with offset (default: until - 30d)")
    report.add_argument("--until", help="ISO date or date-time with offset (default: now)")
    report.add_argument("--team", help="team name")
    report.add_argument("--agent", type=int, help="agent id (the tickets' assignee)")
    report.add_argument("--channel")
    report.add_argument("--priority")
    report.add_argument("--format", choices=["table", "json", "csv"], default="table")
    report.set_defaults(func=cmd_report)
