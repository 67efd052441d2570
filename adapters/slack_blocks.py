"""Pure Block Kit rendering of a channel-neutral OutboundMessage.

A section with the text (mrkdwn, escaped) and the message's actions as buttons. Slack's limits
shape the details: a section text holds at most 3000 characters, an actions block at most 25
elements, a button label at most 75, and an ``action_id`` must be unique within its block -
a rating question has five "csat" buttons, so repeats get a ``#n`` suffix that
``action_id_of`` strips again when the click comes back.
"""

from __future__ import annotations

from typing import Any

from core.messages import Action, OutboundMessage

SECTION_LIMIT = 3000
BUTTONS_PER_BLOCK = 25
LABEL_LIMIT = 75
STYLES = ("primary", "danger")
SUFFIX = "#"

Block = dict[str, Any]


def escape(text: str) -> str:
    """Slack's escaping for message text: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(message: OutboundMessage) -> list[Block]:
    return [*sections(message.text), *actions(message.actions)]


def sections(text: str) -> list[Block]:
    escaped = escape(text)
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
        for chunk in _chunks(escaped, SECTION_LIMIT)
    ]


def actions(items: tuple[Action, ...]) -> list[Block]:
    seen: dict[str, int] = {}
    buttons = []
    for action in items:
        n = seen.get(action.id, 0)
        seen[action.id] = n + 1
        buttons.append(button(action, action.id if n == 0 else f"{action.id}{SUFFIX}{n}"))
    return [
        {"type": "actions", "elements": buttons[i : i + BUTTONS_PER_BLOCK]}
        for i in range(0, len(buttons), BUTTONS_PER_BLOCK)
    ]


def button(action: Action, action_id: str) -> Block:
    element: Block = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": _label(action.label), "emoji": True},
    }
    if action.value.startswith(("http://", "https://")):
        element["url"] = action.value  # a link button: Slack opens it, the click is only acked
    elif action.value:
        element["value"] = action.value
    if action.style in STYLES:
        element["style"] = action.style
    return element


def action_id_of(rendered: str) -> str:
    """The Action id a clicked button's ``action_id`` stands for."""
    return rendered.split(SUFFIX, 1)[0]


def _label(label: str) -> str:
    label = label.strip() or "…"
    return label if len(label) <= LABEL_LIMIT else label[: LABEL_LIMIT - 1] + "…"


def _chunks(text: str, size: int) -> list[str]:
    """Split at line ends where possible; never cut an escape like ``&amp;`` in half."""
    chunks = []
    while len(text) > size:
        cut = text.rfind("\n", 0, size)
        if cut <= 0:
            cut = size
            amp = text.rfind("&", cut - 5, cut)
            if amp != -1 and ";" not in text[amp:cut]:
                cut = amp
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text.strip():
        chunks.append(text)
    return chunks
