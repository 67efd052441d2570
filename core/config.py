"""TOML -> frozen, typed settings. An unknown key or a bad value is an error naming the key.

Secrets are never written in the file: a setting ending in ``_env`` names the environment
variable that holds the secret.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.assign import STRATEGIES, zone
from core.errors import ConfigError
from core.proactive_rules import ProactiveRule, parse_proactive
from core.routing import RuleSet, load_rules_file, parse_rules
from core.sla import SlaSettings, parse_sla
from core.tables import build


@dataclass(frozen=True)
class ServiceSettings:
    name: str = "Helpline"
    host: str = "127.0.0.1"
    port: int = 8080
    # The address customers reach us at; status links are built on it.
    public_url: str = "http://127.0.0.1:8080"
    data_dir: str = "helpline-data"
    # Environment variable holding the key that signs portal links and CSRF tokens. When it is
    # unset, a random key is generated once and kept in data_dir/secret.key.
    secret_key_env: str = "HELPLINE_SECRET_KEY"
    log_level: str = "info"
    language: str = "en"
    # Serving processes sharing the port; more than one uses more cores (the first process
    # alone polls IMAP and Telegram)
    workers: int = 1
    # PostgreSQL, several processes: how often a follower asks for the lead (and the leader
    # checks it still holds it); a dead leader is replaced within about this time
    leader_retry_seconds: float = 5.0
    # The event loop `serve` runs on: "uvloop" (libuv, less CPU per request) or "asyncio"
    event_loop: str = "uvloop"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///helpline-data/helpline.db"
    # SQLite: fsync every commit (synchronous=FULL). Off trades the last commits on power loss
    # for speed.
    durable: bool = True
    pool_size: int = 10


@dataclass(frozen=True)
class IntakeSettings:
    max_request_bytes: int = 26_214_400
    max_attachment_bytes: int = 10_485_760
    max_attachments: int = 10
    max_subject_chars: int = 300
    max_body_chars: int = 100_000
    # Web form and JSON intake: accepted submissions per client IP per minute.
    rate_limit_per_minute: int = 20
    # ...and per sender (the normalized email), wherever they submit from; more are answered
    # 429 and kept in the quarantine, never lost.
    rate_limit_per_identity_per_minute: int = 10
    # A customer writing to a resolved ticket reopens it within this many days; later, a new
    # ticket linked to the old one is opened.
    reopen_window_days: int = 14
    # The team that gets tickets no inbox or rule sends elsewhere ("" = the general queue).
    default_team: str = ""


@dataclass(frozen=True)
class OutboxSettings:
    # With the backoff below, 100 attempts span about a day: a platform or relay outage of
    # hours (maintenance) delays messages, it does not kill them.
    max_attempts: int = 100
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 900.0
    # How long a dispatcher owns a row it is sending before another may take it.
    lease_seconds: float = 60.0
    batch_size: int = 50
    poll_seconds: float = 1.0
    # Automatic messages (acknowledgements, surveys) to one address per hour; more are skipped
    # and the ticket's history says so. Stops mail loops with other robots.
    max_automatic_per_address_per_hour: int = 5


@dataclass(frozen=True)
class SmtpServerSettings:
    """Inbound SMTP: we accept mail for our support addresses on this address and port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2525
    max_message_bytes: int = 26_214_400
    # STARTTLS is offered when both files are set
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class SmtpRelaySettings:
    """Outbound mail goes through this relay; no host means mail stays queued in the outbox."""

    host: str = ""
    port: int = 587
    starttls: bool = True
    username: str = ""
    password_env: str = "HELPLINE_SMTP_PASSWORD"
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class ImapMailboxSettings:
    """A mailbox polled over IMAP (IDLE when the server has it)."""

    name: str
    host: str
    username: str
    port: int = 993
    ssl: bool = True
    starttls: bool = False
    password_env: str = "HELPLINE_IMAP_PASSWORD"
    folder: str = "INBOX"
    # After a message is committed: moved here, or (empty) flagged \Seen in place
    processed_folder: str = ""
    poll_seconds: float = 60.0
    idle: bool = True
    # The support address this mailbox serves (decides the inbox/team)
    address: str = ""


@dataclass(frozen=True)
class EmailSettings:
    # Addresses we accept mail for (besides the inboxes' addresses); others get 550.
    addresses: tuple[str, ...] = ("support@example.com",)
    # The sender of our mail; its domain names our Message-IDs.
    from_address: str = "support@example.com"
    from_name: str = "Helpline Support"
    smtp_server: SmtpServerSettings = field(default_factory=SmtpServerSettings)
    relay: SmtpRelaySettings = field(default_factory=SmtpRelaySettings)
    imap: tuple[ImapMailboxSettings, ...] = ()


@dataclass(frozen=True)
class TelegramSettings:
    """A Telegram bot customers write to; a group of agents can be the team channel."""

    enabled: bool = False
    token_env: str = "HELPLINE_TELEGRAM_TOKEN"
    # webhook: Telegram posts to {service.public_url}/telegram/webhook; polling: we ask it
    mode: str = "webhook"
    webhook_secret_env: str = "HELPLINE_TELEGRAM_WEBHOOK_SECRET"
    # The Bot API's address; empty means Telegram's own (tests point it at a local fake)
    api_url: str = ""
    # A group chat id where agents get ticket cards (when Slack is not the team channel)
    team_chat: str = ""


@dataclass(frozen=True)
class SlackSettings:
    """A Slack app: customers in its DMs or support channels; agents in a team channel."""

    enabled: bool = False
    bot_token_env: str = "HELPLINE_SLACK_BOT_TOKEN"
    signing_secret_env: str = "HELPLINE_SLACK_SIGNING_SECRET"
    # http: Slack posts to {service.public_url}/slack/events; socket: Socket Mode (no URL)
    mode: str = "http"
    app_token_env: str = "HELPLINE_SLACK_APP_TOKEN"
    # Channels (e.g. Slack Connect) where customers write; a DM with the app always counts
    support_channels: tuple[str, ...] = ()
    # The channel id where agents get ticket cards and answer in their threads
    team_channel: str = ""
    # The Web API's address; empty means Slack's own (tests point it at a local fake)
    api_url: str = ""


@dataclass(frozen=True)
class BotSettings:
    kb_suggestions: int = 3
    csat: bool = True
    nps: bool = False
    # A rating click later than this after resolution gets a polite "closed" answer
    survey_valid_days: int = 7
    # Who gets escalation pings: "slack:<user id>", "telegram:<chat id>" or "email:<address>"
    supervisors: tuple[str, ...] = ()


@dataclass(frozen=True)
class InboxSettings:
    """A support address (email) or a named intake point, mapped to a team."""

    name: str
    address: str = ""
    team: str = ""


@dataclass(frozen=True)
class RoutingSettings:
    # A TOML file of more [[rules]], evaluated after the ones in this file; re-read on SIGHUP
    rules_file: str = ""


@dataclass(frozen=True)
class SchedulerSettings:
    """Periodic jobs, run by the leading process (see docs/sla.md)."""

    enabled: bool = True
    sla_sweep_seconds: float = 60.0  # how often warnings and breaches are looked for
    proactive_minutes: float = 15.0  # how often proactive rules run
    digest_time: str = "08:00"  # supervisors' daily digest, "HH:MM" in digest_timezone; "" = off
    digest_timezone: str = "UTC"

    @property
    def digest_at(self) -> tuple[int, int]:
        """(hour, minute) of ``digest_time``; ValueError when it is not HH:MM."""
        hour, sep, minute = self.digest_time.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and len(minute) == 2):
            raise ValueError(self.digest_time)
        if int(hour) > 23 or int(minute) > 59:
            raise ValueError(self.digest_time)
        return int(hour), int(minute)


@dataclass(frozen=True)
class Settings:
    service: ServiceSettings = field(default_factory=ServiceSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    slack: SlackSettings = field(default_factory=SlackSettings)
    bots: BotSettings = field(default_factory=BotSettings)
    inboxes: tuple[InboxSettings, ...] = ()
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    # parsed by their own modules: [[rules]] (core.routing), [sla] (core.sla), [[proactive]]
    rules: RuleSet = field(default_factory=RuleSet)
    sla: SlaSettings = field(default_factory=SlaSettings)
    proactive: tuple[ProactiveRule, ...] = ()
    source: str = ""

    @property
    def data_path(self) -> Path:
        return Path(self.service.data_dir)

    def secret(self, env_name: str) -> str | None:
        return os.environ.get(env_name) or None


def load_settings(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Read and validate a TOML file; HELPLINE_DATABASE_URL overrides [database].url."""
    env = dict(os.environ if env is None else env)
    table: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                table = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    settings = parse_settings(table, Path(path).parent if path is not None else None)
    if url := env.get("HELPLINE_DATABASE_URL"):
        settings = dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, url=url)
        )
    return dataclasses.replace(settings, source=str(path or ""))


def parse_settings(table: dict[str, Any], base: Path | None = None) -> Settings:
    """``base``: the directory relative file names (``routing.rules_file``) are read from."""
    table = {k: v for k, v in table.items()}
    table.pop("source", None)
    rules, sla = table.pop("rules", []), table.pop("sla", {})
    proactive = parse_proactive({"proactive": table.pop("proactive", [])})
    settings = build(Settings, table, "")
    _check(settings)
    return dataclasses.replace(
        settings,
        rules=management_rules(settings, rules, base),
        sla=parse_sla(sla, reassign_strategies=STRATEGIES),
        proactive=proactive,
    )


def management_rules(settings: Settings, rules: Any, base: Path | None) -> RuleSet:
    """The config file's [[rules]], then the rules file's (``routing.rules_file``)."""
    found = parse_rules({"rules": rules})
    if settings.routing.rules_file:
        path = Path(settings.routing.rules_file)
        if base is not None and not path.is_absolute():
            path = base / path
        from_file = load_rules_file(path)
        names = {rule.name for rule in found}
        for rule in from_file:
            if rule.name in names:
                raise ConfigError(f"{path}: rule {rule.name!r} is also defined in the config file")
        found = RuleSet((*found, *from_file))
    return found


def _check(settings: Settings) -> None:
    url = settings.database.url
    if not url.startswith(("sqlite", "postgresql")):
        raise ConfigError(f"database.url: unsupported database {url!r} (sqlite or postgresql)")
    if not settings.service.public_url.startswith(("http://", "https://")):
        raise ConfigError("service.public_url: must start with http:// or https://")
    if not 0 < settings.service.port < 65536:
        raise ConfigError("service.port: must be between 1 and 65535")
    if settings.service.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError("service.event_loop: must be uvloop or asyncio")
    if not settings.service.leader_retry_seconds > 0:
        raise ConfigError("service.leader_retry_seconds: must be more than 0")
    email = settings.email
    addresses = [("from_address", email.from_address)]
    addresses += [(f"addresses[{i}]", a) for i, a in enumerate(email.addresses)]
    for key, value in addresses:
        if "@" not in value:
            raise ConfigError(f"email.{key}: {value!r} is not an email address")
    if settings.telegram.mode not in ("webhook", "polling"):
        raise ConfigError("telegram.mode: must be webhook or polling")
    if settings.slack.mode not in ("http", "socket"):
        raise ConfigError("slack.mode: must be http or socket")
    for i, who in enumerate(settings.bots.supervisors):
        kind, _, address = who.partition(":")
        if kind not in ("slack", "telegram", "email") or not address:
            raise ConfigError(
                f"bots.supervisors[{i}]: {who!r} is not slack:<id>, "
                "telegram:<id> or email:<address>"
            )
    if not 1 <= settings.bots.kb_suggestions <= 10:
        raise ConfigError("bots.kb_suggestions: must be between 1 and 10")
    mailboxes = [m.name for m in settings.email.imap]
    if len(mailboxes) != len(set(mailboxes)):
        raise ConfigError("email.imap: two mailboxes have the same name")
    names = [inbox.name for inbox in settings.inboxes]
    if len(names) != len(set(names)):
        raise ConfigError("inboxes: two inboxes have the same name")
    scheduler = settings.scheduler
    if scheduler.sla_sweep_seconds < 1 or scheduler.proactive_minutes < 1:
        raise ConfigError("scheduler: sla_sweep_seconds and proactive_minutes must be at least 1")
    if scheduler.digest_time:
        try:
            scheduler.digest_at  # noqa: B018 (validates)
        except ValueError:
            raise ConfigError(
                f"scheduler.digest_time: {scheduler.digest_time!r} is not HH:MM"
            ) from None
    try:
        zone(scheduler.digest_timezone)
    except ValueError:
        raise ConfigError(
            f"scheduler.digest_timezone: unknown time zone {scheduler.digest_timezone!r}"
        ) from None
    for key in ("max_attempts", "batch_size"):
        if getattr(settings.outbox, key) < 1:
            raise ConfigError(f"outbox.{key}: must be at least 1")
