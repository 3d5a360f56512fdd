"""The ``web`` process: a health check, one-click unsubscribe links (RFC 8058), Twilio's webhooks.

``POST /unsubscribe/{token}`` is what mail clients call from the ``List-Unsubscribe-Post``
header; ``GET`` shows a page with a button for people (a GET must not unsubscribe: link scanners
follow links). Tokens are signed and name one member and one channel. The page is in the
member's language (``loyalty/pages/<locale>/``, then ``LOYALTY_DEFAULT_LOCALE``, then English) and
its form posts to ``LOYALTY_PUBLIC_URL``, never to a host the request names.

``POST /twilio/status`` (message status callbacks) and ``POST /twilio/inbound`` (messages members
send: STOP, START, HELP) answer 403 unless ``X-Twilio-Signature`` validates with
``TWILIO_AUTH_TOKEN`` for ``LOYALTY_PUBLIC_URL`` + the path; what they change is in
``loyalty/sms_feedback.py``. Form bodies are parsed with the standard library.

``POST /webhooks/shopify``, ``POST /webhooks/woocommerce`` and ``POST /api/events`` take the shop's
events into the inbox (``loyalty/shop_webhooks.py``). ``POST /feedback/ses``, ``/feedback/sendgrid``
and ``/feedback/postmark`` take the relays' bounces and complaints (``loyalty/feedback_webhooks.py``).

Nothing blocks the event loop: bodies are capped before they are read (``loyalty/web_limits.py``:
413 past 64 KB or 200 form fields; the shop's endpoints past 1 MB), and database work and signature
checks run in threads.
"""

from __future__ import annotations

import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from xml.sax.saxutils import escape

import structlog
from jinja2 import Environment, FileSystemLoader
from sqlalchemy import select, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from campaigns.brand import Brand
from campaigns.program import load_program
from campaigns.rendering import locale_candidates
from core.errors import LoyaltyError
from core.settings import Settings, get_settings
from core.tokens import read_unsubscribe_token
from loyalty.feedback_webhooks import SnsTrust, feedback_routes
from loyalty.member_api import member_routes
from loyalty.shop_webhooks import shop_routes
from loyalty.web_limits import BodySizeLimit, TooManyFields, form_fields
from models.base import utcnow
from models.consent import record_consent
from models.db import engine_for, make_sessionmaker, migrate, transaction
from models.member import Member
from workers.channels import sms_feedback
from workers.inbox import notifier

log = structlog.get_logger("loyalty.web")
TWIML = "application/xml"

#: The unsubscribe token of a proof's dummy link (workers/proof.py): it unsubscribes nobody.
PROOF_UNSUBSCRIBE = "proof"
PAGES_DIR = Path(__file__).resolve().parent / "pages"
_pages = Environment(loader=FileSystemLoader(str(PAGES_DIR)), autoescape=True)


def page_locale(member_locale: str | None, default_locale: str) -> str:
    """The first of the member's locale, its language, the default locale, its language, ``en``
    that has a page."""
    for candidate in [*locale_candidates(member_locale), *locale_candidates(default_locale), "en"]:
        if (PAGES_DIR / candidate / "unsubscribe.html").is_file():
            return candidate
    return "en"


def unsubscribe_page(locale: str, page: str, *, brand: Brand | None = None, channel: str = "", action: str = "",
                     status_code: int = 200) -> HTMLResponse:
    """``page``: ``ask`` (the button), ``done``, ``invalid`` or ``proof`` (a proof's dummy link); in the
    brand's name and colours (the program's ``brand:``), as the email the member clicked from."""
    template = _pages.get_template(f"{locale}/unsubscribe.html")
    html = template.render(lang=locale.replace("_", "-"), page=page, channel=channel, action=action,
                           brand=brand or Brand())
    return HTMLResponse(html, status_code=status_code)


def program_brand(settings: Settings) -> Brand:
    """The program's brand, read once when the app is made (the pages and HELP replies name the shop
    the messages come from); the default brand, with one warning, when the program cannot be read."""
    try:
        return load_program(settings.program_file).brand
    except LoyaltyError as exc:
        log.warning("web.program_unreadable", error=str(exc), using="the default brand")
        return Brand()


def create_app(settings: Settings | None = None, *, sns_trust: SnsTrust | None = None) -> Starlette:
    """``sns_trust``: where SNS certificates may come from (tests only; AWS's hosts otherwise)."""
    settings = settings or get_settings()
    engine = engine_for(settings)
    if settings.embedded:
        migrate(engine)  # on the embedded default, the process creates or migrates its SQLite file
    sessions = make_sessionmaker(engine)
    brand = program_brand(settings)

    def database_answers() -> str | None:
        """None when the database answers, else the error's type (run in a thread: it blocks)."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # report, never crash the health check
            return type(exc).__name__
        return None

    async def healthz(request: Request):
        error = await run_in_threadpool(database_answers)
        if error is not None:
            return JSONResponse({"status": "error", "database": error}, status_code=503)
        return JSONResponse({"status": "ok"})

    def member_locale(member_external_id: str) -> tuple[bool, str | None]:
        """(whether the member exists, their locale)."""
        with sessions() as session:
            row = session.execute(select(Member.locale).where(Member.external_id == member_external_id)).first()
        return (row is not None, row[0] if row else None)

    def withdraw(member_external_id: str, channel: str, how: str) -> tuple[bool, str | None]:
        """Withdraw the consent; (whether the member exists, their locale)."""
        with transaction(sessions) as session:
            row = session.execute(
                select(Member.id, Member.locale).where(Member.external_id == member_external_id)).first()
            if row is None:
                return False, None
            member_id, locale = row
            record_consent(session, member_id, channel, granted=False, source=f"unsubscribe:{how}", at=utcnow(),
                           actor="member", reason=f"unsubscribe link ({how})")
        return True, locale

    async def unsubscribe(request: Request):
        def invalid() -> HTMLResponse:
            return unsubscribe_page(page_locale(None, settings.default_locale), "invalid", brand=brand, status_code=404)

        token = request.path_params["token"]
        if token == PROOF_UNSUBSCRIBE:  # a proof's dummy link, clicked by the marketer who got it
            return unsubscribe_page(page_locale(None, settings.default_locale), "proof", brand=brand)
        scope = read_unsubscribe_token(settings.secret, token)
        if scope is None or scope[1] not in ("email", "sms"):
            return invalid()
        member_external_id, channel = scope
        if request.method == "POST":
            body = (await request.body()).decode(errors="replace")
            how = "one-click" if "List-Unsubscribe=One-Click" in body else "page"
            known, locale = await run_in_threadpool(withdraw, member_external_id, channel, how)
            if not known:
                return invalid()
            return unsubscribe_page(page_locale(locale, settings.default_locale), "done", brand=brand, channel=channel)
        known, locale = await run_in_threadpool(member_locale, member_external_id)
        if not known:
            return invalid()
        action = f"{settings.public_base_url}/unsubscribe/{token}"  # never the Host the request names
        return unsubscribe_page(page_locale(locale, settings.default_locale), "ask", brand=brand, channel=channel,
                                action=action)

    async def twilio_form(request: Request) -> dict[str, str] | Response:
        """The form Twilio posted, or the answer to give: 413 past the field limit, 403 when its
        signature does not validate."""
        try:
            fields = form_fields(await request.body())
        except TooManyFields as exc:
            return PlainTextResponse(f"Too many form fields: {exc}.", status_code=413)
        if settings.twilio is None:
            return forbidden(request.url.path)
        url = settings.public_base_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        ok = await run_in_threadpool(sms_feedback.signature_is_valid, settings.twilio.auth_token, url, fields,
                                     request.headers.get("X-Twilio-Signature"))
        return dict(fields) if ok else forbidden(request.url.path)

    def forbidden(path: str) -> Response:
        log.warning("twilio.webhook_refused", path=path, reason="signature")
        return PlainTextResponse("Forbidden.", status_code=403)

    async def twilio_status(request: Request):
        form = await twilio_form(request)
        if isinstance(form, Response):
            return form
        outcome = await run_in_threadpool(sms_feedback.apply_status, sessions, form)
        log.info("twilio.status", message_sid=form.get("MessageSid"), status=form.get("MessageStatus"), outcome=outcome)
        return Response(status_code=200)

    async def twilio_inbound(request: Request):
        form = await twilio_form(request)
        if isinstance(form, Response):
            return form
        keyword, changed = await run_in_threadpool(sms_feedback.apply_inbound, sessions, form)
        log.info("twilio.inbound", message_sid=form.get("MessageSid"), keyword=keyword, members_changed=changed)
        reply = ""
        if keyword == "HELP":
            text = sms_feedback.help_reply(brand, settings.public_base_url)
            reply = f"<Message>{escape(text)}</Message>"
        return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{reply}</Response>', media_type=TWIML)

    inbox_notifier = notifier(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        inbox_notifier.close()  # the runtime it built to apply entries, and that runtime's engine
        engine.dispose()

    shop_limit = settings.shop.max_body_bytes
    limits = Middleware(BodySizeLimit, by_prefix={"/webhooks/": shop_limit, "/api/": shop_limit,
                                                  "/feedback/": settings.feedback.max_body_bytes})
    async def crashed(request: Request, exc: Exception) -> Response:
        """An error of ours: logged with its type and where (never its message, which may quote
        data), answered 500 in one sentence."""
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        log.error("web.crashed", path=request.url.path, error=type(exc).__name__,
                  at=[f"{Path(f.filename).name}:{f.lineno}" for f in frames])
        return JSONResponse({"error": "Something went wrong on our side; it was logged, try again later."},
                            status_code=500)

    async def refused(request: Request, exc: Exception) -> Response:
        """Starlette's 404 and 405, said in one sentence as JSON like every other refusal here."""
        assert isinstance(exc, HTTPException)
        path = request.url.path[:200]
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method[:10]} is not accepted at {path}: send {' or '.join(sorted(allowed.split(', ')))}."
        elif exc.status_code == 404:
            message = f"There is no endpoint at {path}; the README's HTTP API lists them."
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    app = Starlette(lifespan=lifespan, middleware=[limits],
                    exception_handlers={Exception: crashed, HTTPException: refused}, routes=[
        Route("/healthz", healthz),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/twilio/status", twilio_status, methods=["POST"]),
        Route("/twilio/inbound", twilio_inbound, methods=["POST"]),
        *shop_routes(settings, sessions, inbox_notifier),
        *member_routes(settings, sessions),
        *feedback_routes(settings, sessions, sns_trust),
    ])
    app.state.engine = engine
    return app
