"""Sign inbound Slack requests (Events API, slash commands, interactivity) like Slack does.

Scheme (v0): ``X-Slack-Signature = "v0=" + hex(HMAC-SHA256(secret, f"v0:{ts}:{body}"))`` with
``X-Slack-Request-Timestamp = ts``. The body must be sent byte-for-byte as signed, so the
helpers return the exact bytes together with the headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"


def _as_bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


def slack_signature(signing_secret: str, timestamp: int | str, body: str | bytes) -> str:
    """The ``v0=...`` signature for ``body`` sent at ``timestamp`` (unix seconds)."""
    base = b"v0:" + str(timestamp).encode() + b":" + _as_bytes(body)
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def slack_headers(
    signing_secret: str, body: str | bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Signature headers for ``body``; pass an old ``timestamp`` to test replay rejection."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: slack_signature(signing_secret, ts, body),
    }


def signed_json(
    signing_secret: str, payload: dict[str, Any], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers for an Events API delivery (JSON)."""
    body = json.dumps(payload).encode()
    headers = slack_headers(signing_secret, body, timestamp=timestamp)
    return body, {**headers, "Content-Type": "application/json"}


def signed_form(
    signing_secret: str, fields: dict[str, str], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers for a slash command (form fields)."""
    body = urlencode(fields).encode()
    headers = slack_headers(signing_secret, body, timestamp=timestamp)
    return body, {**headers, "Content-Type": "application/x-www-form-urlencoded"}


def signed_interaction(
    signing_secret: str, payload: dict[str, Any], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers for an interactivity callback: form field ``payload`` holding JSON."""
    return signed_form(signing_secret, {"payload": json.dumps(payload)}, timestamp=timestamp)
