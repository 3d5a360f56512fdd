"""The shop's brand (``brand:`` in ``campaigns/program.yaml``) and what every email template sees of it.

Every HTML email extends one base layout (``campaigns/templates/_layout/``): the logo, the call to
action, and a footer with the shop's postal address, the reason the member gets the email, the
unsubscribe link and a link to the shop. The brand fills it in. :func:`template_globals` is the one
place that turns the brand into template variables (``brand.*``); :func:`tier_name` and
:func:`tier_benefits` give the tier names and benefits per locale, for the ``tier_name`` and
``tier_benefits`` filters. The renderer gives them to every template, so no kind's context has to
carry them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator

from campaigns.schema import StrictModel

if TYPE_CHECKING:
    from campaigns.program import Program
    from campaigns.schema import CampaignBase

_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_URL = re.compile(r"^https?://[^\s/?#<>\"']+[^\s<>\"']*$")
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")


def _colour(value: object) -> str:
    if not isinstance(value, str) or not _COLOUR.match(value):
        shown = "nothing" if value is None else repr(value)
        raise ValueError(f"{shown} is not a colour; write it as \"#rrggbb\" in quotes (unquoted, YAML reads # as "
                         "the start of a comment)")
    return value


def _url(value: str) -> str:
    if not isinstance(value, str) or not _URL.match(value):
        raise ValueError(f"{value!r} is not a full web address; write it as https://... (email clients "
                         "need an absolute address)")
    return value


class BrandColors(StrictModel):
    primary: str = "#1f4f8b"  # the header band, the button, links
    button_text: str = "#ffffff"  # the button's label
    text: str = "#1f2937"  # body text
    background: str = "#f3f4f6"  # around the message's white card

    _colours = field_validator("primary", "button_text", "text", "background", mode="before")(
        lambda cls, v: _colour(v))


class Brand(StrictModel):
    shop_name: Annotated[str, Field(min_length=1, max_length=100)] = "The Loyalty Club"
    url: str | None = None  # the shop's home page: the default call to action and the footer's link
    logo_url: str | None = None  # an absolute PNG/JPEG address (no SVG: Gmail and Outlook drop it)
    logo_width: Annotated[int, Field(ge=16, le=600)] = 160  # px; the height follows the image
    colors: BrandColors = BrandColors()
    postal_address: Annotated[str, Field(min_length=5, max_length=300)] | None = None  # required to send marketing email
    support_email: str | None = None

    _urls = field_validator("url", "logo_url")(lambda cls, v: v if v is None else _url(v))

    @field_validator("support_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an email address; write it as help@your-shop.example")
        return value

    @field_validator("shop_name", "postal_address")
    @classmethod
    def _trimmed(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("it is empty; write the text or remove the key")
        return value.strip() if value is not None else None


def lacks_postal_address(campaign: CampaignBase, brand: Brand) -> bool:
    """True when ``campaign`` is a marketing email (it counts toward the frequency cap and has an
    email message) and ``brand`` has no postal address for its footer, which the US CAN-SPAM Act
    requires in every commercial email. ``loyalty validate`` refuses such a campaign and the worker
    sends nothing of it (``campaigns.validation.check_postal_address`` says so in one sentence)."""
    return not campaign.frequency_cap_exempt and campaign.messages.email is not None and not brand.postal_address


def localized(texts: dict[str, str], locale: str) -> str | None:
    """``texts[locale]``, else its language's (``fr_CA`` → ``fr``), else None."""
    return texts.get(locale) or texts.get(locale.split("_")[0])


def tier_name(program: Program | None, tier: str, locale: str) -> str:
    """The tier's name for members in ``locale`` (``gold`` → "Gold", "Or"): the program's ``title``
    for that locale or its language, else the identifier with capitals ("gold_plus" → "Gold Plus")."""
    level = program.tiers.level(tier) if program is not None else None
    return (localized(level.title, locale) if level else None) or tier.replace("_", " ").title()


def tier_benefits(program: Program | None, tier: str, locale: str) -> str:
    """The tier's benefits in ``locale`` (or its language, else the first given; "" when none)."""
    level = program.tiers.level(tier) if program is not None else None
    benefits = level.benefits if level else {}
    return localized(benefits, locale) or next(iter(benefits.values()), "")


def template_globals(program: Program | None) -> dict[str, Any]:
    """What every template sees of the program, whatever its kind: ``brand``.

    ``brand.postal_address`` is the address on one line (its lines joined by ", ", for the text
    part); ``brand.postal_address_lines`` keeps the lines as written in the program file.
    """
    brand = program.brand if program is not None else Brand()
    address = [line.strip() for line in (brand.postal_address or "").splitlines() if line.strip()]
    return {
        "brand": {
            "shop_name": brand.shop_name,
            "url": brand.url,
            "logo_url": brand.logo_url,
            "logo_width": brand.logo_width,
            "colors": brand.colors.model_dump(),
            "postal_address": ", ".join(address) or None,
            "postal_address_lines": address,
            "support_email": brand.support_email,
        },
    }
