"""HTML pages for customers: the web form and the ticket status page (portal). No JavaScript."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import nh3
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from core import kb, queries, surveys
from core.errors import InvalidInput, TooLarge
from core.links import ActionLinks
from core.messages import Attachment, Channel, InboundMessage, Interaction, Sender, ThreadHints
from core.views import view_from_row
from gateway import csrf
from gateway.http import client_ip, sender_key
from gateway.state import HELPDESK, HUB, INTAKE_LIMITER, SENDER_LIMITER, SETTINGS, TEMPLATES
from gateway.validation import clean_email, clean_name, parse_id

routes = web.RouteTableDef()

STATUS_LABELS = {
    "new": "Received",
    "open": "In progress",
    "pending": "Waiting for you",
    "resolved": "Resolved",
    "closed": "Closed",
}


def sanitize(html: str | None) -> Markup:
    """Customer HTML made safe to show: nh3 keeps formatting, drops scripts, styles, handlers."""
    return Markup(nh3.clean(html or "", link_rel="noopener noreferrer nofollow"))


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("gateway", "templates"), autoescape=select_autoescape(default=True)
    )
    env.filters["sanitize"] = sanitize
    env.globals["status_labels"] = STATUS_LABELS
    return env


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    settings = request.app[SETTINGS]
    html = (
        request.app[TEMPLATES].get_template(name).render(service=settings.service.name, **context)
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # status links must not leak
    return response


def _form_page(
    request: web.Request, name: str, *, status: int = 200, **context: Any
) -> web.Response:
    """Render a page carrying a fresh CSRF token, setting the browser cookie when new."""
    helpdesk = request.app[HELPDESK]
    cookie, fresh = csrf.browser_cookie(request)
    response = render(request, name, status, form=csrf.issue(helpdesk.secret, cookie), **context)
    if fresh:
        csrf.set_cookie(response, cookie, helpdesk.settings.service.public_url.startswith("https"))
    return response


@routes.get("/")
async def form_page(request: web.Request) -> web.Response:
    return _form_page(request, "form.html", values={}, errors={})


async def _read_form(request: web.Request) -> Any:
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge("the submission is too large") from None
    # ValueError: bad encoding or structure; LookupError: unknown charset; BadHttpMessage: broken
    # part headers. All are the client's fault, not a 500.
    except (ValueError, LookupError, BadHttpMessage) as err:
        raise InvalidInput(f"malformed form: {err}", "form") from None


def _text(form: Any, name: str) -> str:
    """A text field of the form; a file or binary part where text belongs names the field."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a text field", name)
    return value


def _attachments(form: Any, max_count: int) -> tuple[Attachment, ...]:
    files = [
        f for f in form.getall("attachments", []) if isinstance(f, web.FileField) and f.filename
    ]
    if len(files) > max_count:
        raise TooLarge(f"at most {max_count} attachments", "attachments")
    return tuple(
        Attachment(
            filename=f.filename,
            content_type=f.content_type or "application/octet-stream",
            content=f.file.read(),
        )
        for f in files
    )


def _rate_limited(request: web.Request) -> web.Response | None:
    """The 429 page when this client IP has submitted too often; None when it may go on."""
    wait = request.app[INTAKE_LIMITER].check(client_ip(request))
    if wait is None:
        return None
    return _too_many(request, wait, f"Please wait {max(1, round(wait))} seconds and try again.")


def _too_many(request: web.Request, wait: float, detail: str) -> web.Response:
    response = render(request, "error.html", 429, title="Too many submissions", detail=detail)
    response.headers["Retry-After"] = str(max(1, round(wait)))
    return response


@routes.post("/")
async def submit_form(request: web.Request) -> web.Response:
    helpdesk = request.app[HELPDESK]
    if (refusal := _rate_limited(request)) is not None:
        return refusal
    form = await _read_form(request)
    csrf.verify(helpdesk.secret, request, _text(form, "form_id"), _text(form, "csrf"))
    if form.get("website"):  # the honeypot: only bots fill a field people cannot see
        raw = repr({k: v for k, v in form.items() if isinstance(v, str)}).encode()
        await helpdesk.quarantine(Channel.WEB.value, "honeypot field filled", raw)
        return render(request, "submitted.html", number=None, status_url=None)

    limits = helpdesk.settings.intake
    values = {k: _text(form, k) for k in ("name", "email", "subject", "message")}
    errors: dict[str, str] = {}
    email = ""
    try:
        email = clean_email(values["email"])
    except InvalidInput as err:
        errors["email"] = str(err)
    if not values["message"].strip():
        errors["message"] = "Please describe your problem."
    elif len(values["message"]) > limits.max_body_chars:
        errors["message"] = f"The message is longer than {limits.max_body_chars} characters."
    if len(values["subject"]) > limits.max_subject_chars:
        errors["subject"] = f"The subject is longer than {limits.max_subject_chars} characters."
    if errors:
        return _form_page(request, "form.html", status=400, values=values, errors=errors)

    attachments = _attachments(form, limits.max_attachments)
    wait = request.app[SENDER_LIMITER].check(sender_key(email), _text(form, "form_id"))
    if wait is not None:
        # one sender flooding: refuse, but keep the submission (files too) in the quarantine
        raw = json.dumps(
            {
                "channel": "web",
                "form_id": _text(form, "form_id"),
                "submission": values,
                "attachments": [
                    {
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "content": base64.b64encode(a.content).decode(),
                    }
                    for a in attachments
                ],
            }
        ).encode()
        await helpdesk.quarantine(
            Channel.WEB.value, f"rate limit per sender exceeded: {email}", raw
        )
        return _too_many(
            request,
            wait,
            "We received several messages from you in a short time. This one is kept and "
            f"will be looked at; to get a ticket number now, send it again in "
            f"{max(1, round(wait))} seconds.",
        )
    msg = InboundMessage(
        channel=Channel.WEB,
        external_id=_text(form, "form_id"),
        sender=Sender(address=email, name=clean_name(values["name"]), email=email),
        subject=values["subject"].strip(),
        text=values["message"],
        attachments=attachments,
        received_at=helpdesk.clock(),
    )
    result = await helpdesk.ingest(msg)
    return render(
        request, "submitted.html", number=result.ticket_number, status_url=result.status_url
    )


async def _portal_row(request: web.Request) -> tuple[Any, Any]:
    helpdesk = request.app[HELPDESK]
    number, token = parse_id(request.match_info["number"]), request.match_info["token"]
    if number is None:
        raise web.HTTPNotFound()
    if not token.isascii():  # core's check_portal_token raises TypeError on non-ASCII
        raise web.HTTPNotFound()
    return await helpdesk.read(
        lambda conn, ctx: (queries.portal_ticket(conn, ctx, number, token), ctx)
    )


async def _portal_page(
    request: web.Request, *, status: int = 200, error: str | None = None, sent: bool = False
) -> web.Response:
    helpdesk = request.app[HELPDESK]
    row, ctx = await _portal_row(request)
    entries = await helpdesk.db.read(
        lambda conn: queries.ticket_messages(conn, row.id, public_only=True)
    )
    return _form_page(
        request,
        "portal.html",
        status=status,
        ticket=view_from_row(row, ctx),
        row=row,
        entries=entries,
        error=error,
        sent=sent,
    )


@routes.get("/t/{number}/{token}")
async def portal_page(request: web.Request) -> web.Response:
    return await _portal_page(request, sent=request.query.get("sent") == "1")


@routes.post("/t/{number}/{token}")
async def portal_reply(request: web.Request) -> web.Response:
    helpdesk = request.app[HELPDESK]
    if (refusal := _rate_limited(request)) is not None:
        return refusal
    row, _ = await _portal_row(request)
    form = await _read_form(request)
    csrf.verify(helpdesk.secret, request, _text(form, "form_id"), _text(form, "csrf"))
    text = _text(form, "message")
    limits = helpdesk.settings.intake
    if not text.strip() or len(text) > limits.max_body_chars:
        return await _portal_page(
            request,
            status=400,
            error=f"Please write a message (at most {limits.max_body_chars} characters).",
        )
    msg = InboundMessage(
        channel=Channel.WEB,
        external_id=_text(form, "form_id"),
        sender=Sender(address="portal", name=row.customer_name),
        text=text,
        attachments=_attachments(form, limits.max_attachments),
        thread_hints=ThreadHints(
            ticket_number=row.number, portal_token=request.match_info["token"]
        ),
        received_at=helpdesk.clock(),
    )
    result = await helpdesk.ingest(msg)
    # Post/Redirect/Get: a reload shows the page instead of posting again. A reply to a closed
    # ticket opens a new one: show that ticket, else the customer never learns its link.
    target = request.path
    if result.ticket_number != row.number and result.status_url:
        target = urlsplit(result.status_url).path
    raise web.HTTPSeeOther(f"{target}?sent=1")


@routes.get("/kb/{slug}")
async def kb_article(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    row = await request.app[HELPDESK].db.read(lambda c: kb.article(c, slug))
    return render(request, "article.html", article=row)


def _signed_link(request: web.Request) -> tuple[int, str, str]:
    """The ticket number, action and value of a one-click link; 404 unless its signature holds."""
    helpdesk = request.app[HELPDESK]
    raw, action, value = (request.match_info[k] for k in ("number", "action", "value"))
    links = ActionLinks(helpdesk.secret, helpdesk.settings.service.public_url)
    number = parse_id(raw)
    if number is None or not links.check(number, action, value, request.match_info["token"]):
        raise web.HTTPNotFound()
    return number, action, value


@routes.get("/a/{number}/{action}/{value}/{token}")
async def one_click(request: web.Request) -> web.Response:
    """A signed button from an email (a rating, "this solved it"): one click does it."""
    helpdesk = request.app[HELPDESK]
    number, action, value = _signed_link(request)
    row = await helpdesk.db.read(lambda c: queries.ticket_row(c, number))
    interaction = Interaction(
        channel=Channel(row.identity_channel),
        external_id=f"link:{number}:{action}:{value}",
        user=row.identity_address,
        action=action,
        value=f"{number}:{value}",
    )
    reply = await request.app[HUB].interact(interaction)
    text = reply.text or "Done already. Thank you!"
    comment = action in ("csat", "nps") and reply.text != ""
    return _form_page(
        request,
        "action_done.html",
        text=text,
        comment=comment,
        number=number,
        ticket_token=request.match_info["token"],
    )


@routes.post("/a/{number}/{action}/{value}/{token}")
async def one_click_comment(request: web.Request) -> web.Response:
    """The optional comment under a rating given by email."""
    helpdesk = request.app[HELPDESK]
    number, action, _ = _signed_link(request)
    form = await _read_form(request)
    csrf.verify(helpdesk.secret, request, _text(form, "form_id"), _text(form, "csrf"))
    text = _text(form, "comment")
    row = await helpdesk.db.read(lambda c: queries.ticket_row(c, number))
    await helpdesk.run(lambda c, ctx: surveys.comment(c, ctx, row.id, text, kind=action))
    return render(
        request,
        "action_done.html",
        text="Thank you for your comment!",
        comment=False,
        number=number,
    )
