"""The small error vocabulary every edge maps once (HTTP problem, SMTP code, chat reply)."""

from __future__ import annotations


class HelplineError(Exception):
    """Base of all domain errors; ``str(err)`` is safe to show to the caller."""


class NotFound(HelplineError):
    pass


class Conflict(HelplineError):
    pass


class AlreadyClaimed(Conflict):
    def __init__(self, ticket_number: int, holder: str) -> None:
        super().__init__(f"ticket #{ticket_number} is already claimed by {holder}")
        self.ticket_number = ticket_number
        self.holder = holder


class InvalidTransition(Conflict):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"cannot change a ticket from {current!r} to {target!r}")
        self.current = current
        self.target = target


class InvalidInput(HelplineError):
    """Bad input; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooLarge(InvalidInput):
    pass


class Unauthorized(HelplineError):
    pass


class Forbidden(HelplineError):
    pass


class ChannelUnavailable(HelplineError):
    """A transient delivery failure: retry later (``retry_after`` seconds when the channel says)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChannelRejected(HelplineError):
    """A permanent delivery failure: retrying will not help."""


class ConfigError(HelplineError):
    """A bad setting; the message names the key."""
