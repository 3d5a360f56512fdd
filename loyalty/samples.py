"""Rendered copies of sample messages, written to files a person opens in a browser or an editor.

``loyalty preview`` writes each sample message it shows (real members of the audience) and
``loyalty report --html`` each campaign's message for the sample member (every variant, locale and
channel), and both link to the copies: an email as its HTML part (``.html``) and its text part
(``.txt``), an SMS as its text (``.txt``). Nothing is sent; the copies stay on this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InputError


@dataclass(frozen=True)
class SampleCopy:
    campaign: str
    variant: str | None
    locale: str
    channel: str
    title: str  # the subject, or the SMS's first line
    path: Path  # the HTML part of an email, the text of an SMS
    text_path: Path | None = None  # an email's text part


def _stem(*parts: str | None) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part) for part in parts if part)


def write_copy(folder: Path, stem: str, *, channel: str, subject: str | None, text: str,
               html: str | None) -> tuple[Path, Path | None]:
    """Write one rendered message under ``folder``; returns (its main file, an email's text part)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if channel == "email" and html is not None:
            main = folder / f"{stem}.html"
            main.write_text(html, encoding="utf-8")
            text_path = folder / f"{stem}.txt"
            text_path.write_text(f"Subject: {subject}\n\n{text}" if subject is not None else text, encoding="utf-8")
            return main, text_path
        main = folder / f"{stem}.txt"
        main.write_text(text, encoding="utf-8")
        return main, None
    except OSError as exc:
        raise InputError(f"Cannot write the sample copies in {folder} ({exc.strerror}); "
                         "choose a folder you can write to.") from None


def campaign_samples(campaigns: list[Any], renderer: Any, program: Any, folder: Path) -> list[SampleCopy]:
    """Every campaign's messages for the sample member (``campaigns.context.sample_context``), in
    each variant, locale and channel with a message (email, SMS), written under ``folder``. A message
    that fails to render is left out (``loyalty validate`` names it)."""
    from campaigns.context import sample_context
    from campaigns.rendering import RenderError
    from campaigns.variants import as_variant, variant_reward

    copies: list[SampleCopy] = []
    for campaign in campaigns:
        names = [v.name for v in campaign.experiment.variants] if campaign.experiment is not None else [None]
        for name in names:
            shown = as_variant(campaign, name)
            context = sample_context(shown, program)
            sets_reward, points = variant_reward(campaign, name, context["member"]["tier"])
            if sets_reward:
                context["reward"] = {**context["reward"], "points": points}
            for locale in campaign.locales:
                for channel in ("email", "sms"):
                    if getattr(shown.messages, channel) is None:
                        continue
                    try:
                        if channel == "email":
                            rendered = renderer.render_email(shown, locale, context)
                            subject, text, html = rendered.subject, rendered.text, rendered.html
                        else:
                            subject, text, html = None, renderer.render_sms(shown, locale, context), None
                    except RenderError:
                        continue
                    main, text_path = write_copy(folder, _stem(campaign.id, name, locale, channel), channel=channel,
                                                 subject=subject, text=text, html=html)
                    title = subject if subject is not None else next((ln for ln in text.splitlines() if ln.strip()), "")
                    copies.append(SampleCopy(campaign.id, name, locale, channel, title, main, text_path))
    return copies


def member_sample(folder: Path, campaign_id: str, member: str, *, variant: str | None, locale: str, channel: str,
                  subject: str | None, text: str, html: str | None) -> SampleCopy:
    """One member's rendered message (a preview's sample), written under ``folder``."""
    main, text_path = write_copy(folder, _stem(campaign_id, member, variant, channel), channel=channel,
                                 subject=subject, text=text, html=html)
    title = subject if subject is not None else next((ln for ln in text.splitlines() if ln.strip()), "")
    return SampleCopy(campaign_id, variant, locale, channel, title, main, text_path)
