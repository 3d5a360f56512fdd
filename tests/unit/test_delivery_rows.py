"""The sender reads a chunk as plain rows (``workers/delivery.py``): the small objects it composes,
claims and records with say what the ORM's rows would say."""

from __future__ import annotations

import dataclasses

import pytest

from models.delivery import Delivery
from models.member import Member
from workers.delivery import _Planned, _Recipient


@pytest.mark.parametrize("payload", [None, {}, {"step": 2}, {"resend_of": "birthday:M0042:2027"}])
def test_a_planned_row_stands_for_the_occurrence_the_orm_row_stands_for(payload):
    key = "oneoff:birthday:M0042:1"
    values = dict(id=7, occurrence_key=key, campaign="birthday", member_id=42, channel="email", reward_points=50,
                  occurrence_date="2027-06-15", payload=payload, variant=None, attempts=0)
    assert _Planned(**values).stands_for == Delivery(**values).stands_for
    assert _Planned(**values).stands_for == (payload or {}).get("resend_of", key)


def test_the_rows_carry_only_columns_of_their_tables():
    delivery_columns, member_columns = set(Delivery.__table__.c.keys()), set(Member.__table__.c.keys())
    assert {f.name for f in dataclasses.fields(_Planned)} <= delivery_columns
    assert {f.name for f in dataclasses.fields(_Recipient)} - {"balance"} <= member_columns

