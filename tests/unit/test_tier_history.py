"""The spend over time: which upgrades orders make and when, and when a spend fell below its tier."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from campaigns.program import load_program
from core.settings import DEFAULT_PROGRAM_FILE
from models.tier import PlacedOrder, Upgrade, fell_below, upgrades

RULES = load_program(DEFAULT_PROGRAM_FILE).tiers  # bronze 0, silver 500, gold 2000 over 365 days
UTC = UTC
DAY = timedelta(days=1)
T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)


def order(day: int, total: str, order_id: str) -> PlacedOrder:
    return PlacedOrder(T0 + day * DAY, Decimal(total), order_id)


def test_each_upgrade_is_dated_when_the_order_reaching_it_was_placed():
    orders = [order(10, "1500", "B"), order(0, "600", "A")]  # in any order
    assert list(upgrades(RULES, "bronze", None, orders, since=T0)) == [
        Upgrade("silver", T0, "A"), Upgrade("gold", T0 + 10 * DAY, "B")]


def test_an_order_out_of_the_window_of_a_later_one_does_not_count_for_it():
    orders = [order(0, "1500", "A"), order(365, "600", "B")]  # A left the window the instant B was placed
    assert list(upgrades(RULES, "bronze", None, orders, since=T0)) == [
        Upgrade("silver", T0, "A")]


def test_orders_placed_at_one_instant_make_one_upgrade_and_none_before_the_current_tier_was_reached():
    orders = [order(5, "1500", "A"), order(5, "600", "B")]
    assert list(upgrades(RULES, "bronze", None, orders, since=T0)) == [Upgrade("gold", T0 + 5 * DAY, "B")]
    assert list(upgrades(RULES, "silver", T0 + 9 * DAY, orders, since=T0)) == [Upgrade("gold", T0 + 9 * DAY, "B")]
    assert list(upgrades(RULES, "gold", T0, orders, since=T0)) == []


def test_the_spend_fell_below_when_the_order_holding_it_up_left_the_window():
    orders = [order(0, "600", "A"), order(100, "100", "B")]
    assert fell_below(RULES, "silver", T0, orders, now=T0 + 400 * DAY) == T0 + 365 * DAY
    # still at or above the tier: it did not fall
    assert fell_below(RULES, "silver", T0, orders, now=T0 + 300 * DAY) is None


def test_a_spend_that_never_reached_the_tier_since_it_was_reached_fell_at_no_known_moment():
    # the order that reached silver was refunded: it is not among the placed orders any more
    assert fell_below(RULES, "silver", T0, [order(0, "100", "B")], now=T0 + 10 * DAY) is None
    assert fell_below(RULES, "platinum", T0, [], now=T0) is None
