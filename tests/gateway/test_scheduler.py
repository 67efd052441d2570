"""The periodic jobs in a real `helpline serve` process: an SLA breach that came due while the
service was down fires exactly once after it starts again; SIGHUP reloads the rules, and a bad
rules file leaves the running ones in force."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from tests.gateway.test_cli import free_port

TARGET_SECONDS = 12  # the first-response target: the process is stopped well before it


def write_config(tmp_path: Path, port: int) -> Path:
    data = tmp_path / "data"
    (tmp_path / "rules.toml").write_text(
        '[[rules]]\nname = "invoices"\nwhen = { keywords = ["invoice"] }\n'
        'then = { team = "billing" }\n'
    )
    path = tmp_path / "helpline.toml"
    path.write_text(
        f'[service]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        f'data_dir = "{data}"\nlog_level = "info"\n'
        f'[database]\nurl = "sqlite:///{data / "helpline.db"}"\ndurable = false\n'
        "[email.smtp_server]\nenabled = false\n"
        '[bots]\nsupervisors = ["email:lead@example.com"]\n'
        '[routing]\nrules_file = "rules.toml"\n'
        "[scheduler]\nsla_sweep_seconds = 1\n"
        "[[sla.policies]]\n"
        f'name = "fast"\nfirst_response_minutes = {TARGET_SECONDS / 60}\n'
        "resolution_minutes = 600\nwarn_at = 0\n"
    )
    return path


@contextmanager
def serving(config: Path) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if k != "HELPLINE_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=config.parent,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)


async def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                if (await http.get(f"{base}/healthz")).status == 200:
                    return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, "helpline serve did not come up"
            await asyncio.sleep(0.2)


async def post_message(base: str, body: str, email: str) -> int:
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{base}/api/v1/messages", json={"email": email, "body": body})
        assert response.status == 201, await response.text()
        return int((await response.json())["ticket"]["number"])


def query(config: Path, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(f"sqlite:///{config.parent / 'data' / 'helpline.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def breaches(config: Path) -> list[Any]:
    return query(config, "SELECT ticket_id, data FROM ticket_events WHERE kind = 'sla_breach'")


async def until(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_breach_due_while_down_fires_once_after_restart(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    with serving(config):
        await wait_healthy(base)
        opened = time.monotonic()
        await post_message(base, "The printer is on fire", "ann@example.org")
    assert time.monotonic() - opened < TARGET_SECONDS, "too slow to stop before the due time"
    assert breaches(config) == []  # not due yet when the service stopped
    jobs = {row[0] for row in query(config, "SELECT id FROM apscheduler_jobs")}
    assert {"sla-sweep", "outbox-retries"} <= jobs  # the job store outlives the process

    await asyncio.sleep(max(0.0, TARGET_SECONDS + 0.5 - (time.monotonic() - opened)))
    for _ in range(2):  # the first start fires it; a second start finds nothing left to fire
        with serving(config):
            await wait_healthy(base)
            await until(lambda: len(breaches(config)) >= 1, 15)
            await asyncio.sleep(2.5)  # two more sweeps
    assert len(breaches(config)) == 1
    pings = query(
        config,
        "SELECT address FROM outbox WHERE idempotency_key LIKE 'sla:%:breach:%'",
    )
    assert [row[0] for row in pings] == ["lead@example.com"]


async def test_sighup_reloads_rules_and_refuses_a_bad_file(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    rules = tmp_path / "rules.toml"

    def team_of(number: int) -> str | None:
        rows = query(
            config,
            "SELECT teams.name FROM tickets LEFT JOIN teams ON teams.id = tickets.team_id "
            "WHERE tickets.number = :n",
            n=number,
        )
        return rows[0][0]

    with serving(config) as proc:
        await wait_healthy(base)
        assert team_of(await post_message(base, "invoice 1 is wrong", "a@example.org")) == "billing"

        rules.write_text(
            '[[rules]]\nname = "invoices"\nwhen = { keywords = ["invoice"] }\n'
            'then = { team = "finance" }\n'
        )
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert team_of(await post_message(base, "invoice 2 is wrong", "b@example.org")) == "finance"

        rules.write_text('[[rules]]\nname = "broken"\nwhen = { regex = "(" }\n')
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert team_of(await post_message(base, "invoice 3 is wrong", "c@example.org")) == "finance"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert "SIGHUP: 1 routing rule(s)" in output
    assert "configuration refused, the running rules stay" in output
    assert "rules[0] 'broken': when.regex" in output
