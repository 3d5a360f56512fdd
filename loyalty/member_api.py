"""The member API, in the ``web`` process, for the shop's account page and checkout.

``GET /api/members/{id}``: the balance, what it is worth, the tier and the next expiry;
``POST /api/members/{id}/redemptions`` ``{"points": N, "idempotency_key": "..."}``: points turned into
a single-use discount code for that customer (``workers/redemptions.py``). ``{id}`` is the member's id
(the shop's customer id). ``Authorization: Bearer`` one of ``LOYALTY_API_KEYS``, checked off the event
loop like the events API; every refusal is JSON with one sentence, never repeating what was sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from campaigns.program import Program, load_program
from core import calendar
from core.settings import Settings
from models import ledger
from models.base import utcnow
from models.member import Member
from models.points import PointEntry
from shops.signatures import valid_bearer

log = structlog.get_logger("loyalty.web.members")


def _error(status: int, sentence: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status)


@dataclass
class Bank:
    """What a redemption needs (``workers.redemptions.RedemptionRuntime``, as the workers' runtime has)."""

    settings: Settings
    sessions: sessionmaker[Session]
    program: Program


def member_summary(session: Session, program: Program, external_id: str, now: datetime) -> dict | None:
    member = session.scalar(select(Member).where(Member.external_id == external_id))
    if member is None:
        return None
    balance = ledger.balance(session, member.id)
    lots = session.execute(select(PointEntry.remaining, PointEntry.expires_at)
                           .where(PointEntry.member_id == member.id, PointEntry.remaining > 0,
                                  PointEntry.expires_at.is_not(None), PointEntry.expires_at > now)
                           .order_by(PointEntry.expires_at)).all()
    next_expiry = None
    if lots:  # the lots that expire on the first expiry day (the member's day)
        day = calendar.local_datetime(lots[0].expires_at, member.timezone).date()
        points = sum(r.remaining for r in lots if calendar.local_datetime(r.expires_at, member.timezone).date() == day)
        next_expiry = {"points": points, "date": day.isoformat()}
    worth = (Decimal(balance) * program.points.value_per_point).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return {"id": member.external_id, "balance": balance, "value": str(worth), "currency": program.points.currency,
            "tier": member.tier, "next_expiry": next_expiry}


def member_routes(settings: Settings, sessions: sessionmaker[Session]) -> list[Route]:
    keys = settings.shop.api_keys
    state: dict[str, Bank] = {}

    def bank() -> Bank:
        if "bank" not in state:
            state["bank"] = Bank(settings, sessions, load_program(settings.program_file))
        return state["bank"]

    async def refused(request: Request) -> Response | None:
        if not keys:
            return _error(404, "The member API is not configured here: set LOYALTY_API_KEYS.")
        if not await run_in_threadpool(valid_bearer, request.headers.get("authorization"), keys):
            return _error(401, "Send one of LOYALTY_API_KEYS as Authorization: Bearer KEY.")
        return None

    async def member(request: Request) -> Response:
        if (refusal := await refused(request)) is not None:
            return refusal

        def read() -> dict | None:
            with sessions() as session:
                return member_summary(session, bank().program, request.path_params["member_id"], utcnow())

        summary = await run_in_threadpool(read)
        if summary is None:
            return _error(404, "No member has this id.")
        return JSONResponse(summary)

    async def redemptions(request: Request) -> Response:
        from workers.redemptions import RedemptionRefused, redeem
        from workers.shop_api.discounts import shop_for

        if (refusal := await refused(request)) is not None:
            return refusal
        try:
            document = json.loads(await request.body())
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            return _error(400, 'The body is not a JSON object; send {"points": 500, "idempotency_key": "..."}.')

        def work() -> dict:
            shop = shop_for(settings.shop, settings.shop.mapping.default_timezone)
            try:
                return redeem(bank(), shop, request.path_params["member_id"], document.get("points"),
                              document.get("idempotency_key")).as_json()
            finally:
                if shop is not None:
                    shop.close()

        try:
            answer = await run_in_threadpool(work)
        except RedemptionRefused as error:
            return _error(error.status, error.sentence)
        return JSONResponse(answer, status_code=201)

    return [
        Route("/api/members/{member_id}", member, methods=["GET"]),
        Route("/api/members/{member_id}/redemptions", redemptions, methods=["POST"]),
    ]
