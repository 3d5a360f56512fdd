"""(e) Mailchimp calls per 10,000 members synced.

The product's bulk sync (``workers.mailchimp_sync.sync_members``) runs once over the whole
benchmark base (its first sync: every member with email consent and a usable address is new to
Mailchimp) against the local Mailchimp server (``loyalty/standins/mailchimp_server.py``), which counts
every API call it answers (``total_calls``). Reported: ``calls × 10,000 / members synced``; the
target is at most 20, which is what 500 members per batch call gives.

When the sync or the local server is missing (an older checkout), the row says "not available
yet" and why; it never estimates.
"""

from __future__ import annotations

import importlib
import math
import time

from benchmarks.common import Bench, Mismatch, Row, worker_env

TARGET = 20
MAILCHIMP_BATCH_MAX = 500  # members per batch subscribe call

#: The audience's merge fields as the product sends them (see the sync's module doc).
MERGE_FIELDS = {"TIER": "text", "POINTS": "number", "EXPPOINTS": "number", "EXPDATE": "date", "BDAY": "birthday",
                "LOCALE": "text"}

#: Where the bulk sync is looked for, in order.
ENTRY_POINTS = [("workers.mailchimp_sync", "sync_members")]


def find_sync():
    for module_name, function in ENTRY_POINTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, function):
            return f"{module_name}.{function}", getattr(module, function)
    return None


def measure(bench: Bench) -> list[Row]:
    target = f"≤ {TARGET} calls"
    item = "calls per 10,000 synced"
    try:
        from loyalty.standins.mailchimp_server import DEFAULT_API_KEY, MailchimpServer
    except Exception:  # noqa: BLE001 - any failure means we cannot use it
        return [Row("e. mailchimp", item, status="not available yet", target=target,
                    note="no local Mailchimp server (loyalty/standins/mailchimp_server.py)")]
    found = find_sync()
    if found is None:
        return [Row("e. mailchimp", item, status="not available yet", target=target,
                    note="the local server exists; no bulk sync in workers/ yet",
                    details={"looked_for": [f"{m}.{f}" for m, f in ENTRY_POINTS]})]
    name, sync = found

    from core.settings import load_settings
    from workers.runtime import build_runtime

    server = MailchimpServer(merge_fields=MERGE_FIELDS).start()
    runtime = None
    try:
        env = worker_env(
            bench.database,
            MAILCHIMP_API_KEY=DEFAULT_API_KEY, MAILCHIMP_SERVER_PREFIX=DEFAULT_API_KEY.rpartition("-")[2],
            MAILCHIMP_LIST_ID=server.default_list_id, MAILCHIMP_API_BASE_URL=server.base_url,
            MAILCHIMP_TIMEOUT_SECONDS="60",
        )
        runtime = build_runtime(load_settings(env))
        started = time.monotonic()
        report = sync(runtime)
        seconds = time.monotonic() - started
        calls = server.total_calls
        by_endpoint = dict(server.calls)
        in_mailchimp = len(server.members())
    finally:
        if runtime is not None:
            runtime.close()
        server.stop()

    synced = report.sent
    if synced == 0:
        return [Row("e. mailchimp", item, status="nothing synced", target=target, note=f"{name}: {report}")]
    if in_mailchimp < report.created:
        raise Mismatch(f"mailchimp: the sync says it created {report.created} members, the server holds {in_mailchimp}")
    per_10k = calls * 10_000 / synced
    # 20 calls per 10,000 is 500 members a call, Mailchimp's maximum: the fewest calls that can sync
    # N members is ceil(N / 500), which is a little over 20 per 10,000 when the last call is not full.
    fewest = math.ceil(synced / MAILCHIMP_BATCH_MAX)
    return [Row(
        "e. mailchimp", item, ours=per_10k, unit="calls", target=target,
        met=per_10k <= TARGET or calls <= fewest,
        note=f"{synced:,} members in {calls:,} calls ({seconds:.0f} s), the fewest possible being {fewest:,} "
             f"(500 a call); {report.errors} errors, {report.failed_chunks} failed chunks",
        details={"entry_point": name, "calls": calls, "synced": synced, "seconds": seconds,
                 "candidates": report.candidates, "created": report.created, "updated": report.updated,
                 "errors": report.errors, "failed_chunks": report.failed_chunks, "server_members": in_mailchimp,
                 "by_endpoint": by_endpoint},
    )]
