"""Checks of what clients send: the form's and the JSON intake's fields, ids in URLs."""

from __future__ import annotations

import re

from core.errors import InvalidInput

# Pragmatic: one @, no spaces, a dot in the domain. Deliverability is the mail server's job.
EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")


def clean_email(value: str) -> str:
    email = value.strip()
    if len(email) > 320 or not EMAIL.match(email):
        raise InvalidInput(f"{value!r} is not a valid email address", "email")
    return email.lower()


def clean_name(value: str) -> str:
    # control characters would corrupt mail headers and pages
    return "".join(ch for ch in value.strip() if ch.isprintable())[:200]


def parse_id(raw: str) -> int | None:
    """An id as sent in a URL: ASCII digits that fit a 64-bit column, else None. (str.isdigit
    alone is not enough: it accepts "²", which int() refuses, and any length, which the
    database refuses.)"""
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return None
