"""A/B variants: which variant of a campaign's experiment a member gets, and what it changes.

A member's variant is decided like the holdout, by a hash, so it is the same on every run and
every machine: the first 8 bytes of sha256("{campaign}:{experiment}:{member external id}"), read
as a big-endian integer and divided by 2**64, give a position in [0, 1); the variants, in the
order the YAML lists them, take consecutive slices of that range as wide as their shares (shares
0.5 and 0.5: below 0.5 is the first variant, the rest the second). The holdout hashes
"{campaign}:{member}" without the experiment, so who is held out and who gets which variant are
independent draws: each variant's members are held out in the campaign's share, and the held-out
members are spread over the variants in theirs (held-out members get no message, and their
deliveries record no variant). Renaming the experiment draws members afresh; changing only the
shares moves the members near the slices' edges.

A variant replaces what it names (the email subject, the email's text or HTML template, the SMS
template, the points gift by tier) and keeps the rest of the campaign's messages.
"""

from __future__ import annotations

import hashlib

from campaigns.schema import CampaignBase, Variant


def variant_position(campaign_id: str, experiment: str, member_external_id: str) -> float:
    digest = hashlib.sha256(f"{campaign_id}:{experiment}:{member_external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_variant(campaign: CampaignBase, member_external_id: str) -> Variant | None:
    """The member's variant of the campaign's experiment; None when the campaign has none."""
    experiment = campaign.experiment
    if experiment is None:
        return None
    position = variant_position(campaign.id, experiment.name, member_external_id)
    edge = 0.0
    for variant in experiment.variants:
        edge += variant.share
        if position < edge:
            return variant
    return experiment.variants[-1]  # shares that add up to a hair under 1


def variant_name(campaign: CampaignBase, member_external_id: str) -> str | None:
    variant = choose_variant(campaign, member_external_id)
    return variant.name if variant is not None else None


def as_variant(campaign: CampaignBase, name: str | None) -> CampaignBase:
    """The campaign as the members of variant ``name`` get it; the campaign itself when ``name`` is
    None or no longer one of its variants (a delivery planned before the experiment changed)."""
    variant = campaign.experiment.get(name) if campaign.experiment is not None and name else None
    if variant is None:
        return campaign
    messages = campaign.messages
    changes: dict = {}
    if messages.email is not None:
        email = {key: value for key, value in (("subject", variant.subject), ("text", variant.email_text),
                                               ("html", variant.email_html)) if value is not None}
        if email:
            changes["email"] = messages.email.model_copy(update=email)
    if messages.sms is not None and variant.sms_text is not None:
        changes["sms"] = messages.sms.model_copy(update={"text": variant.sms_text})
    update: dict = {"messages": messages.model_copy(update=changes)} if changes else {}
    reward = getattr(campaign, "reward", None)
    if variant.reward is not None and reward is not None:
        update["reward"] = reward.model_copy(update={"points_by_tier": variant.reward.points_by_tier})
    return campaign.model_copy(update=update) if update else campaign


def variant_reward(campaign: CampaignBase, name: str | None, tier: str) -> tuple[bool, int | None]:
    """(True, points) when variant ``name`` sets the gift (points for ``tier``, None if it has none
    for that tier); (False, None) when the campaign's own gift applies."""
    variant = campaign.experiment.get(name) if campaign.experiment is not None and name else None
    if variant is None or variant.reward is None:
        return False, None
    return True, variant.reward.points_for(tier)


def problems(campaign: CampaignBase) -> list[tuple[list[str | int], str]]:
    """What a variant names that the campaign does not have, as (YAML path, sentence) pairs: a
    subject without an email message or missing a locale, a template for a channel without
    messages, a reward for a campaign that grants none. (Template files are checked by
    ``loyalty validate``, which renders every variant in every locale.)"""
    found: list[tuple[list[str | int], str]] = []
    if campaign.experiment is None:
        return found
    messages = campaign.messages
    for index, variant in enumerate(campaign.experiment.variants):
        where: list[str | int] = ["experiment", "variants", index]
        label = f"variant {variant.name!r}"
        if variant.subject is not None:
            if messages.email is None:
                found.append(([*where, "subject"], f"{label} sets an email subject, but the campaign has no email "
                                                   "message; remove the subject or add messages.email"))
            else:
                missing = [loc for loc in campaign.locales if loc not in variant.subject]
                if missing:
                    found.append(([*where, "subject"], f"{label} has no subject for locale {missing[0]!r}; "
                                                       "give one for every locale the campaign lists"))
        for key, section in (("email_text", messages.email), ("email_html", messages.email), ("sms_text", messages.sms)):
            if getattr(variant, key) is not None and section is None:
                channel = key.split("_")[0]
                found.append(([*where, key], f"{label} sets {key}, but the campaign has no {channel} message; "
                                             f"remove it or add messages.{channel}"))
        if variant.reward is not None and getattr(campaign, "reward", None) is None:
            found.append(([*where, "reward"], f"{label} sets a reward, but the campaign grants none (a {campaign.kind} "
                                              "campaign without a reward: section); remove it or give the campaign one"))
    return found
