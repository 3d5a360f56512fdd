"""The Mailchimp audience kept in step with the members: bulk, changed members only.

What is sent, per member: the merge fields of ``workers/channels/mailchimp_fields.py`` (``TIER``,
``POINTS``, ``EXPPOINTS``, ``EXPDATE``, ``BDAY``, ``LOCALE``).

Who is sent:

- members with email consent and a usable address, as ``subscribed``: created if new, updated
  if known. Mailchimp refuses to subscribe again someone unsubscribed or cleaned there (a
  "compliance state"): that is recorded (``mailchimp_status = refused`` with the reason) and
  the member is not sent again, nor reached by ``mailchimp`` campaign steps;
- members who withdrew email consent *and* whom Mailchimp knows as subscribed from us, as
  ``unsubscribed``, so the withdrawal reaches Mailchimp. Members without consent whom Mailchimp
  never had are never added.

What "changed" means: never synced, or ``members.updated_at`` (tier, consent, birthday, locale,
email...) or a points ledger entry (earn, redeem, expiry) later than the last sync, looked at with
a 15-minute overlap so that a transaction committing late is not missed. Each member's payload
is digested (``mailchimp_hash``: HMAC-SHA256 under the look-up key, so the database and a list of
candidate addresses do not give the emails back): a candidate whose digest is what Mailchimp
already accepted is not sent again, so the overlap costs no calls.

How: ``POST /lists/{list_id}`` (batch subscribe, ``update_existing``), 500 members per call, never
a call per member, each allowed 60 s; up to 10 calls at once (Mailchimp's limit of simultaneous connections), one
sync at a time (a PostgreSQL advisory lock). A per-member error in the answer is recorded and not
retried; a 429, a 5xx or no answer is retried with backoff (a batch subscribe is idempotent), and
a chunk still failing is left for the next run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import ColumnElement, and_, bindparam, exists, func, or_, select, update

from models.base import utcnow
from models.db import only_one, transaction
from models.member import ContactStatus, MailchimpStatus, Member
from models.personal_data import installed
from models.points import PointEntry
from workers.channels.mailchimp import MailchimpCallError, call, lists_api, masked
from workers.channels.mailchimp_fields import merge_fields

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = structlog.get_logger("loyalty.mailchimp")

CHUNK = 500  # Mailchimp's maximum per batch subscribe
OVERLAP = timedelta(minutes=15)
RETRY_WAITS = (1.0, 2.0, 4.0, 8.0)  # seconds before each retry of a chunk
BATCH_TIMEOUT = 60.0  # seconds: Mailchimp may take a while over 500 members (MAILCHIMP_TIMEOUT_SECONDS if longer)
_LOCK_KEY = 0x4D43_5359  # "MCSY": the advisory lock of the sync


def payload_for(member: Member, fields: dict[str, object]) -> dict[str, object]:
    status = MailchimpStatus.SUBSCRIBED if member.email_opt_in else MailchimpStatus.UNSUBSCRIBED
    return {"email_address": member.email, "status": status, "merge_fields": fields}


def digest(payload: dict[str, object]) -> str:
    """A keyed digest of what is sent (the email among it): equal payloads, equal digests; without
    the look-up key, nothing can be tried against it. 128 bits: enough to tell a change."""
    canonical = json.dumps({**payload, "email_address": str(payload["email_address"]).lower()}, sort_keys=True)
    keyed = hmac.new(installed().lookup_key, b"mailchimp sync:" + canonical.encode("utf-8"), hashlib.sha256)
    return keyed.hexdigest()[:32]


def candidates_condition() -> ColumnElement[bool]:
    """Members the sync looks at: reachable, not refused by Mailchimp, and changed since their sync."""
    since = Member.mailchimp_synced_at  # already OVERLAP before the sync's start (see _record)
    changed = or_(
        Member.mailchimp_synced_at.is_(None),
        Member.updated_at > since,
        exists().where(PointEntry.member_id == Member.id, PointEntry.created_at > since),
    )
    known_subscribed = Member.mailchimp_status == MailchimpStatus.SUBSCRIBED
    return and_(
        Member.email.is_not(None), Member.email_status == ContactStatus.OK,
        or_(Member.mailchimp_status.is_(None), Member.mailchimp_status != MailchimpStatus.REFUSED),
        or_(Member.email_opt_in.is_(True), known_subscribed),
        changed,
    )


@dataclass
class SyncReport:
    candidates: int = 0
    unchanged: int = 0  # changed since the last sync, but not what Mailchimp has
    sent: int = 0
    created: int = 0
    updated: int = 0
    refused: int = 0  # Mailchimp will not subscribe them again: recorded, not retried
    errors: int = 0  # other per-member errors: recorded, tried again when the member changes
    failed_chunks: int = 0  # still failing after the retries: left for the next run
    calls: int = 0
    skipped: bool = False  # another sync was running
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Chunk:
    members: dict[str, tuple[int, str]]  # lower-cased email → (member id, digest)
    payloads: list[dict[str, object]]


@dataclass
class _Answer:
    chunk: _Chunk
    result: dict | None
    calls: int
    error: MailchimpCallError | None = None


def sync_members(runtime: Runtime, *, progress: Callable[[int, int], None] | None = None,
                 retry_waits: Sequence[float] = RETRY_WAITS) -> SyncReport:
    """Send every changed member to the audience; returns what happened (see the module doc)."""
    target = runtime.settings.mailchimp
    if target is None:
        raise LookupError("Mailchimp is not configured (MAILCHIMP_API_KEY, MAILCHIMP_SERVER_PREFIX, MAILCHIMP_LIST_ID)")
    report = SyncReport()
    with only_one(runtime.engine, _LOCK_KEY) as ours:
        if not ours:
            report.skipped = True
            return report
        started = utcnow()
        synced_at = started - OVERLAP  # what a member's row says: changes before it are in Mailchimp
        with runtime.sessions() as session:
            report.candidates = session.scalar(
                select(func.count()).select_from(Member).where(candidates_condition())) or 0
        local = threading.local()
        sessions = []

        batch_target = replace(target, timeout=max(target.timeout, BATCH_TIMEOUT))
        slots = runtime.mailchimp_slots()

        def post(chunk: _Chunk) -> _Answer:
            if not hasattr(local, "lists"):
                local.lists, http = lists_api(batch_target, slots=slots)
                sessions.append(http)
            return _post_with_retries(local.lists, target.list_id, chunk, retry_waits)

        done = 0
        try:
            # As many calls in flight as Mailchimp allows with the key; the connection slots keep the
            # sync and the deliveries of every process under that together.
            with ThreadPoolExecutor(target.max_connections, thread_name_prefix="mailchimp-sync") as pool:
                in_flight: set[Future] = set()
                for chunk, unchanged in _chunks(runtime, started, synced_at, report):
                    done += unchanged
                    if chunk is None:
                        continue
                    if len(in_flight) >= target.max_connections:
                        finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        done += sum(_record(runtime, f.result(), synced_at, report) for f in finished)
                    in_flight.add(pool.submit(post, chunk))
                    if progress:
                        progress(done, report.candidates)
                for future in in_flight:
                    done += _record(runtime, future.result(), synced_at, report)
                    if progress:
                        progress(done, report.candidates)
        finally:
            for http in sessions:
                http.close()
    log.info("mailchimp.synced", candidates=report.candidates, sent=report.sent, created=report.created,
             updated=report.updated, unchanged=report.unchanged, refused=report.refused, errors=report.errors,
             failed_chunks=report.failed_chunks, calls=report.calls)
    return report


def _chunks(runtime: Runtime, started: datetime, synced_at: datetime,
            report: SyncReport) -> Iterator[tuple[_Chunk | None, int]]:
    """Pages of candidates, in id order; yields (a chunk of up to 500 to send or None, unchanged count)."""
    last_id = 0
    pending = _Chunk({}, [])
    while True:
        with transaction(runtime.sessions) as session:
            members = session.scalars(
                select(Member).where(candidates_condition(), Member.id > last_id).order_by(Member.id).limit(CHUNK)
            ).all()
            if not members:
                break
            last_id = members[-1].id
            fields = merge_fields(session, members, started)
            unchanged = []
            for member in members:
                payload = payload_for(member, fields[member.id])
                key = digest(payload)
                if key == member.mailchimp_hash:
                    unchanged.append(member.id)
                    continue
                if member.email is None:  # candidates_condition leaves them out
                    continue
                email = member.email.strip().lower()
                if email in pending.members:  # two members share an address: the second waits a run
                    continue
                pending.members[email] = (member.id, key)
                pending.payloads.append(payload)
            if unchanged:  # nothing to send: only move their sync time on
                session.execute(update(Member).where(Member.id.in_(unchanged))
                                .values(mailchimp_synced_at=synced_at, updated_at=Member.updated_at))
        report.unchanged += len(unchanged)
        while len(pending.payloads) >= CHUNK:
            head = _Chunk(dict(list(pending.members.items())[:CHUNK]), pending.payloads[:CHUNK])
            pending = _Chunk(dict(list(pending.members.items())[CHUNK:]), pending.payloads[CHUNK:])
            yield head, 0
        yield None, len(unchanged)
    if pending.payloads:
        yield pending, 0


def _post_with_retries(lists: Any, list_id: str, chunk: _Chunk, retry_waits: Sequence[float]) -> _Answer:
    calls = 0
    body = {"members": chunk.payloads, "update_existing": True}
    for attempt in range(len(retry_waits) + 1):
        calls += 1
        try:
            result = call(lists.batch_list_members, list_id, body)
        except MailchimpCallError as error:
            if not error.retryable or attempt == len(retry_waits):
                return _Answer(chunk, None, calls, error)
            time.sleep(retry_waits[attempt])
            continue
        if not isinstance(result, dict):  # a 2xx without a body: nothing to learn from, try again
            if attempt == len(retry_waits):
                return _Answer(chunk, None, calls, MailchimpCallError(200, "Empty answer", "no batch result"))
            time.sleep(retry_waits[attempt])
            continue
        return _Answer(chunk, result, calls)
    raise AssertionError("unreachable")


_SET = (update(Member).where(Member.id == bindparam("member_id"))
        .values(mailchimp_status=bindparam("status"), mailchimp_reason=bindparam("reason"),
                mailchimp_hash=bindparam("digest"), mailchimp_synced_at=bindparam("synced_at"),
                updated_at=Member.updated_at))  # our own bookkeeping is not a change of the member


def _record(runtime: Runtime, answer: _Answer, synced_at: datetime, report: SyncReport) -> int:
    """Write what Mailchimp answered for a chunk; returns how many members it covered."""
    report.calls += answer.calls
    if answer.result is None:
        report.failed_chunks += 1
        log.error("mailchimp.chunk_failed", members=len(answer.chunk.payloads), calls=answer.calls,
                  status=answer.error.status if answer.error else None, detail=str(answer.error))
        return len(answer.chunk.payloads)
    rows = []
    result = answer.result
    for kind in ("new_members", "updated_members"):
        for item in result.get(kind) or []:
            found = answer.chunk.members.get(str(item.get("email_address", "")).strip().lower())
            if found is None:
                continue
            status = item.get("status") or MailchimpStatus.SUBSCRIBED
            rows.append({"member_id": found[0], "status": status, "reason": None, "digest": found[1], "synced_at": synced_at})
            report.created += kind == "new_members"
            report.updated += kind == "updated_members"
    for error in result.get("errors") or []:
        found = answer.chunk.members.get(str(error.get("email_address", "")).strip().lower())
        if found is None:
            continue
        status, reason = _sorted_error(error)
        rows.append({"member_id": found[0], "status": status, "reason": reason, "digest": None, "synced_at": synced_at})
        if status == MailchimpStatus.REFUSED:
            report.refused += 1
        else:
            report.errors += 1
        report.reasons[reason] = report.reasons.get(reason, 0) + 1
    report.sent += len(answer.chunk.payloads)
    if rows:
        with transaction(runtime.sessions) as session:
            session.connection().execute(_SET, rows)
    return len(answer.chunk.payloads)


def _sorted_error(error: dict) -> tuple[str, str]:
    text_ = masked(str(error.get("error") or ""))
    lowered = text_.lower()
    if "compliance state" in lowered:
        return MailchimpStatus.REFUSED, "compliance state (unsubscribed, cleaned or under review in Mailchimp)"
    if "permanently deleted" in lowered or "forgotten" in lowered:
        return MailchimpStatus.REFUSED, "permanently deleted from Mailchimp"
    where = f"{error.get('field')}: " if error.get("field") else ""
    return MailchimpStatus.ERROR, (where + (masked(str(error.get("field_message") or "")) or text_))[:200]


