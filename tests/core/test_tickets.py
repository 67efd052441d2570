"""The ticket lifecycle table."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput, InvalidTransition
from core.tickets import (
    TicketStatus,
    check_transition,
    parse_status,
    status_after_agent_reply,
    status_after_customer_message,
)

S = TicketStatus


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.NEW, S.OPEN),
        (S.NEW, S.PENDING),
        (S.NEW, S.RESOLVED),
        (S.OPEN, S.PENDING),
        (S.OPEN, S.RESOLVED),
        (S.PENDING, S.OPEN),
        (S.PENDING, S.RESOLVED),
        (S.RESOLVED, S.OPEN),
        (S.RESOLVED, S.CLOSED),
    ],
)
def test_allowed_transitions(current: TicketStatus, target: TicketStatus) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.NEW, S.CLOSED),
        (S.OPEN, S.NEW),
        (S.OPEN, S.CLOSED),
        (S.PENDING, S.CLOSED),
        (S.CLOSED, S.OPEN),
        (S.CLOSED, S.RESOLVED),
        (S.RESOLVED, S.PENDING),
    ],
)
def test_refused_transitions_name_both_states(current: TicketStatus, target: TicketStatus) -> None:
    with pytest.raises(InvalidTransition) as err:
        check_transition(current, target)
    assert repr(current.value) in str(err.value) and repr(target.value) in str(err.value)


def test_customer_message_reopens_pending_and_resolved_only() -> None:
    assert status_after_customer_message(S.PENDING) is S.OPEN
    assert status_after_customer_message(S.RESOLVED) is S.OPEN
    assert status_after_customer_message(S.NEW) is None
    assert status_after_customer_message(S.OPEN) is None
    assert status_after_customer_message(S.CLOSED) is None


def test_agent_reply_opens_a_new_ticket() -> None:
    assert status_after_agent_reply(S.NEW) is S.OPEN
    assert status_after_agent_reply(S.PENDING) is None


def test_unknown_status_names_the_choices() -> None:
    with pytest.raises(InvalidInput, match="one of: new, open"):
        parse_status("archived")


def test_links_reject_forged_and_non_ascii_tokens() -> None:
    from core.links import check_action_token, check_portal_token, portal_token

    secret = b"k" * 32
    token = portal_token(secret, 7, 1)
    assert check_portal_token(secret, 7, 1, token)
    assert not check_portal_token(secret, 7, 2, token)  # a bumped version revokes it
    assert not check_portal_token(secret, 8, 1, token)
    assert not check_portal_token(secret, 7, 1, "ünïcode")
    assert not check_action_token(secret, "ünïcode", "csat", 7, 5)


def test_a_portal_token_is_the_documented_hmac() -> None:
    """Links already handed out stay valid: HMAC-SHA256(secret, "portal:<id>:<version>"),
    its first 192 bits in unpadded URL-safe base64 (docs/architecture.md, status links)."""
    import base64
    import hashlib
    import hmac

    from core.links import portal_token

    secret = b"k" * 32
    digest = hmac.new(secret, b"portal:7:1", hashlib.sha256).digest()[:24]
    assert portal_token(secret, 7, 1) == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(portal_token(secret, 7, 1)) == 32
