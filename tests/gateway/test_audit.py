"""The audit log of admin actions: every action leaves exactly one entry naming its actor, in
the action's own transaction; only admins read it (GET /api/v1/audit)."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from core import accounts, audit
from core.errors import NotFound
from core.persistence.database import open_database
from core.ports import utc_now
from tests.conftest import Server

MAIL = (
    b"From: Ann Lee <ann@example.org>\r\nTo: support@example.com\r\nSubject: Parcel\r\n"
    b"Message-ID: <parcel-1@example.org>\r\n\r\nStill not here.\r\n"
)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def entries(server: Server) -> list[Any]:
    log = audit.audit_log
    return list(
        await server.helpdesk.db.read(lambda c: c.execute(select(log).order_by(log.c.id)).all())
    )


async def test_token_create_and_revoke_are_recorded_with_the_actor(server: Server) -> None:
    db, now = server.helpdesk.db, utc_now()
    token = await db.write(
        lambda c: accounts.create_token(
            c, name="ci", role=accounts.Role.SUPERVISOR, now=now, actor="cli:root", ip="10.0.0.9"
        )
    )
    [created] = await entries(server)
    assert (created.actor, created.action, created.ip) == ("cli:root", "token.create", "10.0.0.9")
    assert created.details == {"name": "ci", "role": "supervisor", "agent": None}
    assert token not in repr(created)  # recorded by id, never by value
    token_id = int(created.target.removeprefix("token:"))

    await db.write(lambda c: accounts.revoke_token(c, token_id, now, actor="cli:root"))
    # revoking twice fails, and the failed action leaves no entry (one transaction)
    try:
        await db.write(lambda c: accounts.revoke_token(c, token_id, now, actor="cli:root"))
    except NotFound:
        pass
    else:
        raise AssertionError("a revoked token was revoked again")
    actions = [(e.action, e.target, e.actor) for e in await entries(server)]
    assert actions == [
        ("token.create", f"token:{token_id}", "cli:root"),
        ("token.revoke", f"token:{token_id}", "cli:root"),
    ]


async def test_quarantine_actions_are_recorded_and_only_admins_read_the_log(
    server: Server,
) -> None:
    admin, _ = await server.token("admin", name="Ada")
    agent, _ = await server.token("agent")
    supervisor, _ = await server.token("supervisor")
    before = len(await entries(server))  # the fixtures' token.create entries
    entry_id = await server.helpdesk.quarantine("email", "database was read-only", MAIL)
    base = f"{server.base_url}/api/v1"
    async with aiohttp.ClientSession() as http:
        raw = await http.get(f"{base}/quarantine/{entry_id}/raw", headers=auth(admin))
        assert raw.status == 200 and await raw.read() == MAIL
        done = await http.post(f"{base}/quarantine/{entry_id}/reprocess", headers=auth(admin))
        assert done.status == 200
        again = await http.post(f"{base}/quarantine/{entry_id}/reprocess", headers=auth(admin))
        assert again.status == 409  # refused: no entry
        listed = await http.get(f"{base}/quarantine", headers=auth(admin))
        assert listed.status == 200  # reading the list is not an action

        new = (await entries(server))[before:]
        assert [(e.action, e.target) for e in new] == [
            ("quarantine.raw", f"quarantine:{entry_id}"),
            ("quarantine.reprocess", f"quarantine:{entry_id}"),
        ]
        assert {e.actor for e in new} == {f"token:test admin#{new[0].actor.rsplit('#')[1]}"}
        assert {e.ip for e in new} == {"127.0.0.1"}
        assert new[1].details == {"ticket": 1}

        for token, status in [(agent, 403), (supervisor, 403), ("hl_nope", 401)]:
            refused = await http.get(f"{base}/audit", headers=auth(token))
            assert refused.status == status
        assert (await http.get(f"{base}/audit")).status == 401

        page = await (await http.get(f"{base}/audit?limit=2", headers=auth(admin))).json()
        assert page["total"] == before + 2 and page["limit"] == 2
        assert [e["action"] for e in page["entries"]] == ["quarantine.reprocess", "quarantine.raw"]
        rest = await (await http.get(f"{base}/audit?limit=2&offset=2", headers=auth(admin))).json()
        assert [e["action"] for e in rest["entries"]] == ["token.create", "token.create"]
        only = await (
            await http.get(f"{base}/audit?action=quarantine.raw", headers=auth(admin))
        ).json()
        assert [e["target"] for e in only["entries"]] == [f"quarantine:{entry_id}"]
        bad = await http.get(f"{base}/audit?limit=0", headers=auth(admin))
        assert (bad.status, (await bad.json())["field"]) == (400, "limit")


def helpline(config: Path, *args: str, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "HELPLINE_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_admin_commands_each_leave_one_entry(tmp_path: Path) -> None:
    db_path = tmp_path / "helpline.db"
    config = tmp_path / "helpline.toml"
    config.write_text(
        f'[service]\ndata_dir = "{tmp_path}"\n[database]\nurl = "sqlite:///{db_path}"\n'
        "durable = false\n"
    )
    email = "alice@support.test"
    helpline(config, "agent", "add", "--name", "Alice", "--email", email, "--role", "admin")
    helpline(config, "agent", "set", "--email", email, "--region", "eu")
    helpline(config, "agent", "password", "--email", email, stdin="correct horse battery\n")
    helpline(config, "agent", "link", "--email", email, "--slack", "U0ALICE")
    token = helpline(config, "token", "create", "--name", "laptop", "--role", "admin")
    token = token.strip().splitlines()[-1]
    [listed] = helpline(config, "token", "list").splitlines()
    token_id = listed.split("\t")[0]
    assert "laptop" in listed and token not in listed
    helpline(config, "token", "revoke", "--id", token_id)

    db = open_database(f"sqlite:///{db_path}")
    log = audit.audit_log
    rows = db.run_sync(lambda c: c.execute(select(log).order_by(log.c.id)).all())
    assert [(r.action, r.target) for r in rows] == [
        ("agent.add", email),
        ("agent.set", email),
        ("agent.password", email),
        ("agent.link", email),
        ("token.create", f"token:{token_id}"),
        ("token.revoke", f"token:{token_id}"),
    ]
    assert {r.actor for r in rows} == {f"cli:{getpass.getuser()}"}
    assert rows[1].details == {"region": "eu"}
    assert rows[3].details == {"slack": "U0ALICE"}
    # neither the password nor the token (nor their hashes) are in the log
    stored = accounts.hash_token(token)
    text = repr([tuple(r) for r in rows])
    for secret in ("correct horse battery", token, stored, "scrypt$"):
        assert secret not in text
