"""The pure rules: earning, tiers, quiet hours, holdout, coupons, member days."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from campaigns.holdout import holdout_position, is_held_out
from campaigns.member_day import is_member_day
from campaigns.program import load_program
from campaigns.winback import coupon_code
from core.errors import DefinitionError
from core.settings import DEFAULT_PROGRAM_FILE
from models.points import allocate_oldest_first

PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
UTC = UTC


def test_a_point_per_whole_currency_unit():
    assert PROGRAM.points.for_order_total(Decimal("12.99")) == 12
    assert PROGRAM.points.for_order_total(Decimal("0.99")) == 0


@pytest.mark.parametrize("spend, tier", [("0", "bronze"), ("499.99", "bronze"), ("500", "silver"),
                                         ("1999.99", "silver"), ("2000", "gold"), ("90000", "gold")])
def test_the_tier_a_spend_qualifies_for(spend, tier):
    assert PROGRAM.tiers.qualifying(Decimal(spend)) == tier


def test_quiet_hours_defer_sms_to_eight_local_and_leave_the_day_alone():
    quiet = PROGRAM.quiet_hours
    paris = "Europe/Paris"
    assert quiet.next_allowed(datetime(2027, 4, 1, 21, 0, tzinfo=UTC), paris) == datetime(2027, 4, 2, 6, 0, tzinfo=UTC)
    assert quiet.next_allowed(datetime(2027, 4, 2, 3, 0, tzinfo=UTC), paris) == datetime(2027, 4, 2, 6, 0, tzinfo=UTC)
    noon = datetime(2027, 4, 2, 10, 0, tzinfo=UTC)
    assert quiet.next_allowed(noon, paris) == noon
    # 20:59 local is still allowed, 21:00 is not
    assert quiet.next_allowed(datetime(2027, 4, 2, 18, 59, tzinfo=UTC), paris) == datetime(2027, 4, 2, 18, 59, tzinfo=UTC)


def test_the_holdout_is_the_documented_hash_and_about_the_share():
    assert holdout_position("winback", "M0001") == int.from_bytes(
        __import__("hashlib").sha256(b"winback:M0001").digest()[:8], "big") / 2**64
    held = sum(is_held_out("winback", f"M{i:05d}", 0.1) for i in range(20_000))
    assert 1_800 < held < 2_200
    assert not any(is_held_out("birthday", f"M{i:05d}", 0) for i in range(1000))


def test_coupon_codes_are_stable_per_occurrence_and_differ_between_members():
    one = coupon_code("secret", "winback:M1:2027-01-01:2", "BACK")
    assert one == coupon_code("secret", "winback:M1:2027-01-01:2", "BACK")
    assert one != coupon_code("secret", "winback:M2:2027-01-01:2", "BACK")
    assert one != coupon_code("other-secret", "winback:M1:2027-01-01:2", "BACK")
    assert one.startswith("BACK-") and len(one) == 15


def test_member_days_follow_the_rrule():
    first_tuesdays = [d for d in (date(2027, 6, day) for day in range(1, 31)) if is_member_day("FREQ=MONTHLY;BYDAY=1TU", d)]
    assert first_tuesdays == [date(2027, 6, 1)]


def test_redemptions_take_the_lots_that_expire_first_and_never_too_much():
    assert allocate_oldest_first([(1, 100), (2, 50), (3, 500)], 120) == [(1, 100), (2, 20)]
    with pytest.raises(ValueError):
        allocate_oldest_first([(1, 10)], 11)


def test_a_broken_program_file_is_one_sentence_with_its_line(tmp_path):
    path = tmp_path / "program.yaml"
    path.write_text(DEFAULT_PROGRAM_FILE.read_text().replace("min_spend: 500", "min_spend: 5000"))
    with pytest.raises(DefinitionError) as error:
        load_program(path)
    assert "tier levels must start at min_spend 0 and rise strictly" in str(error.value)
    assert str(error.value).startswith(f"{path}, line ")
