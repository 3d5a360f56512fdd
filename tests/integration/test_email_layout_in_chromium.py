"""Every shipped email, in every locale, opened in a real headless Chromium at 375 px (a phone) and
800 px (a desktop client's reading pane): nothing wider than the window, the call-to-action button and
the unsubscribe link visible and inside it, every image with alt text, the footer with the postal
address. Chromium is Debian's (``apt-get install chromium``: `.ci/run` installs it), driven by
Playwright's Python package; the test starts it itself.

The screenshots stay in ``artifacts/emails/`` (git-ignored; CI keeps the folder) for a person to look
at: ``<campaign>[-<case>]-<locale>-<width>.png``. The logo's address is answered with a PNG the test
draws, and every other request is refused: an email must not need the network to lay out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from campaigns.context import sample_context
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from campaigns.rendering import Renderer
from campaigns.variants import as_variant
from tests.conftest import REPO_ROOT
from tests.support.browser import box_inside, chromium

ARTIFACTS = REPO_ROOT / "artifacts" / "emails"
WIDTHS = (375, 800)
PROGRAM = load_program(REPO_ROOT / "campaigns" / "program.yaml")
CAMPAIGNS = load_campaigns(REPO_ROOT / "campaigns" / "definitions").campaigns
RENDERER = Renderer(REPO_ROOT / "campaigns" / "templates", PROGRAM)


def _cases() -> list[tuple[str, str, str]]:
    """(campaign, case, locale): every shipped email campaign in each of its locales, each A/B
    variant with its own email (``variant-<name>``), and the win-back both with its coupon (step 2)
    and without (step 1)."""
    cases = []
    for campaign in CAMPAIGNS.values():
        if campaign.messages.email is None:
            continue
        variants = [variant.name for variant in campaign.experiment.variants] if campaign.experiment else []
        for locale in campaign.locales:
            cases.append((campaign.id, "", locale))
            cases += [(campaign.id, f"variant-{name}", locale) for name in variants]
            if campaign.kind == "winback":
                cases.append((campaign.id, "no-coupon", locale))
    return cases


def _render(campaign_id: str, case: str, locale: str):
    campaign = CAMPAIGNS[campaign_id]
    if case.startswith("variant-"):
        campaign = as_variant(campaign, case.removeprefix("variant-"))
    context = sample_context(campaign, PROGRAM)
    if case == "no-coupon":
        context = {**context, "coupon": {}, "winback": {**context["winback"], "step": 1}}
    return RENDERER.render_email(campaign, locale, context, member_locale=locale), context


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def logo_png(browser: Browser) -> bytes:
    """A logo of the shop's name on its colour, drawn by Chromium itself (320×80 px, PNG)."""
    page = browser.new_page(viewport={"width": 320, "height": 80})
    colour, name = PROGRAM.brand.colors.primary, PROGRAM.brand.shop_name
    page.set_content(f"<body style='margin:0'><div style='width:320px;height:80px;background:{colour};color:#fff;"
                     f"font:bold 34px Georgia,serif;display:flex;align-items:center'>&#10022; {name}</div></body>")
    png = page.screenshot()
    page.close()
    return png


def _open(browser: Browser, html: str, width: int, logo: bytes) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900})

    def answer(route):
        if route.request.url == PROGRAM.brand.logo_url:
            route.fulfill(status=200, content_type="image/png", body=logo)
        else:
            route.abort()

    page.route("**/*", answer)
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize(("campaign_id", "case", "locale"), _cases(),
                         ids=lambda value: value or "-")
def test_each_shipped_email_lays_out_in_chromium_at_phone_and_desktop_widths(browser, logo_png, campaign_id, case,
                                                                             locale):
    email, context = _render(campaign_id, case, locale)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page = _open(browser, email.html, width, logo_png)
        try:
            name = "-".join(part for part in (campaign_id, case, locale, str(width)) if part)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= width, f"{name}: the email is {scroll_width}px wide in a {width}px window"
            assert page.evaluate("document.documentElement.lang") == locale
            assert page.evaluate("document.characterSet") == "UTF-8"
            assert page.title().strip(), f"{name}: no title"

            button = box_inside(page, "a.button-link", width)
            assert button["height"] >= 40, f"{name}: the button is {button['height']}px high, too small to tap"
            assert page.locator("a.button-link").get_attribute("href") == PROGRAM.brand.url
            box_inside(page, f"a[href='{context['unsubscribe_url']}']", width)
            box_inside(page, f"td.footer a[href='{PROGRAM.brand.url}']", width)

            images = page.evaluate("[...document.images].map(i => [i.alt, i.naturalWidth, i.getBoundingClientRect().right])")
            assert images, f"{name}: no logo"
            for alt, natural_width, right in images:
                assert alt.strip(), f"{name}: an image without alt text"
                assert natural_width > 0, f"{name}: the logo did not load"
                assert right <= width

            footer = page.locator("td.footer").inner_text()
            for line in PROGRAM.brand.postal_address.splitlines():
                assert line.strip() in footer, f"{name}: the footer lacks the postal address line {line!r}"
            assert not page.locator(".preheader").is_visible(), f"{name}: the preheader shows"
        finally:
            page.close()


def test_an_email_without_a_logo_or_shop_address_still_lays_out(browser, logo_png, tmp_path: Path):
    """The defaults (no brand: in the program file): the shop's name in place of the logo, no button
    (nowhere to send it), the unsubscribe link still there; nothing wider than a phone."""
    renderer = Renderer(REPO_ROOT / "campaigns" / "templates")
    campaign = CAMPAIGNS["birthday"]
    context = sample_context(campaign, PROGRAM)
    email = renderer.render_email(campaign, "en", context, member_locale="en")
    page = _open(browser, email.html, 375, logo_png)
    try:
        page.screenshot(path=str(tmp_path / "plain.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.locator("img").count() == 0 and page.locator("a.button-link").count() == 0
        assert page.locator(".shop-name").inner_text() == "The Loyalty Club"
        box_inside(page, f"a[href='{context['unsubscribe_url']}']", 375)
    finally:
        page.close()
