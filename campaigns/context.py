"""The variables every message template sees, and a sample member to check templates against.

Templates see plain values, never ORM objects, so what a marketer can reach is exactly this list
(documented in the README's template reference):

- ``member.first_name``, ``member.last_name``, ``member.external_id``, ``member.tier``,
  ``member.points_balance``
- ``reward.points`` (``None`` when the campaign grants nothing), ``reward.expires_on`` (a date)
- ``campaign.id``, ``campaign.name``
- ``unsubscribe_url``
- the kind's own variables (see each kind's ``template_context``)
- filters: ``number``, ``date`` (``long`` by default, or ``short``/``medium``/``full``), ``money``
"""

from __future__ import annotations

from datetime import date
from typing import Any

from campaigns.kinds import kind_of
from campaigns.kinds_api import SendCheck
from campaigns.program import Program
from campaigns.schema import CampaignBase


def common_context(
    campaign: CampaignBase,
    member: Any,  # a Member, or the sample member below
    reward_points: int | None,
    *,
    points_balance: int,
    unsubscribe_url: str,
    reward_expires_on: date | None = None,
) -> dict[str, Any]:
    return {
        "member": {
            "first_name": member.first_name or "",
            "last_name": member.last_name or "",
            "external_id": member.external_id,
            "tier": member.tier,
            "points_balance": points_balance,
        },
        "reward": {"points": reward_points, "expires_on": reward_expires_on},
        "campaign": {"id": campaign.id, "name": campaign.name},
        "unsubscribe_url": unsubscribe_url,
    }


def message_context(check: SendCheck[Any], facts: Any, *, points_balance: int, unsubscribe_url: str,
                    reward_points: int | None, reward_expires_on: date | None = None) -> dict[str, Any]:
    """Every variable of one message: the common ones and the kind's (``facts``: what the kind's
    ``facts`` read for this message)."""
    context = common_context(check.campaign, check.member, reward_points, points_balance=points_balance,
                             unsubscribe_url=unsubscribe_url, reward_expires_on=reward_expires_on)
    context.update(kind_of(check.campaign).template_context(check, facts))
    return context


class _SampleMember:
    first_name, last_name, external_id, tier, locale = "Alex", "Martin", "M0001", "silver", "en"


def sample_context(campaign: CampaignBase, program: Program) -> dict[str, Any]:
    """A realistic member, for ``loyalty validate`` to render every template against."""
    context = common_context(campaign, _SampleMember(), 250, points_balance=1234,
                             unsubscribe_url="https://example.com/unsubscribe/sample", reward_expires_on=date(2028, 2, 28))
    context.update(kind_of(campaign).sample_context(campaign, program))
    return context
