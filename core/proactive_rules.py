"""Proactive rules as configured (``[[proactive]]``) and the pure planning of what they do.

Three kinds (see docs/proactive.md): ``pending_reminder``, ``no_contact`` and
``attribute_date``. ``plan_*`` take snapshots and ``now`` and say what to do; the unit of work
that applies them is ``core.proactive``. Kept apart from it so the settings can parse rules
without importing the machinery that runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from string import Template
from typing import Any

from core.errors import ConfigError
from core.routing import CustomerAttr, Facts, RoutingInput, RuleError, customer_conditions

SCOPE = "proactive"  # the receipts' scope (core.once)
ACTOR = "bot"  # history actor and message author of what the rules do
TASK, TICKET = "task", "ticket"
PAGE = 500  # customers per query, and keys per IN (...) list
MAX_DAYS = 3650
MAX_NAME = 100

# Defaults in English (core cannot use bots/templates.py); a rule's ``message`` overrides them
DEFAULT_REMINDER = (
    "Hello,\n\nyour ticket #$number ($subject) is waiting for your answer. "
    "Just reply to this message and we will carry on.\n\nStatus: $status_url\n"
)
DEFAULT_REMINDER_CLOSING = (
    "Hello,\n\nyour ticket #$number ($subject) is waiting for your answer. "
    "Just reply to this message and we will carry on; if we do not hear from you within "
    "$days days, we will consider it solved.\n\nStatus: $status_url\n"
)
DEFAULT_REMINDER_SUBJECT = "[#$number] Re: $subject"
DEFAULT_NO_CONTACT_SUBJECT = "Check in with $customer: no contact for $days days"
DEFAULT_DATE_SUBJECT = "$customer: $attribute on $date (in $days days)"

MESSAGE_PLACEHOLDERS = frozenset({"name", "number", "subject", "status_url", "days"})
NO_CONTACT_PLACEHOLDERS = frozenset({"customer", "days"})
DATE_PLACEHOLDERS = frozenset({"customer", "attribute", "date", "days"})

# Report actions
REMINDED, RESOLVED, DEFERRED, NOT_SENT = "reminded", "resolved", "deferred", "not_sent"
TASK_CREATED, NO_IDENTITY, BAD_DATE = "task_created", "no_identity", "bad_date"


# ---- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingReminder:
    name: str
    after_days: int
    close_after_days: int = 0  # 0: remind only, never resolve
    message: str = ""  # "" = the default text
    subject: str = DEFAULT_REMINDER_SUBJECT

    @property
    def text(self) -> str:
        if self.message:
            return self.message
        return DEFAULT_REMINDER_CLOSING if self.close_after_days else DEFAULT_REMINDER


@dataclass(frozen=True, slots=True)
class NoContact:
    name: str
    after_days: int
    customer: tuple[CustomerAttr, ...]
    owner_attribute: str = "account_owner"
    subject: str = DEFAULT_NO_CONTACT_SUBJECT


@dataclass(frozen=True, slots=True)
class AttributeDate:
    name: str
    attribute: str
    days_before: int
    owner_attribute: str = "account_owner"
    customer: tuple[CustomerAttr, ...] = ()
    subject: str = DEFAULT_DATE_SUBJECT


ProactiveRule = PendingReminder | NoContact | AttributeDate


# ---- parsing -------------------------------------------------------------------------------

_COMMON = {"name", "kind", "description"}
_KEYS: dict[str, frozenset[str]] = {
    "pending_reminder": frozenset(
        _COMMON | {"after_days", "close_after_days", "message", "subject"}
    ),
    "no_contact": frozenset(_COMMON | {"after_days", "customer", "owner_attribute", "subject"}),
    "attribute_date": frozenset(
        _COMMON | {"attribute", "days_before", "customer", "owner_attribute", "subject"}
    ),
}


def parse_proactive(table: Mapping[str, Any]) -> tuple[ProactiveRule, ...]:
    """``[[proactive]]`` of a TOML document (other keys are ignored, so the main config file
    works) -> rules in file order. ``ConfigError`` names the rule and its field."""
    raw = table.get("proactive", [])
    if not isinstance(raw, list):
        raise ConfigError("proactive: expected an array of tables ([[proactive]])")
    rules: list[ProactiveRule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"proactive[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: name: missing or empty")
        where = f"{where} {name!r}"
        if len(name) > MAX_NAME:
            raise ConfigError(f"{where}: name: longer than {MAX_NAME} characters")
        if name in seen:
            raise ConfigError(f"{where}: name: already used by proactive[{seen[name]}]")
        seen[name] = i
        try:
            rules.append(_rule(name, item))
        except RuleError as err:
            raise ConfigError(f"{where}: {err}") from None
    return tuple(rules)


def _rule(name: str, item: dict[str, Any]) -> ProactiveRule:
    kind = item.get("kind")
    if kind not in _KEYS:
        raise RuleError("kind", f"expected one of {', '.join(_KEYS)}, got {kind!r}")
    unknown = sorted(set(item) - _KEYS[kind])
    if unknown:
        raise RuleError(None, f"unknown key {unknown[0]!r} ({', '.join(sorted(_KEYS[kind]))})")
    if not isinstance(item.get("description", ""), str):
        raise RuleError("description", "expected a string")
    if kind == "pending_reminder":
        return PendingReminder(
            name,
            _days(item, "after_days", required=True),
            _days(item, "close_after_days", minimum=0),
            _template(item, "message", MESSAGE_PLACEHOLDERS, ""),
            _template(item, "subject", MESSAGE_PLACEHOLDERS, DEFAULT_REMINDER_SUBJECT),
        )
    owner = _name(item, "owner_attribute", "account_owner")
    if kind == "no_contact":
        if "customer" not in item:
            raise RuleError("customer", 'missing: which customers to watch, e.g. { tier = "vip" }')
        return NoContact(
            name,
            _days(item, "after_days", required=True),
            customer_tests(item["customer"]),
            owner,
            _template(item, "subject", NO_CONTACT_PLACEHOLDERS, DEFAULT_NO_CONTACT_SUBJECT),
        )
    if "attribute" not in item:
        raise RuleError("attribute", "missing: the customer attribute holding the date")
    return AttributeDate(
        name,
        _name(item, "attribute", ""),
        _days(item, "days_before", required=True),
        owner,
        customer_tests(item["customer"]) if "customer" in item else (),
        _template(item, "subject", DATE_PLACEHOLDERS, DEFAULT_DATE_SUBJECT),
    )


def _days(item: dict[str, Any], key: str, *, required: bool = False, minimum: int = 1) -> int:
    if key not in item:
        if required:
            raise RuleError(key, "missing")
        return 0
    value = item[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleError(key, f"expected a whole number of days, got {value!r}")
    if value < minimum:
        raise RuleError(key, f"must be at least {minimum}")
    if value > MAX_DAYS:
        raise RuleError(key, f"must be at most {MAX_DAYS}")
    return value


def _name(item: dict[str, Any], key: str, default: str) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise RuleError(key, "expected a non-empty string (a customer attribute name)")
    return value.strip()


def _template(item: dict[str, Any], key: str, allowed: frozenset[str], default: str) -> str:
    if key not in item:
        return default
    text = item[key]
    if not isinstance(text, str) or not text.strip():
        raise RuleError(key, "expected a non-empty string")
    for m in Template.pattern.finditer(text):
        name = m.group("named") or m.group("braced")
        if m.group("invalid") is not None:
            raise RuleError(key, f"stray $ at position {m.start()} (write $$ for a dollar sign)")
        if name is not None and name not in allowed:
            known = ", ".join(f"${p}" for p in sorted(allowed))
            raise RuleError(key, f"unknown placeholder ${name} ({known})")
    return text


def customer_tests(table: Any) -> tuple[CustomerAttr, ...]:
    """The attribute tests of routing rules, so both match customers alike."""
    return customer_conditions(table, "customer")


# ---- planning (pure) -----------------------------------------------------------------------

REMIND, RESOLVE = "remind", "resolve"


@dataclass(frozen=True, slots=True)
class PendingTicket:
    """A pending ticket: since when (its latest status change) and, if it has been reminded in
    this pending stretch, when."""

    id: int
    pending_since: datetime
    reminded_at: datetime | None = None


def plan_pending(rule: PendingReminder, ticket: PendingTicket, now: datetime) -> str | None:
    """REMIND, RESOLVE or None (nothing due yet)."""
    if ticket.reminded_at is None:
        due = ticket.pending_since + timedelta(days=rule.after_days)
        return REMIND if now >= due else None
    if not rule.close_after_days:
        return None
    due = ticket.reminded_at + timedelta(days=rule.close_after_days)
    return RESOLVE if now >= due else None


def reminder_key(rule: PendingReminder, ticket_id: int, pending_since: datetime) -> str:
    """One reminder per rule, ticket and pending stretch."""
    return f"{rule.name}:remind:{ticket_id}:{pending_since.astimezone(UTC).isoformat()}"


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """A customer as the task rules see them; ``last_contact``: the latest message (not
    automatic, not a note) from or to them, None if there never was one."""

    id: int
    name: str
    email: str | None
    attributes: Mapping[str, Any]
    created_at: datetime
    last_contact: datetime | None = None

    @property
    def label(self) -> str:
        return self.name or self.email or f"customer {self.id}"


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A task to create: ``key`` makes it happen once; ``detail`` explains it to the agent."""

    rule: str
    customer_id: int
    key: str
    subject: str
    detail: str
    owner: Any  # the owner attribute's value (an agent's email), None when unset


def matches(tests: Sequence[CustomerAttr], attributes: Mapping[str, Any], now: datetime) -> bool:
    if not tests:
        return True
    facts = Facts(RoutingInput(SCOPE, now, customer=attributes))
    return all(test.test(facts) for test in tests)


def plan_no_contact(rule: NoContact, customer: CustomerSnapshot, now: datetime) -> TaskPlan | None:
    if not matches(rule.customer, customer.attributes, now):
        return None
    since = customer.last_contact or customer.created_at
    if now - since < timedelta(days=rule.after_days):
        return None
    silent = (now - since).days
    subject = _fill(rule.subject, customer=customer.label, days=rule.after_days)
    what = "no message from or to them" if customer.last_contact else "no message ever"
    detail = (
        f"{what} since {since:%Y-%m-%d %H:%M} UTC ({silent} days; "
        f"rule {rule.name!r}: {rule.after_days} days)"
    )
    return TaskPlan(
        rule.name,
        customer.id,
        f"{rule.name}:{customer.id}:{since.astimezone(UTC).isoformat()}",
        subject,
        detail,
        customer.attributes.get(rule.owner_attribute),
    )


def attribute_date(value: Any) -> date | None:
    """An ISO date ("2027-01-15"; the date part of an ISO date-time); None if it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) > 10 and text[10] in "T ":
        text = text[:10]
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def plan_attribute_date(
    rule: AttributeDate, customer: CustomerSnapshot, now: datetime
) -> TaskPlan | None:
    """Due from ``days_before`` days ahead of the date until the date itself (UTC days); once
    the date has passed it is too late to remind anyone."""
    when = attribute_date(customer.attributes.get(rule.attribute))
    if when is None or not matches(rule.customer, customer.attributes, now):
        return None
    today = now.astimezone(UTC).date()
    if not when - timedelta(days=rule.days_before) <= today <= when:
        return None
    left = (when - today).days
    subject = _fill(
        rule.subject, customer=customer.label, attribute=rule.attribute, date=when, days=left
    )
    detail = (
        f"{rule.attribute} is {when.isoformat()}, in {left} days "
        f"(rule {rule.name!r}: {rule.days_before} days before)"
    )
    return TaskPlan(
        rule.name,
        customer.id,
        f"{rule.name}:{customer.id}:{when.isoformat()}",
        subject,
        detail,
        customer.attributes.get(rule.owner_attribute),
    )


def _fill(template: str, **values: Any) -> str:
    return Template(template).safe_substitute(values)[:300]
