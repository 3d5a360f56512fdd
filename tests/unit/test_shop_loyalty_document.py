"""The Shopify request that carries members' loyalty fields, and the digest that spares unchanged ones."""

from __future__ import annotations

from collections import Counter

from loyalty.standins import shopify_graphql as gql
from workers.shop_loyalty import Facts, Target, digest, shopify_document, woocommerce_meta

TIERS = ["bronze", "silver", "gold"]


def target(n: int, tier: str = "silver", shop_tier: str | None = "silver", expiry: str = "2027-05-01") -> Target:
    facts = Facts(tier, 650, "6.50", 650 if expiry else 0, expiry)
    return Target(n, str(7300000000000 + n), facts, digest("shopify", str(n), facts), shop_tier)


def roots(document) -> Counter:
    return Counter(name for _, name, _ in gql.aliased_fields(document.query, document.variables))


def test_25_members_with_an_expiry_take_five_full_metafield_calls_and_no_member_is_split():
    document = shopify_document([target(n) for n in range(25)], TIERS)
    assert roots(document) == {"metafieldsSet": 5}  # no tier changed: no tag mutation
    for alias, indices in document.covers.items():
        inputs = document.variables[f"{alias}_metafields"]
        assert len(inputs) == 25 and len(indices) == 5
        assert {i["ownerId"] for i in inputs} == {f"gid://shopify/Customer/{7300000000000 + n}" for n in indices}


def test_a_changed_tier_adds_its_tag_and_removes_the_others_and_a_gone_expiry_is_deleted():
    batch = [target(0, "gold", "silver"), target(1, "silver", None, expiry=""), target(2)]
    document = shopify_document(batch, TIERS)
    parsed = {alias: (name, args) for alias, name, args in gql.aliased_fields(document.query, document.variables)}
    assert Counter(name for name, _ in parsed.values()) == {"metafieldsSet": 1, "metafieldsDelete": 1,
                                                            "tagsAdd": 2, "tagsRemove": 2}
    assert parsed["a0"][1] == {"id": "gid://shopify/Customer/7300000000000", "tags": ["loyalty-tier:gold"]}
    assert parsed["r0"][1]["tags"] == ["loyalty-tier:bronze", "loyalty-tier:silver"]
    assert parsed["r1"][1]["tags"] == ["loyalty-tier:bronze", "loyalty-tier:gold"]
    assert parsed["d"][1]["metafields"] == [{"ownerId": "gid://shopify/Customer/7300000000001",
                                             "namespace": "loyalty", "key": "next_expiry_date"}]
    assert len(parsed["m0"][1]["metafields"]) == 5 + 4 + 5


def test_members_without_an_expiry_have_four_metafields_so_six_fit_in_a_call():
    document = shopify_document([target(n, expiry="") for n in range(12)], TIERS)
    assert [len(document.covers[a]) for a in ("m0", "m1")] == [6, 6]


def test_the_digest_changes_with_any_fact_and_with_the_customer_but_not_otherwise():
    facts = Facts("silver", 650, "6.50", 650, "2027-05-01")
    same = digest("shopify", "1", facts)
    assert same == digest("shopify", "1", Facts("silver", 650, "6.50", 650, "2027-05-01"))
    assert same != digest("shopify", "1", Facts("silver", 651, "6.51", 650, "2027-05-01"))
    assert same != digest("shopify", "1", Facts("gold", 650, "6.50", 650, "2027-05-01"))
    assert same != digest("shopify", "2", facts) != digest("woocommerce", "1", facts)
    assert len(same) == 32


def test_woocommerce_meta_data_names_each_fact():
    assert woocommerce_meta(Facts("gold", 2100, "21.00", 0, "")) == [
        {"key": "loyalty_tier", "value": "gold"}, {"key": "loyalty_points", "value": "2100"},
        {"key": "loyalty_points_value", "value": "21.00"}, {"key": "loyalty_next_expiry_points", "value": "0"},
        {"key": "loyalty_next_expiry_date", "value": ""}]
