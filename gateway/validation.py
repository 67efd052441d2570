"""Checks of what customers type into the form and the JSON intake."""

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
