"""`helpline serve|migrate|agent|token|kb|demo`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import getpass
import json
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from core import accounts, audit, kb
from core.assign import STRATEGIES
from core.config import Settings, load_settings
from core.errors import ConfigError, HelplineError
from core.persistence.database import Database, open_database
from core.persistence.migrate import upgrade
from core.ports import utc_now
from core.routing import parse_rules
from core.sla import parse_sla
from gateway import report_cli

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_CONFIG = "config.example.toml"


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_settings(path)


def _database(settings: Settings) -> Database:
    return open_database(settings.database.url, durable=settings.database.durable)


def cli_actor() -> str:
    """Who runs the command, for the audit log: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"{audit.CLI}:{user}"


def _migrated(settings: Settings) -> Database:
    """The database, brought up to date first: every command may be the first one run."""
    db = _database(settings)
    upgrade(db)
    return db


async def settle_garbage_collector(_app: web.Application | None = None) -> None:
    """Once serving: what start-up built (modules, templates, the database engine) is frozen
    out of the collector's scans, and the youngest generation is collected every 20,000 net
    allocations instead of 700. A request's objects die by reference counting; measured at
    ~950 intakes/s: 147 collections took 0.3-0.4 s, ~5% of the CPU, and none at this threshold
    (cycles are still collected, only later)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        try:
            import uvloop  # a dependency wherever it builds (not on Windows)
        except ImportError:
            raise HelplineError(
                'service.event_loop: uvloop is not installed here; set event_loop = "asyncio"'
            ) from None
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def cmd_serve(args: argparse.Namespace) -> int:
    # the web application (aiohttp, the chat libraries, every route) is imported by the
    # command that serves it, as the mail parser is by parse-email: the others start in
    # about half the time
    from aiohttp import web

    from gateway.app import create_app, load_secret

    settings = _settings(args)
    logging.basicConfig(
        level=settings.service.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.service.log_level != "debug":
        # aiosmtpd logs every SMTP command at INFO: a line per command is noise, not news
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        # APScheduler logs two lines per job run (every 30 s); our jobs log what they did
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    port = args.port if args.port is not None else settings.service.port
    host = args.host or settings.service.host
    workers = args.workers if args.workers is not None else settings.service.workers
    if workers < 1:
        raise HelplineError("--workers must be at least 1")
    db = _migrated(settings)  # once, before any worker starts
    asyncio.run(db.close())  # no open database connection may cross the fork below
    load_secret(settings)  # likewise: created once, then read by every worker
    children = _fork_workers(workers - 1)
    leader = children is not None  # the first process leads; forked workers only serve
    app = create_app(settings, migrate=False, leader=leader, reuse_port=workers > 1)
    if leader:
        print(
            f"helpline serving on http://{host}:{port} with {workers} worker(s) (database: "
            f"{settings.database.url.split('://', 1)[0]})",
            flush=True,
        )
    app.on_startup.append(settle_garbage_collector)  # last: after the app's own start-up
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            print=None,
            access_log=None,
            reuse_port=workers > 1,
            loop=new_event_loop(settings.service.event_loop),
        )
    finally:
        for pid in children or ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children or ():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return 0


def _fork_workers(count: int) -> list[int] | None:
    """Start ``count`` more serving processes sharing the port (SO_REUSEPORT): the GIL limits
    one process to one core, and the database still serializes only the writes.
    Returns the children's pids in the first process, None in a forked worker."""
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            return None
        children.append(pid)
    return children


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _database(settings)
    upgrade(db, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


def cmd_agent_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _migrated(settings)
    skills = tuple(s.strip() for s in (args.skills or "").split(",") if s.strip())
    now, actor = utc_now(), cli_actor()

    def add(c: Connection) -> int:
        agent_id = accounts.add_agent(
            c,
            name=args.name,
            email=args.email,
            role=accounts.parse_role(args.role),
            now=now,
            team=args.team,
            skills=skills,
            max_open=args.max_open,
            slack_user_id=args.slack,
            telegram_user_id=args.telegram,
        )
        details = {"name": args.name, "role": args.role, "team": args.team}
        audit.record_admin_action(
            c, actor=actor, action="agent.add", target=args.email, details=details, now=now
        )
        return agent_id

    agent_id = db.run_sync(add)
    print(f"agent {agent_id} added: {args.name} <{args.email}> ({args.role})")
    return 0


def cmd_agent_link(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _migrated(settings)
    links = [("slack", args.slack), ("telegram", args.telegram)]
    if not any(user for _, user in links):
        raise HelplineError("give --slack USER_ID and/or --telegram USER_ID")
    now, actor = utc_now(), cli_actor()

    def link(c: Connection, channel: str, user: str) -> None:
        accounts.link_chat_id(c, args.email, channel, user)
        audit.record_admin_action(
            c,
            actor=actor,
            action="agent.link",
            target=args.email,
            details={channel: user},
            now=now,
        )

    for channel, user in links:
        if user:
            db.run_sync(functools.partial(link, channel=channel, user=user))
            print(f"{args.email} is {channel} user {user}")
    return 0


def cmd_agent_password(args: argparse.Namespace) -> int:
    """Set a dashboard password: from stdin when piped, else typed twice (never an argument,
    which would land in the shell history and the process list)."""
    if sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise HelplineError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    db = _migrated(_settings(args))
    now, actor = utc_now(), cli_actor()

    def change(c: Connection) -> None:
        accounts.set_password(c, args.email, password)
        # the record says that it changed, never the password or its hash
        audit.record_admin_action(
            c, actor=actor, action="agent.password", target=args.email, now=now
        )

    db.run_sync(change)
    print(f"password set for {args.email}; their earlier dashboard sessions are signed out")
    return 0


def cmd_agent_set(args: argparse.Namespace) -> int:
    """What assignment reads of an agent: region, shift, away, skills, capacity, team."""
    away = {"away": True, "back": False}.get(args.availability or "")
    changes = {
        "region": args.region,
        "timezone": args.timezone,
        "working_days": args.days,
        "working_hours": args.hours,
        "skills": args.skills,
        "max_open_tickets": args.max_open,
        "team": args.team,
        "away": away,
    }
    if all(value is None for value in changes.values()):
        raise HelplineError("nothing to change: give at least one option (see --help)")
    db = _migrated(_settings(args))
    now, actor = utc_now(), cli_actor()

    def update(c: Connection) -> dict[str, object]:
        done = accounts.update_agent(c, args.email, **changes)
        if done:
            audit.record_admin_action(
                c,
                actor=actor,
                action="agent.set",
                target=args.email,
                details={k: v for k, v in changes.items() if v is not None},
                now=now,
            )
        return done

    done = db.run_sync(update)
    print(f"{args.email}: " + ", ".join(f"{k} = {v!r}" for k, v in done.items()))
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    """Validate a rules file (or a config file's [[rules]] and [sla]); exit 1 on an error."""
    try:
        with open(args.file, "rb") as fh:
            table = tomllib.load(fh)
        rules = parse_rules(table)
        sla = parse_sla(table.get("sla", {}), reassign_strategies=STRATEGIES)
    except FileNotFoundError:
        print(f"helpline: error: file not found: {args.file}", file=sys.stderr)
        return 1
    except tomllib.TOMLDecodeError as err:
        print(f"helpline: error: {args.file}: invalid TOML: {err}", file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"helpline: error: {args.file}: {err}", file=sys.stderr)
        return 1
    for rule in rules:
        then = ", ".join(f"{k}={v}" for k, v in vars(rule.actions).items() if v not in (None, ()))
        stop = "" if rule.stop else " (continues)"
        print(f"rule {rule.name!r}{stop}: {len(rule.conditions)} condition(s) -> {then or '-'}")
    for policy in sla.policies:
        print(
            f"SLA policy {policy.name!r}: first response {policy.first_response_minutes:g} min, "
            f"resolution {policy.resolution_minutes:g} min ({policy.calendar})"
        )
    print(f"{args.file}: {len(rules)} rule(s), {len(sla.policies)} SLA policy(ies): OK")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _migrated(settings)
    token = db.run_sync(
        lambda c: accounts.create_token(
            c,
            name=args.name,
            role=accounts.parse_role(args.role),
            now=utc_now(),
            agent_email=args.agent,
            actor=cli_actor(),
        )
    )
    print(f"token {args.name!r} ({args.role}) created; it is shown only once:")
    print(token)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    db = _migrated(_settings(args))
    db.run_sync(lambda c: accounts.revoke_token(c, args.id, utc_now(), actor=cli_actor()))
    print(f"token {args.id} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    db = _migrated(_settings(args))
    for row in db.run_sync(accounts.list_tokens):
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        agent = f" ({row.agent_email})" if row.agent_email else ""
        print(f"{row.id}\t{row.name}\t{row.role}{agent}\t{state}")
    return 0


def progress(done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_kb_import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = Path(args.path)
    if not path.exists():
        raise HelplineError(f"{path}: no such file or folder")
    articles = kb.read_articles(path)
    db = _migrated(settings)
    created = 0
    now = utc_now()
    for i, article in enumerate(articles, start=1):
        created += db.run_sync(functools.partial(kb.save_article, article=article, now=now))
        progress(i, len(articles))
    print(f"{len(articles)} article(s) imported: {created} new, {len(articles) - created} updated")
    return 0


def cmd_parse_email(args: argparse.Namespace) -> int:
    """One JSON object per file: exactly what the service makes of the mail."""
    from adapters.email_parse import UnparseableEmail, parse_email, to_json

    failed = 0
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
            result = {"file": name, **to_json(parse_email(raw))}
        except (OSError, UnparseableEmail) as err:
            failed += 1
            result = {"file": name, "error": str(err)}
        print(json.dumps(result, ensure_ascii=False))
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import seed

    settings = _settings(args)
    _migrated(settings)
    summary = asyncio.run(seed(settings, tickets=args.tickets, seed=args.seed))
    print(summary)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helpline", description="Omnichannel support helpdesk")
    p.add_argument("--config", help=f"TOML settings file (default: ./{DEFAULT_CONFIG} if present)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (applies migrations first)")
    serve.add_argument("--config", default=argparse.SUPPRESS)
    serve.add_argument("--port", type=int)
    serve.add_argument("--host")
    serve.add_argument("--workers", type=int, help="serving processes (default: service.workers)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--config", default=argparse.SUPPRESS)
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    agent = sub.add_parser("agent", help="manage agents").add_subparsers(
        dest="action", required=True
    )
    add = agent.add_parser("add", help="add an agent")
    add.add_argument("--config", default=argparse.SUPPRESS)
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--role", default="agent", choices=[r.value for r in accounts.Role])
    add.add_argument("--team")
    add.add_argument("--skills", help="comma-separated")
    add.add_argument("--max-open", type=int, default=25)
    add.add_argument("--slack", help="the agent's Slack user id (U...)")
    add.add_argument("--telegram", help="the agent's Telegram user id")
    add.set_defaults(func=cmd_agent_add)

    link = agent.add_parser("link", help="link an agent to their Slack/Telegram user id")
    link.add_argument("--config", default=argparse.SUPPRESS)
    link.add_argument("--email", required=True)
    link.add_argument("--slack")
    link.add_argument("--telegram")
    link.set_defaults(func=cmd_agent_link)

    password = agent.add_parser("password", help="set an agent's dashboard password")
    password.add_argument("--config", default=argparse.SUPPRESS)
    password.add_argument("--email", required=True)
    password.set_defaults(func=cmd_agent_password)

    change = agent.add_parser("set", help="set an agent's region, shift, availability, skills")
    change.add_argument("--config", default=argparse.SUPPRESS)
    change.add_argument("--email", required=True)
    change.add_argument("--region", help="region code, e.g. eu, us, apac")
    change.add_argument("--timezone", help="IANA time zone of the working hours")
    change.add_argument("--days", help="working days, e.g. mon,tue,wed,thu,fri ('' = every day)")
    change.add_argument("--hours", help="working hours, e.g. 09:00-17:00 ('' = all day)")
    change.add_argument("--skills", help="comma-separated, replaces the current skills")
    change.add_argument("--max-open", type=int, help="most open tickets at once")
    change.add_argument("--team")
    change.add_argument(
        "--away", dest="availability", action="store_const", const="away", help="not assignable"
    )
    change.add_argument("--back", dest="availability", action="store_const", const="back")
    change.set_defaults(func=cmd_agent_set)

    rules = sub.add_parser("rules", help="routing rules").add_subparsers(
        dest="action", required=True
    )
    check = rules.add_parser("check", help="validate a rules (or config) file; exit 1 on error")
    check.add_argument("file")
    check.set_defaults(func=cmd_rules_check)

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="create a bearer token (printed on the last line)")
    create.add_argument("--config", default=argparse.SUPPRESS)
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in accounts.Role])
    create.add_argument("--agent", help="email of the agent the token acts as")
    create.set_defaults(func=cmd_token_create)
    revoke = token.add_parser("revoke", help="revoke a token by id (see token list)")
    revoke.add_argument("--config", default=argparse.SUPPRESS)
    revoke.add_argument("--id", type=int, required=True)
    revoke.set_defaults(func=cmd_token_revoke)
    listing = token.add_parser("list", help="list tokens (ids, names, roles; never the values)")
    listing.add_argument("--config", default=argparse.SUPPRESS)
    listing.set_defaults(func=cmd_token_list)

    kb_cmd = sub.add_parser("kb", help="knowledge base").add_subparsers(
        dest="action", required=True
    )
    kb_import = kb_cmd.add_parser("import", help="import Markdown files or CSV")
    kb_import.add_argument("--config", default=argparse.SUPPRESS)
    kb_import.add_argument("path")
    kb_import.set_defaults(func=cmd_kb_import)

    parse = sub.add_parser("parse-email", help="show how mail files are parsed (JSON lines)")
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.set_defaults(func=cmd_parse_email)

    demo = sub.add_parser("demo", help="seed a realistic demo data set")
    demo.add_argument("--config", default=argparse.SUPPRESS)
    demo.add_argument("--tickets", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    report_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HelplineError as err:
        print(f"helpline: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
