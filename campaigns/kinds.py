"""The behaviour behind each campaign kind, looked up by the definition's ``kind``.

A kind module provides:

- ``audience(campaign, ctx: PlanContext) -> Select | None``: who is due at ``ctx.at``, as rows for
  the send ledger, built with :func:`campaigns.audience_sql.delivery_columns`;
- ``recheck(check: SendCheck) -> reason | None``: is it still right to send, just before sending?
  (Consent, tier and the frequency cap are re-checked for every kind by the sender.)
- ``template_context(check: SendCheck) -> dict``: the kind's own template variables;
- ``sample_context(campaign, program) -> dict``: the same, for ``loyalty validate``.
"""

from __future__ import annotations

from types import ModuleType

from campaigns import birthday, member_day, points_expiring, tier_upgrade, winback
from campaigns.schema import CampaignBase

KIND_RULES: dict[str, ModuleType] = {
    "birthday": birthday,
    "points_expiring": points_expiring,
    "winback": winback,
    "tier_upgrade": tier_upgrade,
    "member_day": member_day,
}


def rules_for(campaign: CampaignBase) -> ModuleType:
    return KIND_RULES[campaign.kind]
