"""The holdout: a stable, documented share of a campaign's audience that is not messaged.

A member is held out of campaign C when the first 8 bytes of sha256("{C}:{member external id}"),
read as a big-endian integer and divided by 2**64, are below the campaign's share. The same member
is always in or out of the same campaign, on every run and every machine, so uplift can be measured.
"""

from __future__ import annotations

import hashlib


def holdout_position(campaign_id: str, member_external_id: str) -> float:
    digest = hashlib.sha256(f"{campaign_id}:{member_external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_held_out(campaign_id: str, member_external_id: str, share: float) -> bool:
    return share > 0 and holdout_position(campaign_id, member_external_id) < share
