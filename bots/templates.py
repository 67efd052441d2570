"""Every user-facing string the bots send, per language (en, zh)."""

from __future__ import annotations

import functools
from string import Template

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "ack_subject": "[#$number] $subject",
        "ack": (
            "Hello $name,\n\nthank you for contacting $service. We have received your message "
            "and opened ticket #$number. An agent will answer you soon.\n\n"
            "You can follow the ticket and reply at any time here:\n$status_url\n"
        ),
        "ack_link": "\n\nYou can follow the ticket and reply at any time here:\n$status_url\n",
        "ack_kb": "\nThese articles might already answer your question:\n$articles\n",
        "kb_solved": "This solved it",
        "kb_more": "I still need help",
        "reply_subject": "[#$number] Re: $subject",
        "reply_footer": "\n\n--\nTicket #$number: $status_url\n",
        "claimed": "$agent is now handling your ticket #$number.",
        "survey_subject": "[#$number] How did we do?",
        "survey": (
            "Your ticket #$number has been resolved. How satisfied are you with our help? "
            "(1 = not at all, 5 = very)"
        ),
        "nps": (
            "One more question: how likely are you to recommend $service to a friend or "
            "colleague? (0 = not at all, 10 = extremely)"
        ),
        "rated": "Thank you for your rating! If you like, reply to this message with a comment.",
        "already_rated": "You have already rated this ticket. Thank you!",
        "survey_closed": "This survey has closed. Thank you all the same!",
        "deflected": "Great, we're glad it helped! Ticket #$number is resolved.",
        "more_help": "Thanks, an agent will get back to you on ticket #$number soon.",
        "not_yours": "This button is not for you.",
        "comment_thanks": "Thank you for your comment!",
    },
    "zh": {
        "ack_subject": "[#$number] $subject",
        "ack": (
            "$name 您好，\n\n感谢您联系$service。我们已收到您的消息，并创建了工单 #$number。"
            "客服人员会尽快回复您。\n\n您可以随时在这里查看工单并回复：\n$status_url\n"
        ),
        "ack_link": "\n\n您可以随时在这里查看工单并回复：\n$status_url\n",
        "ack_kb": "\n以下文章也许能解答您的问题：\n$articles\n",
        "kb_solved": "问题已解决",
        "kb_more": "我仍需要帮助",
        "reply_subject": "[#$number] 回复：$subject",
        "reply_footer": "\n\n--\n工单 #$number：$status_url\n",
        "claimed": "$agent 正在处理您的工单 #$number。",
        "survey_subject": "[#$number] 请评价我们的服务",
        "survey": "您的工单 #$number 已解决。您对我们的帮助满意吗？（1 = 很不满意，5 = 非常满意）",
        "nps": (
            "还有一个问题：您有多大可能向朋友或同事推荐$service？（0 = 完全不会，10 = 非常愿意）"
        ),
        "rated": "感谢您的评分！如愿意，可直接回复此消息留下意见。",
        "already_rated": "您已经评价过此工单，谢谢！",
        "survey_closed": "此调查已结束，仍然感谢您！",
        "deflected": "太好了，很高兴能帮到您！工单 #$number 已解决。",
        "more_help": "谢谢，客服人员会尽快就工单 #$number 回复您。",
        "not_yours": "此按钮不是给您的。",
        "comment_thanks": "感谢您的意见！",
    },
}


def render(key: str, language: str | None, **values: object) -> str:
    """``Template(text).safe_substitute(values)``: a placeholder without a value stays as it is
    written. From the text's pieces, split once (every acknowledgement renders two texts)."""
    table = TEXTS.get((language or "en").split("-")[0], TEXTS["en"])
    out = []
    for literal, name, written in _pieces(table[key]):
        out.append(literal)
        if name:
            value = values.get(name, _MISSING)
            out.append(written if value is _MISSING else str(value))
    return "".join(out)


_MISSING = object()


@functools.cache
def _pieces(text: str) -> tuple[tuple[str, str, str], ...]:
    """(literal text, placeholder name or "", the placeholder as written) in order; "$$" is a
    literal "$", and a "$" that starts no placeholder is left as it is, as Template does."""
    pieces = []
    start = 0
    for match in Template.pattern.finditer(text):
        literal = text[start : match.start()]
        name = match.group("named") or match.group("braced")
        if name:
            pieces.append((literal, name, match.group()))
        else:  # "$$" or an invalid "$"
            pieces.append((literal + ("$" if match.group("escaped") else match.group()), "", ""))
        start = match.end()
    pieces.append((text[start:], "", ""))
    return tuple(pieces)
