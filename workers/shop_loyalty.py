"""Tiers and balances the shop can see: each member's loyalty facts written on their shop customer.

What is written, per member (:class:`Facts`): the tier, the balance, its worth (balance ×
``value_per_point``, 2 decimals), and the next expiry (the points of the earliest local day lots
expire, and that day ``YYYY-MM-DD``; none: 0 points, no date).

- Shopify (GraphQL Admin API): the tag ``loyalty-tier:<tier>`` (``tagsAdd``; the other tiers' tags
  removed with ``tagsRemove``, only when the tier differs from the one the shop last accepted), and
  metafields in the namespace ``loyalty`` (``metafieldsSet``, at most 25 metafields per mutation,
  atomic): ``tier`` (single line text), ``points``, ``next_expiry_points`` (integers),
  ``points_value`` (decimal), ``next_expiry_date`` (date; deleted with ``metafieldsDelete`` when
  nothing is due to expire). Up to 25 members per request: their mutations go together, aliased, in
  one document (at most 5 + 2 × 25 + 1 mutations, 10 cost points each, far under the 1,000 points a
  query may cost); THROTTLED waits for the bucket and asks again.
- WooCommerce (REST v3): the customer's ``meta_data`` ``loyalty_tier``, ``loyalty_points``,
  ``loyalty_points_value``, ``loyalty_next_expiry_points``, ``loyalty_next_expiry_date`` (empty when
  none), 100 customers per ``POST /customers/batch`` (its limit).
- PrestaShop: not written; its customers have no free fields without a module (a customer group per
  tier would be the native way: docs/shop-platforms.md §4.6).

Who: members whose external id is a customer of that shop (the shop sent that customer: a
``{platform}:customer:{id}`` version is recorded), not erased; the others are counted, not sent.

What "changed" means, as in the Mailchimp sync (workers/mailchimp_sync.py): never written to that
shop, or ``members.updated_at`` (the tier...) or a points ledger entry (earn, redeem, expiry) later
than the last sync, with a 15-minute overlap for late commits; a keyed digest of what the shop last
accepted (``shop_customers.digest``: HMAC-SHA256 under the look-up key) spares unchanged candidates
any call. A member the shop refuses (an unknown customer, a value it rejects) is recorded ``error``
with the reason and tried again when it changes; a request still failing after the bounded retries
(429, 5xx, no answer) ends that shop's run and leaves its members for the next. One sync at a time
(a PostgreSQL advisory lock).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVarTuple, cast

import dramatiq
import structlog
from sqlalchemy import ColumnElement, Select, String, Table, and_, exists, func, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.settings import Settings
from models.base import utcnow
from models.db import only_one, transaction
from models.inbox import ShopVersion
from models.member import Member
from models.personal_data import installed
from models.points import PointEntry
from models.shop_customers import ShopCustomer, ShopCustomerState
from workers.actors import CAMPAIGN_QUEUE, _placeholder
from workers.channels.mailchimp_fields import merge_fields
from workers.runtime import Runtime, get_runtime
from workers.shop_api.http import ShopApiError
from workers.shop_api.shopify import ShopifyClient
from workers.shop_api.woocommerce import WooCommerceClient

if TYPE_CHECKING:
    from workers.shop_sync import ShopClient

log = structlog.get_logger("loyalty.shop_loyalty")

PLATFORMS = ("shopify", "woocommerce")  # PrestaShop: nothing to write to (see the module doc)
OVERLAP = timedelta(minutes=15)
PAGE = 500  # members read per query
NAMESPACE = "loyalty"
TAG_PREFIX = "loyalty-tier:"
METAFIELDS_PER_CALL = 25  # Shopify's limit for one metafieldsSet
SHOPIFY_MEMBERS_PER_REQUEST = 25
WOOCOMMERCE_BATCH = 100  # WooCommerce's default batch limit
MAX_THROTTLED = 10
_LOCK_KEY = 0x5348_4F55  # "SHOU": the advisory lock of the sync
Progress = Callable[[str, int, int], None]  # (platform, members done, candidates)


@dataclass(frozen=True)
class Facts:
    tier: str
    points: int
    points_value: str  # "12.50"
    next_expiry_points: int
    next_expiry_date: str  # "2027-03-01", "" when nothing is due to expire


@dataclass
class Target:
    member_id: int
    customer_id: str  # the shop's numeric customer id (the member's external id)
    facts: Facts
    digest: str
    shop_tier: str | None  # the tier whose tag the shop last accepted


@dataclass
class Outcome:
    """What one request did: members written, members refused (with a reason), members not written."""

    synced: list[Target] = field(default_factory=list)
    errors: list[tuple[Target, str]] = field(default_factory=list)
    calls: int = 0


@dataclass
class PlatformReport:
    platform: str
    candidates: int = 0  # changed since their last sync
    unchanged: int = 0  # changed, but not what the shop has
    synced: int = 0
    retagged: int = 0  # Shopify: tier tag swapped
    errors: int = 0  # refused by the shop: recorded, tried again when the member changes
    left: int = 0  # not written this run (a failing request, or a refused neighbour in an atomic call)
    not_in_shop: int = 0  # members whose external id is not a customer of this shop
    calls: int = 0  # HTTP requests, retries included
    failure: str | None = None  # the sentence that ended this shop's run
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class SyncReport:
    platforms: dict[str, PlatformReport] = field(default_factory=dict)
    skipped: bool = False  # another sync was running


class ShopLoyaltyError(Exception):
    """Nothing to sync to: one sentence."""


# -- the facts and their digest (pure once read) ----------------------------------------------------
def facts_of(session: Session, members: Sequence[Member], now: datetime, value_per_point: Decimal) -> dict[int, Facts]:
    fields = merge_fields(session, members, now)  # tier, balance, next expiry: as Mailchimp gets them
    # merge_fields' values are typed object: POINTS and EXPPOINTS are ints there
    return {member_id: Facts(
        tier=str(f["TIER"]), points=int(cast(int, f["POINTS"])),
        points_value=str((Decimal(int(cast(int, f["POINTS"]))) * value_per_point).quantize(Decimal("0.01"))),
        next_expiry_points=int(cast(int, f["EXPPOINTS"])), next_expiry_date=str(f["EXPDATE"]))
        for member_id, f in fields.items()}


def digest(platform: str, customer_id: str, facts: Facts) -> str:
    """Keyed: equal facts for the same customer, equal digests; nothing to try candidates against."""
    canonical = json.dumps({"platform": platform, "customer": customer_id, **facts.__dict__}, sort_keys=True)
    keyed = hmac.new(installed().lookup_key, b"shop loyalty sync:" + canonical.encode("utf-8"), hashlib.sha256)
    return keyed.hexdigest()[:32]


def metafields(owner: str, facts: Facts) -> list[dict[str, str]]:
    """The Shopify metafields of one customer (``next_expiry_date`` only when something expires)."""
    values = [("tier", "single_line_text_field", facts.tier), ("points", "number_integer", str(facts.points)),
              ("points_value", "number_decimal", facts.points_value),
              ("next_expiry_points", "number_integer", str(facts.next_expiry_points))]
    if facts.next_expiry_date:
        values.append(("next_expiry_date", "date", facts.next_expiry_date))
    return [{"ownerId": owner, "namespace": NAMESPACE, "key": key, "type": kind, "value": value}
            for key, kind, value in values]


def woocommerce_meta(facts: Facts) -> list[dict[str, str]]:
    return [{"key": f"loyalty_{name}", "value": str(value)} for name, value in facts.__dict__.items()]


def customer_gid(customer_id: str) -> str:
    return f"gid://shopify/Customer/{customer_id}"


@dataclass
class Document:
    """One Shopify request: the GraphQL text, its variables, and per alias the targets it covers."""

    query: str
    variables: dict[str, Any]
    covers: dict[str, list[int]]  # alias → indices in the batch


def shopify_document(batch: Sequence[Target], tiers: Sequence[str]) -> Document:
    """The aliased mutations for up to 25 members: metafieldsSet per 25 metafields (a member's never
    split), one metafieldsDelete of the expiry dates that are gone, tagsAdd and tagsRemove where the
    tier differs from the tag the shop has."""
    declarations: list[str] = []
    selections: list[str] = []
    variables: dict[str, Any] = {}
    covers: dict[str, list[int]] = {}
    errors = "userErrors { field message code }"  # MetafieldsSetUserError; the others' UserError has no code
    plain = "userErrors { field message }"

    def add(alias: str, mutation: str, arguments: dict[str, tuple[str, Any]], selection: str,
            indices: list[int]) -> None:
        for name, (kind, value) in arguments.items():
            declarations.append(f"${alias}_{name}: {kind}")
            variables[f"{alias}_{name}"] = value
        args = ", ".join(f"{name}: ${alias}_{name}" for name in arguments)
        selections.append(f"{alias}: {mutation}({args}) {{ {selection} }}")
        covers[alias] = indices

    pending: list[dict[str, str]] = []
    members: list[int] = []
    calls = 0

    def flush() -> None:
        nonlocal calls
        if pending:
            add(f"m{calls}", "metafieldsSet", {"metafields": ("[MetafieldsSetInput!]!", list(pending))},
                f"metafields {{ key }} {errors}", list(members))
            calls += 1
            pending.clear()
            members.clear()

    gone = []
    for index, target in enumerate(batch):
        fields = metafields(customer_gid(target.customer_id), target.facts)
        if len(pending) + len(fields) > METAFIELDS_PER_CALL:
            flush()
        pending.extend(fields)
        members.append(index)
        if not target.facts.next_expiry_date:
            gone.append(index)
    flush()
    if gone:
        add("d", "metafieldsDelete", {"metafields": ("[MetafieldIdentifierInput!]!", [
            {"ownerId": customer_gid(batch[i].customer_id), "namespace": NAMESPACE, "key": "next_expiry_date"}
            for i in gone])}, f"deletedMetafields {{ key }} {plain}", gone)
    for index, target in enumerate(batch):
        if target.shop_tier == target.facts.tier:
            continue
        owner = customer_gid(target.customer_id)
        add(f"a{index}", "tagsAdd", {"id": ("ID!", owner), "tags": ("[String!]!", [TAG_PREFIX + target.facts.tier])},
            f"node {{ id }} {plain}", [index])
        others = [TAG_PREFIX + t for t in dict.fromkeys([*tiers, target.shop_tier or ""])
                  if t and t != target.facts.tier]
        if others:
            add(f"r{index}", "tagsRemove", {"id": ("ID!", owner), "tags": ("[String!]!", others)},
                f"node {{ id }} {plain}", [index])
    query = f"mutation LoyaltyFields({', '.join(declarations)}) {{ {' '.join(selections)} }}"
    return Document(query, variables, covers)


# -- the writers ------------------------------------------------------------------------------------
class ShopifyWriter:
    platform = "shopify"
    batch_size = SHOPIFY_MEMBERS_PER_REQUEST

    def __init__(self, client: ShopifyClient, tiers: Sequence[str]):
        self.client, self.tiers = client, list(tiers)

    def write(self, batch: list[Target]) -> Outcome:
        document = shopify_document(batch, self.tiers)
        outcome = Outcome()
        body = {"query": document.query, "variables": document.variables}
        for _ in range(MAX_THROTTLED):
            outcome.calls += 1
            answer = self.client.api.json("POST", self.client.path, json=body)
            errors = answer.get("errors") if isinstance(answer, dict) else None
            code = _code(errors)
            if code == "THROTTLED":
                from workers.shop_api.shopify import throttle_wait

                self.client.api.sleep(throttle_wait(answer, 10 * len(document.covers)))
                continue
            if errors or not isinstance(answer.get("data"), dict):
                raise ShopApiError(f"Shopify refused the loyalty fields ({code or 'error'}); check that "
                                   "SHOPIFY_ADMIN_TOKEN has the write_customers scope and SHOPIFY_API_VERSION.")
            return self._sort(batch, document, answer["data"], outcome)
        raise ShopApiError(f"Shopify throttled the loyalty fields {MAX_THROTTLED} times in a row; the next sync "
                           "sends them again.")

    def _sort(self, batch: list[Target], document: Document, data: dict[str, Any], outcome: Outcome) -> Outcome:
        """Per member: written, refused (a userError names it), or not written (its metafieldsSet call
        was refused for a neighbour's value: atomic), from each alias's answer."""
        refused: dict[int, str] = {}
        unwritten: set[int] = set()
        for alias, indices in document.covers.items():
            result = data.get(alias)
            if not isinstance(result, dict):
                unwritten.update(indices)
                continue
            problems = result.get("userErrors") or []
            inputs = document.variables.get(f"{alias}_metafields") or []
            for problem in problems:
                path = problem.get("field") or []
                reason = ("metafields" if alias[0] in "md" else "tags") + ": " + str(
                    problem.get("message") or problem.get("code") or "refused")[:150]
                named = indices
                if inputs and len(path) > 1 and str(path[1]).isdigit() and int(path[1]) < len(inputs):
                    owner = inputs[int(path[1])]["ownerId"]  # the n-th metafield of the call: whose?
                    named = [i for i in indices if customer_gid(batch[i].customer_id) == owner] or indices
                for i in named:
                    refused.setdefault(i, reason)
            if problems and alias[0] == "m":
                unwritten.update(indices)  # atomic: none of this call's metafields were written
        for index, target in enumerate(batch):
            if index in refused:
                outcome.errors.append((target, refused[index]))
            elif index not in unwritten:
                outcome.synced.append(target)
        return outcome


def _code(errors: Any) -> str | None:
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return (errors[0].get("extensions") or {}).get("code")
    return None


class WooCommerceWriter:
    platform = "woocommerce"
    batch_size = WOOCOMMERCE_BATCH

    def __init__(self, client: WooCommerceClient, tiers: Sequence[str]):
        self.client = client

    def write(self, batch: list[Target]) -> Outcome:
        from workers.shop_api.woocommerce import PREFIX

        outcome = Outcome(calls=1)
        body = {"update": [{"id": int(t.customer_id), "meta_data": woocommerce_meta(t.facts)} for t in batch]}
        answer = self.client.api.json("POST", f"{PREFIX}/customers/batch", json=body)
        items = answer.get("update") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise ShopApiError("WooCommerce's answer to POST customers/batch is not a batch result; check "
                               "WOOCOMMERCE_URL and that the key has Read/Write access.")
        by_id = {t.customer_id: t for t in batch}
        for item in items:
            target = by_id.pop(str(item.get("id")), None) if isinstance(item, dict) else None
            if target is None:
                continue
            if item.get("error"):
                problem = item["error"]
                reason = f"{problem.get('code') or 'error'}: {problem.get('message') or ''}"
                outcome.errors.append((target, reason[:200]))
            else:
                outcome.synced.append(target)
        return outcome  # members missing from the answer stay for the next run



def writer_for(platform: str, client: ShopClient, tiers: Sequence[str]) -> ShopifyWriter | WooCommerceWriter:
    if isinstance(client, ShopifyClient):
        return ShopifyWriter(client, tiers)
    if isinstance(client, WooCommerceClient):
        return WooCommerceWriter(client, tiers)
    raise ShopLoyaltyError(f"{platform}'s customers cannot carry the tier; the loyalty fields are written to "
                           f"{' and '.join(PLATFORMS)} only.")


WRITE_ACCESS = {"shopify": "SHOPIFY_ADMIN_TOKEN (an Admin API access token with write_customers)",
                "woocommerce": "WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET (a REST API key with "
                               "Read/Write access)"}


# -- the sync ---------------------------------------------------------------------------------------
def configured(settings: Settings) -> list[str]:
    return [p for p in PLATFORMS if getattr(settings.shop, p) is not None]


def _in_shop(platform: str) -> ColumnElement[bool]:
    return exists().where(ShopVersion.resource == literal(f"{platform}:customer:", String) + Member.external_id)


def _candidates(platform: str) -> ColumnElement[bool]:
    row = ShopCustomer
    changed = or_(
        row.member_id.is_(None),
        Member.updated_at > row.synced_at,
        exists().where(PointEntry.member_id == Member.id, PointEntry.created_at > row.synced_at),
    )
    return and_(Member.erased_at.is_(None), _in_shop(platform), changed)


_Columns = TypeVarTuple("_Columns")


def _joined(platform: str, query: Select[*_Columns]) -> Select[*_Columns]:
    return (query.select_from(Member)
            .outerjoin(ShopCustomer, and_(ShopCustomer.member_id == Member.id, ShopCustomer.platform == platform)))


def sync_shops(runtime: Runtime, platforms: Sequence[str] | None = None, *, progress: Progress | None = None,
               **api: Any) -> SyncReport:
    """Write each configured shop's changed members (see the module doc); ``api``: the clients' options
    (``waits``, ``sleep``)."""
    chosen = list(platforms) if platforms is not None else configured(runtime.settings)
    if not chosen:
        raise ShopLoyaltyError("No shop's admin API is configured for writing (Shopify: SHOPIFY_SHOP_DOMAIN and "
                               "SHOPIFY_ADMIN_TOKEN; WooCommerce: WOOCOMMERCE_URL, WOOCOMMERCE_CONSUMER_KEY and "
                               "WOOCOMMERCE_CONSUMER_SECRET); PrestaShop customers cannot carry the tier.")
    report = SyncReport()
    with only_one(runtime.engine, _LOCK_KEY) as ours:
        if not ours:
            report.skipped = True
            return report
        for platform in chosen:
            report.platforms[platform] = _sync_platform(runtime, platform, progress, api)
    return report


def _sync_platform(runtime: Runtime, platform: str, progress: Progress | None, api: dict[str, Any]) -> PlatformReport:
    from workers.shop_sync import open_client

    report = PlatformReport(platform)
    started = utcnow()
    synced_at = started - OVERLAP
    with runtime.sessions() as session:
        report.candidates = session.scalar(_joined(platform, select(func.count())).where(_candidates(platform))) or 0
        report.not_in_shop = session.scalar(select(func.count()).select_from(Member).where(
            Member.erased_at.is_(None), ~_in_shop(platform))) or 0
    if report.candidates == 0:
        _log(report)
        return report
    client = open_client(runtime.settings, platform, **api)
    client.api.setting = WRITE_ACCESS[platform]  # what a refused key lacks here is the right to write
    writer = writer_for(platform, client, runtime.program.tiers.names)
    done = 0
    try:
        for chunk, unchanged in _chunks(_targets(runtime, platform, started, synced_at, report), writer.batch_size):
            done += unchanged
            if chunk:
                try:
                    outcome = writer.write(chunk)
                except ShopApiError as error:  # retried already: the rest waits for the next run
                    report.failure = str(error)
                    report.left += report.candidates - done  # this request's members and those not read yet
                    log.error("shop_loyalty.request_failed", platform=platform, members=len(chunk), error=str(error))
                    break
                done += _record(runtime, platform, outcome, chunk, synced_at, report)
            if progress:
                progress(platform, done, report.candidates)
    finally:
        client.close()
    _log(report)
    return report


def _chunks(pages: Iterator[tuple[list[Target], int]], size: int) -> Iterator[tuple[list[Target], int]]:
    """Targets regrouped in requests of ``size`` (the last one shorter), with the unchanged counts."""
    pending: list[Target] = []
    for targets, unchanged in pages:
        pending.extend(targets)
        yield [], unchanged
        while len(pending) >= size:
            yield pending[:size], 0
            pending = pending[size:]
    if pending:
        yield pending, 0


def _targets(runtime: Runtime, platform: str, started: datetime, synced_at: datetime,
             report: PlatformReport) -> Iterator[tuple[list[Target], int]]:
    """Pages of changed members as targets, with how many were unchanged (those only get their sync
    time moved on)."""
    last_id = 0
    value = runtime.program.points.value_per_point
    while True:
        with transaction(runtime.sessions) as session:
            rows = session.execute(
                _joined(platform, select(Member, ShopCustomer.digest, ShopCustomer.tier))
                .where(_candidates(platform), Member.id > last_id).order_by(Member.id).limit(PAGE)).all()
            if not rows:
                break
            last_id = rows[-1][0].id
            members = [row[0] for row in rows]
            facts = facts_of(session, members, started, value)
            batch, unchanged = [], []
            for member, known, shop_tier in rows:
                if not member.external_id.isdigit():
                    continue  # not a customer id of this shop (cannot happen for these platforms)
                key = digest(platform, member.external_id, facts[member.id])
                if key == known:
                    unchanged.append(member.id)
                else:
                    batch.append(Target(member.id, member.external_id, facts[member.id], key, shop_tier))
            if unchanged:
                table = cast(Table, ShopCustomer.__table__)  # a mapped class's __table__ is typed FromClause
                session.execute(table.update().values(synced_at=synced_at).where(
                    ShopCustomer.platform == platform, ShopCustomer.member_id.in_(unchanged)))
        report.unchanged += len(unchanged)
        yield batch, len(unchanged)


def _record(runtime: Runtime, platform: str, outcome: Outcome, chunk: list[Target], synced_at: datetime,
            report: PlatformReport) -> int:
    report.calls += outcome.calls
    rows = [{"platform": platform, "member_id": t.member_id, "digest": t.digest, "tier": t.facts.tier,
             "state": ShopCustomerState.SYNCED, "reason": None, "synced_at": synced_at} for t in outcome.synced]
    for target, reason in outcome.errors:
        rows.append({"platform": platform, "member_id": target.member_id, "digest": target.digest,
                     "tier": target.shop_tier, "state": ShopCustomerState.ERROR, "reason": reason,
                     "synced_at": synced_at})
        report.reasons[reason] = report.reasons.get(reason, 0) + 1
    report.synced += len(outcome.synced)
    report.retagged += sum(t.shop_tier != t.facts.tier for t in outcome.synced) if platform == "shopify" else 0
    report.errors += len(outcome.errors)
    report.left += len(chunk) - len(rows)
    if rows:
        with transaction(runtime.sessions) as session:
            dialect = session.get_bind().dialect.name
            builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = builder(ShopCustomer).values(rows)
            session.execute(statement.on_conflict_do_update(
                index_elements=["platform", "member_id"],
                set_={name: statement.excluded[name] for name in ("digest", "tier", "state", "reason", "synced_at")}))
    return len(chunk)


def _log(report: PlatformReport) -> None:
    log.info("shop_loyalty.synced", platform=report.platform, candidates=report.candidates, synced=report.synced,
             retagged=report.retagged, unchanged=report.unchanged, errors=report.errors, left=report.left,
             not_in_shop=report.not_in_shop, calls=report.calls, failed=report.failure is not None)


@dramatiq.actor(broker=_placeholder, queue_name=CAMPAIGN_QUEUE, max_retries=0, time_limit=3_600_000)
def sync_shop_customers() -> None:
    """The clock's sync of tiers and balances to each configured Shopify or WooCommerce."""
    runtime = get_runtime()
    if not configured(runtime.settings):
        log.info("shop_loyalty.not_configured", detail="no Shopify or WooCommerce admin API: nothing to write")
        return
    if sync_shops(runtime).skipped:
        log.info("shop_loyalty.sync_skipped", reason="another sync is running")


ACTORS: list[dramatiq.Actor[Any, Any]] = [sync_shop_customers]
