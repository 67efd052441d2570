"""GET /api/v1/reports[/{kpi}] (JSON and CSV, supervisors only) and `helpline report`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from core.desk import Actor
from core.messages import Channel, InboundMessage, Sender
from core.tickets import TicketStatus
from gateway import report_cli
from gateway.app import create_app
from tests.conftest import Server, make_settings
from tests.core.conftest import StepClock

PERIOD = {"since": "2026-03-02", "until": "2026-03-03T00:00:00Z"}


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    """The real app on a loopback port, with a clock the test controls."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = make_settings(db_url, tmp_path / "data", port)
    clock = StepClock()  # 2026-03-02 09:00 UTC
    app = create_app(settings, clock=clock, env={})
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    srv = Server(f"http://127.0.0.1:{port}", app, settings)
    try:
        await _seed(srv, clock)
        yield srv
    finally:
        await runner.cleanup()


async def _seed(srv: Server, clock: StepClock) -> None:
    """Two tickets on 03-02: #1 (email) answered after 30 min and resolved after 2 h; #2 (web)
    never answered."""
    helpdesk = srv.helpdesk
    _, agent_id = await srv.token("agent", name="Ann")
    ann = Actor(agent_id, "Ann", "agent")
    numbers = []
    for i, channel in enumerate((Channel.EMAIL, Channel.WEB)):
        result = await helpdesk.ingest(
            InboundMessage(
                channel, f"m{i}", Sender(f"c{i}@example.org", email=f"c{i}@example.org"),
                "Help", clock.now, subject="Help",
            )
        )  # fmt: skip
        numbers.append(result.ticket_number)
    clock.advance(minutes=30)
    await helpdesk.reply(numbers[0], "Done", ann)
    clock.advance(minutes=90)
    await helpdesk.set_status(numbers[0], TicketStatus.RESOLVED, ann)


async def get(
    http: aiohttp.ClientSession, srv: Server, path: str, token: str | None, **query: Any
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.get(f"{srv.base_url}{path}", params=query, headers=headers)


async def test_the_dashboard_as_json(server: Server, http: aiohttp.ClientSession) -> None:
    token, _ = await server.token("supervisor")
    resp = await get(http, server, "/api/v1/reports", token, **PERIOD)
    assert resp.status == 200
    board = await resp.json()
    assert board["filter"]["since"] == "2026-03-02T00:00:00+00:00"
    assert board["first_response"] == {"count": 1, "mean": 1800.0, "p50": 1800.0, "p90": 1800.0}
    assert board["resolution"]["mean"] == 7200.0
    assert board["flow"]["days"] == [
        {"day": "2026-03-02", "created": 2, "resolved": 1, "backlog": 1}
    ]
    assert board["first_contact_resolution"]["rate"] == 1.0
    assert board["kb_gaps"] == []


async def test_one_kpi_filtered(server: Server, http: aiohttp.ClientSession) -> None:
    token, _ = await server.token("supervisor")
    resp = await get(http, server, "/api/v1/reports/deflection", token, **PERIOD, channel="web")
    assert resp.status == 200
    body = await resp.json()
    assert body["kpi"] == "deflection" and body["filter"]["channel"] == "web"
    assert body["result"] == {"opened": 1, "deflected": 0, "rate": 0.0}


async def test_csv_export(server: Server, http: aiohttp.ClientSession) -> None:
    token, _ = await server.token("supervisor")
    resp = await get(http, server, "/api/v1/reports/flow", token, **PERIOD, format="csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "helpline-flow-20260302-20260303.csv" in resp.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(await resp.text())))
    assert table[0] == ["kpi", "key", "metric", "value"]
    assert ["flow", "", "created", "2"] in table
    assert ["flow", "2026-03-02", "days.backlog", "1"] in table
    whole = await get(http, server, "/api/v1/reports", token, **PERIOD, format="csv")
    rows = list(csv.reader(io.StringIO(await whole.text())))
    assert ["first-response", "", "p90", "1800.0"] in rows
    assert ["time-in-status", "new", "visits", "2"] in rows


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-03-03T00:00:00"}, "until"),  # no offset: ambiguous
        ({"since": "2026-03-05", "until": "2026-03-03"}, "since"),
        ({"agent": "ann"}, "agent"),
        ({"agent": "4242"}, "agent"),  # no such agent
        ({"team": "nope"}, "team"),
        ({"channel": "fax"}, "channel"),
        ({"priority": "asap"}, "priority"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_an_invalid_filter_is_a_400_naming_the_field(
    server: Server, http: aiohttp.ClientSession, query: dict[str, str], field: str
) -> None:
    token, _ = await server.token("supervisor")
    resp = await get(http, server, "/api/v1/reports/sla", token, **query)
    assert resp.status == 400
    assert (await resp.json())["field"] == field


async def test_supervisors_only(server: Server, http: aiohttp.ClientSession) -> None:
    assert (await get(http, server, "/api/v1/reports", None)).status == 401
    agent, _ = await server.token("agent")
    assert (await get(http, server, "/api/v1/reports", agent)).status == 403
    admin, _ = await server.token("admin")
    assert (await get(http, server, "/api/v1/reports/nps", admin)).status == 200
    unknown = await get(http, server, "/api/v1/reports/happiness", admin)
    assert unknown.status == 404


async def test_the_default_period_is_the_last_30_days(
    server: Server, http: aiohttp.ClientSession
) -> None:
    token, _ = await server.token("supervisor")
    body = await (await get(http, server, "/api/v1/reports/reopens", token)).json()
    # the server's clock stands at 2026-03-02 11:00
    assert body["filter"]["until"] == "2026-03-02T11:00:00+00:00"
    assert body["filter"]["since"] == "2026-01-31T11:00:00+00:00"
    assert body["result"] == {"resolved": 1, "reopened": 0, "rate": 0.0}


def _cli(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="helpline")
    parser.add_argument("--config")
    report_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--config", str(config), *argv])
    return int(args.func(args))


async def test_the_report_command(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    config = tmp_path / "helpline.toml"
    config.write_text(
        f'[service]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{db_url}"\n'
    )
    since, until = "--since=2026-03-02", "--until=2026-03-03T00:00Z"
    assert _cli(config, "report", since, until) == 0
    out = capsys.readouterr().out
    assert "helpline report 2026-03-02 00:00 to 2026-03-03 00:00 UTC" in out
    assert "First response  1 tickets  30 min  30 min  30 min" in out
    assert "2026-03-02  2        1         1" in out
    assert _cli(config, "report", "resolution", since, until, "--format=json") == 0
    assert json.loads(capsys.readouterr().out)["result"]["p50"] == 7200.0
    assert _cli(config, "report", since, until, "--channel=web", "--format=csv") == 0
    assert "deflection,,opened,1" in capsys.readouterr().out.splitlines()


def test_an_iso_moment_with_offset_is_kept() -> None:
    from gateway.report_tables import parse_filter

    f = parse_filter({"since": "2026-03-01T08:00+02:00"}, datetime(2026, 3, 2, tzinfo=UTC))
    assert f.since == datetime(2026, 3, 1, 6, tzinfo=UTC)
