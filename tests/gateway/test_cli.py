"""The `helpline` command, run as a real process."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import new_event_loop, settle_garbage_collector


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    port = free_port()
    path = tmp_path / "helpline.toml"
    path.write_text(
        f'[service]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "data" / "helpline.db"}"\ndurable = false\n'
    )
    return path


def helpline(*args: str, config: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HELPLINE_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_migrate_agent_and_token(config: Path) -> None:
    assert "migrated" in helpline("migrate", config=config).stdout
    out = helpline(
        "agent",
        "add",
        "--name",
        "Alice",
        "--email",
        "alice@support.test",
        "--role",
        "supervisor",
        "--team",
        "billing",
        "--skills",
        "vat,refunds",
        config=config,
    ).stdout
    assert "Alice" in out
    token = (
        helpline(
            "token",
            "create",
            "--name",
            "alice-laptop",
            "--role",
            "supervisor",
            "--agent",
            "alice@support.test",
            config=config,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert token.startswith("hl_") and len(token) > 40
    dup = helpline(
        "agent", "add", "--name", "A2", "--email", "alice@support.test", config=config, check=False
    )
    assert dup.returncode == 2 and "exists already" in dup.stderr
    bad = helpline(
        "token",
        "create",
        "--name",
        "x",
        "--role",
        "agent",
        "--agent",
        "nobody@x.org",
        config=config,
        check=False,
    )
    assert bad.returncode == 2 and "no agent" in bad.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[intake]\nmax_attachmnet_bytes = 5\n")
    result = helpline("migrate", config=path, check=False)
    assert result.returncode == 2
    assert "intake.max_attachmnet_bytes: unknown setting" in result.stderr


def test_kb_import_markdown_and_csv(config: Path, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "reset-password.md").write_text(
        "---\nkeywords: password, login\n---\n# Resetting your password\n\nUse the link.\n"
    )
    (kb / "more.csv").write_text(
        "slug,title,body,keywords,language\n"
        "export,Exporting data,Settings > Export,csv,en\n"
        ",如何重置密码,点击忘记密码,密码,zh\n"
    )
    result = helpline("kb", "import", str(kb), config=config)
    assert "3 article(s) imported: 3 new" in result.stdout
    assert "3/3" in result.stderr  # the progress bar
    again = helpline("kb", "import", str(kb / "reset-password.md"), config=config)
    assert "0 new, 1 updated" in again.stdout
    (kb / "broken.md").write_text("no title here\n")
    broken = helpline("kb", "import", str(kb / "broken.md"), config=config, check=False)
    assert broken.returncode == 2 and "no title" in broken.stderr


def test_commands_but_serve_start_without_the_web_stack() -> None:
    """aiohttp, the chat libraries and the routes are imported by `serve` alone, the mail
    parser by `parse-email`: the other commands (agent, token, report, migrate...) start in
    about half the time."""
    heavy = ("aiohttp", "telegram", "slack_bolt", "jinja2", "gateway.app", "adapters.email_parse")
    code = f"import sys, gateway.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("kind", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_serve_runs_on_the_configured_event_loop(kind: str, module: str) -> None:
    loop = new_event_loop(kind)
    try:
        assert type(loop).__module__.split(".")[0] == module
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


async def test_serve_settles_the_garbage_collector_once_started() -> None:
    before = gc.get_threshold()
    try:
        await settle_garbage_collector()
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the scans
        assert gc.get_threshold()[0] == 20_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_serve_demo_and_api_end_to_end(config: Path) -> None:
    """`helpline demo` seeds data; `helpline serve` answers on its port with it."""
    demo = helpline("demo", "--tickets", "60", config=config)
    assert "60 new tickets" in demo.stdout
    assert "0 new tickets" in helpline("demo", "--tickets", "60", config=config).stdout
    token = (
        helpline("token", "create", "--name", "t", "--role", "admin", config=config)
        .stdout.strip()
        .splitlines()[-1]
    )
    port = int(config.read_text().split("port = ")[1].split("\n")[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get(f"{base}/healthz")).status == 200:
                        break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "helpline serve did not come up"
                time.sleep(0.2)
            listing = await (
                await http.get(
                    f"{base}/api/v1/tickets?limit=200", headers={"Authorization": f"Bearer {token}"}
                )
            ).json()
            assert listing["total"] == 60
            statuses = {t["status"] for t in listing["tickets"]}
            assert {"new", "open", "resolved"} <= statuses
            channels = {t["channel"] for t in listing["tickets"]}
            assert {"email", "web", "telegram"} <= channels
            created = await http.post(
                f"{base}/api/v1/messages", json={"email": "new@example.org", "body": "hello"}
            )
            assert (await created.json())["ticket"]["number"] == 61
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


async def test_serve_with_two_workers_shares_the_port(config: Path) -> None:
    import asyncio

    import psutil

    port = int(config.read_text().split("port = ")[1].split("\n")[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get(f"{base}/healthz")).status == 200:
                        break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "helpline serve did not come up"
                await asyncio.sleep(0.2)
            assert len(psutil.Process(proc.pid).children()) == 1  # one forked worker
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{base}/api/v1/messages",
                        json={"email": f"c{i}@example.org", "body": f"problem {i}"},
                    )
                    for i in range(20)
                )
            )
            numbers = sorted([(await r.json())["ticket"]["number"] for r in responses])
            assert numbers == list(range(1, 21))
        worker = psutil.Process(proc.pid).children()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    worker.wait(timeout=15)  # the worker went down with the first process


def test_report_prints_the_kpis(config: Path) -> None:
    helpline("demo", "--tickets", "40", config=config)
    table = helpline("report", config=config).stdout
    assert "First response" in table and "CSAT" in table
    import json as json_module

    data = json_module.loads(helpline("report", "--format", "json", config=config).stdout)
    # the demo answers most of its 40 tickets within the default 30-day period
    assert 0 < data["first_response"]["count"] <= 40
    assert data["first_response"]["p50"] <= data["first_response"]["p90"]


def test_rules_check_names_the_rule_and_field(tmp_path: Path) -> None:
    good = tmp_path / "rules.toml"
    good.write_text(
        '[[rules]]\nname = "refunds"\nwhen = { keywords = ["refund"] }\n'
        'then = { team = "billing", assign = "least_loaded" }\n'
        '[[sla.policies]]\nname = "std"\nfirst_response_minutes = 60\nresolution_minutes = 600\n'
    )
    ok = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rules", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 rule(s), 1 SLA policy(ies): OK" in ok.stdout
    assert "rule 'refunds': 1 condition(s) -> team=billing" in ok.stdout
    for text, message in [
        ('[[rules]]\nname = "x"\nwhen = { regex = "(" }\n', "rules[0] 'x': when.regex"),
        ('[[rules]]\nname = "x"\nthen = { colour = "red" }\n', "rules[0] 'x': unknown action"),
        (
            '[[rules]]\nname = "x"\nwhen = { time = { tz = "Europe/Berln", days = ["sat"] } }\n',
            "unknown time zone 'Europe/Berln'",
        ),
        (
            '[[sla.policies]]\nname = "p"\nfirst_response_minutes = 1\nresolution_minutes = 2\n'
            'calendar = "office"\n',
            "sla.policies[0].calendar: unknown calendar 'office'",
        ),
        ("[[rules]\n", "invalid TOML"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "rules", "check", str(bad)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1 and message in result.stderr, result.stderr


def test_agent_set_checks_what_assignment_reads(config: Path) -> None:
    helpline("agent", "add", "--name", "Eve", "--email", "eve@support.test", config=config)
    out = helpline(
        "agent",
        "set",
        "--email",
        "eve@support.test",
        "--region",
        "EU",
        "--timezone",
        "Europe/Berlin",
        "--days",
        "Mon,tue,wed",
        "--hours",
        "08:00-16:30",
        "--away",
        config=config,
    ).stdout
    assert "region = 'eu'" in out and "working_days = 'mon,tue,wed'" in out and "away = True" in out
    for args, message in [
        (["--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        (["--hours", "9-5"], "is not HH:MM-HH:MM"),
        (["--days", "mon,funday"], "'fun' is not a weekday"),
        ([], "nothing to change"),
    ]:
        result = helpline(
            "agent", "set", "--email", "eve@support.test", *args, config=config, check=False
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr
    missing = helpline(
        "agent", "set", "--email", "nobody@x.org", "--back", config=config, check=False
    )
    assert missing.returncode == 2 and "no agent with email" in missing.stderr
