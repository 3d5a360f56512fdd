"""The inbox and privacy commands as support staff run them: `loyalty inbox`, `inbox retry`,
`member export` and `member erase`, in real subprocesses against the test database."""

from __future__ import annotations

import json

from tests.integration.test_shop_inbox import CUSTOMER_ID, apply_all, deliver, load
from tests.integration.test_support_commands import loyalty


def test_export_then_erase_a_member_from_the_cli(runtime, env):
    apply_all([deliver(runtime, "customers/create", load("shopify_customer"), event_id="c")])
    apply_all([deliver(runtime, "orders/paid", load("shopify_order"), event_id="o")])

    exported = loyalty(env, "member", "export", CUSTOMER_ID)
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["member"]["email"] == "ada@example.com" and data["member"]["first_name"] == "Ada"
    assert [o["order_id"] for o in data["orders"]] == ["820982911946154508"]
    assert sum(p["points"] for p in data["points"]) == 140
    assert {e["topic"] for e in data["shop_events"]} == {"customers/create", "orders/paid"}

    erased = loyalty(env, "member", "erase", "ada@example.com", "--reason", "GDPR request, ticket 7", "--as", "alice")
    assert erased.returncode == 0, erased.stderr
    assert f"Member {CUSTOMER_ID} erased" in erased.stdout and "ada@example.com" not in erased.stdout

    after = json.loads(loyalty(env, "member", "export", CUSTOMER_ID).stdout)
    assert after["member"]["email"] is None and after["member"]["first_name"] is None
    assert after["member"]["erased_at"] is not None
    assert sum(p["points"] for p in after["points"]) == 140  # the anonymous ledger stays
    assert any(a["action"] == "member.erased" and a["actor"] == "alice" for a in after["audit"])

    again = loyalty(env, "member", "erase", CUSTOMER_ID, "--reason", "twice")
    assert again.returncode == 2 and "was already erased" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_the_inbox_lists_a_rejected_entry_with_its_reason_and_retries_it(runtime, env):
    bad = {**load("shopify_order"), "financial_status": "something_new"}
    rejected = deliver(runtime, "orders/paid", bad, event_id="bad")
    apply_all([rejected])

    listed = loyalty(env, "inbox", "--state", "rejected", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["state"], row["topic"]) == (rejected, "rejected", "orders/paid")
    assert row["reason"] == "the order's financial_status 'something_new' is unknown"
    assert "ada@example.com" not in listed.stdout  # the payload is never shown

    retried = loyalty(env, "inbox", "retry", str(rejected))
    assert retried.returncode == 0, retried.stderr
    assert f"Entry {rejected}: rejected" in retried.stdout  # still unknown: rejected again, with its reason

    applied = deliver(runtime, "customers/create", load("shopify_customer"), event_id="c")
    apply_all([applied])
    refused = loyalty(env, "inbox", "retry", str(applied))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"error: Inbox entry {applied} is not rejected or waiting; "
                                      "`loyalty inbox` lists the entries.")
