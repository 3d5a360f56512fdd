"""The ``web`` process: a health check, one-click unsubscribe links (RFC 8058), Twilio's webhooks.

``POST /unsubscribe/{token}`` is what mail clients call from the ``List-Unsubscribe-Post``
header; ``GET`` shows a page with a button for people (a GET must not unsubscribe: link scanners
follow links). Tokens are signed and name one member and one channel.

``POST /twilio/status`` (message status callbacks) and ``POST /twilio/inbound`` (messages members
send: STOP, START, HELP) answer 403 unless ``X-Twilio-Signature`` validates with
``TWILIO_AUTH_TOKEN`` for ``LOYALTY_PUBLIC_URL`` + the path; what they change is in
``loyalty/twilio_webhooks.py``. Form bodies are parsed with the standard library.
"""

from __future__ import annotations

import html
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import structlog
from sqlalchemy import select, text, update
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from loyalty import twilio_webhooks
from loyalty.settings import Settings, get_settings
from loyalty.tokens import read_unsubscribe_token
from models.audit import AuditEntry
from models.base import utcnow
from models.db import engine_for, make_sessionmaker, transaction
from models.member import Member

log = structlog.get_logger("loyalty.web")
TWIML = "application/xml"
HELP_TEXT = "Loyalty Club: reply STOP to stop our text messages, START to get them again. More: {url}"

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">{body}</body></html>"""


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    engine = engine_for(settings)
    sessions = make_sessionmaker(engine)

    async def healthz(request: Request):
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # report, never crash the health check
            return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    def withdraw(member_external_id: str, channel: str, how: str) -> bool:
        column = {"email": "email", "sms": "sms"}[channel]
        now = utcnow()
        with transaction(sessions) as session:
            member_id = session.scalar(select(Member.id).where(Member.external_id == member_external_id))
            if member_id is None:
                return False
            changed = session.execute(
                update(Member)
                .where(Member.id == member_id, getattr(Member, f"{column}_opt_in").is_(True))
                .values(**{f"{column}_opt_in": False, f"{column}_consent_at": now,
                           f"{column}_consent_source": f"unsubscribe:{how}", "updated_at": now})
            ).rowcount
            if changed:
                session.add(AuditEntry(actor="member", action=f"optout.{channel}", member_id=member_id,
                                       reason=f"unsubscribe link ({how})", details={}))
        return True

    async def unsubscribe(request: Request):
        token = request.path_params["token"]
        scope = read_unsubscribe_token(settings.secret, token)
        if scope is None or scope[1] not in ("email", "sms"):
            return HTMLResponse(_PAGE.format(body="<p>This unsubscribe link is not valid.</p>"), status_code=404)
        member_external_id, channel = scope
        if request.method == "POST":
            body = (await request.body()).decode(errors="replace")
            how = "one-click" if "List-Unsubscribe=One-Click" in body else "page"
            if not await run_in_threadpool(withdraw, member_external_id, channel, how):
                return PlainTextResponse("Unknown member.", status_code=404)
            return HTMLResponse(_PAGE.format(body="<p>You are unsubscribed. You will receive no more of these messages.</p>"))
        action = html.escape(str(request.url))
        return HTMLResponse(_PAGE.format(body=f"""<p>Stop receiving our {channel} messages?</p>
            <form method="post" action="{action}"><button type="submit">Unsubscribe</button></form>"""))

    async def twilio_form(request: Request) -> ImmutableMultiDict | None:
        """The form Twilio posted, or None when its signature does not validate."""
        body = (await request.body()).decode("utf-8", errors="replace")
        form = ImmutableMultiDict(parse_qsl(body, keep_blank_values=True))
        if settings.twilio is None:
            return None
        url = settings.public_base_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        ok = twilio_webhooks.signature_is_valid(settings.twilio.auth_token, url, form,
                                                request.headers.get("X-Twilio-Signature"))
        return form if ok else None

    def forbidden(path: str) -> Response:
        log.warning("twilio.webhook_refused", path=path, reason="signature")
        return PlainTextResponse("Forbidden.", status_code=403)

    async def twilio_status(request: Request):
        form = await twilio_form(request)
        if form is None:
            return forbidden("status")
        outcome = await run_in_threadpool(twilio_webhooks.apply_status, sessions, form)
        log.info("twilio.status", message_sid=form.get("MessageSid"), status=form.get("MessageStatus"), outcome=outcome)
        return Response(status_code=200)

    async def twilio_inbound(request: Request):
        form = await twilio_form(request)
        if form is None:
            return forbidden("inbound")
        keyword, changed = await run_in_threadpool(twilio_webhooks.apply_inbound, sessions, form)
        log.info("twilio.inbound", message_sid=form.get("MessageSid"), keyword=keyword, members_changed=changed)
        reply = ""
        if keyword == "HELP":
            reply = f"<Message>{escape(HELP_TEXT.format(url=settings.public_base_url))}</Message>"
        return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{reply}</Response>', media_type=TWIML)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        engine.dispose()

    app = Starlette(lifespan=lifespan, routes=[
        Route("/healthz", healthz),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/twilio/status", twilio_status, methods=["POST"]),
        Route("/twilio/inbound", twilio_inbound, methods=["POST"]),
    ])
    app.state.engine = engine
    return app
