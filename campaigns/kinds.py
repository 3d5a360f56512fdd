"""The registry of campaign kinds: one :class:`campaigns.kinds_api.Kind` entry a kind, in one list.

A kind is a module (``campaigns/birthday.py``: its YAML model, audience, re-check, template and
sample contexts, one-off occurrence, ending in ``KIND = Kind(...)``) plus its line below. The
loader's list of kinds (:data:`CAMPAIGN_KINDS`), planning, the sender, one-off sends and ``loyalty
validate`` all read this registry; ``tests/unit/test_kind_contract.py`` checks every entry.
"""

from __future__ import annotations

from typing import Any

from campaigns import birthday, member_day, points_expiring, tier_upgrade, winback
from campaigns.kinds_api import Kind
from campaigns.schema import CampaignBase

KINDS: dict[str, Kind[Any]] = {
    kind.name: kind
    for kind in (
        birthday.KIND,
        points_expiring.KIND,
        winback.KIND,
        tier_upgrade.KIND,
        member_day.KIND,
    )
}

#: Every kind a definition may name, by its ``kind`` value: the registry's models.
CAMPAIGN_KINDS: dict[str, type[CampaignBase]] = {name: kind.model for name, kind in KINDS.items()}


def kind_of(campaign: CampaignBase) -> Kind[Any]:
    return KINDS[campaign.kind]
