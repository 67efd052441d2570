"""Every user-facing string the bots send, per language (en, zh)."""

from __future__ import annotations

from string import Template

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "ack_subject": "[#$number] $subject",
        "ack": (
            "Hello $name,\n\nthank you for contacting $service. We have received your message "
            "and opened ticket #$number. An agent will answer you soon.\n\n"
            "You can follow the ticket and reply at any time here:\n$status_url\n"
        ),
        "reply_subject": "[#$number] Re: $subject",
        "reply_footer": "\n\n--\nTicket #$number: $status_url\n",
    },
    "zh": {
        "ack_subject": "[#$number] $subject",
        "ack": (
            "$name 您好，\n\n感谢您联系$service。我们已收到您的消息，并创建了工单 #$number。"
            "客服人员会尽快回复您。\n\n您可以随时在这里查看工单并回复：\n$status_url\n"
        ),
        "reply_subject": "[#$number] 回复：$subject",
        "reply_footer": "\n\n--\n工单 #$number：$status_url\n",
    },
}


def render(key: str, language: str | None, **values: object) -> str:
    table = TEXTS.get((language or "en").split("-")[0], TEXTS["en"])
    return Template(table[key]).safe_substitute({k: str(v) for k, v in values.items()})
