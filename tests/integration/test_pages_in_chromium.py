"""The HTML people look at besides the emails, opened in Debian's Chromium at a phone's width and a
desktop's: the marketer's report (`loyalty report --html`) and the unsubscribe pages a member lands on.
Nothing wider than the window, nothing fetched from the network, every chart label whole, the button
big enough to tap, the shop's name on the member's pages. Screenshots go to ``artifacts/pages/``
(git-ignored) for a person to look at."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page

from campaigns.brand import Brand
from campaigns.program import load_program
from loyalty.web import unsubscribe_page
from models.db import transaction
from models.delivery import Delivery
from tests.conftest import REPO_ROOT
from tests.integration.test_report import JUNE, seed_program
from tests.integration.test_support_commands import loyalty, member_id
from tests.support.browser import box_inside, chromium, offline_page, page_width

ARTIFACTS = REPO_ROOT / "artifacts" / "pages"
BRAND = load_program(REPO_ROOT / "campaigns" / "program.yaml").brand
LONG_CAMPAIGN = "winback_after_ninety_days_with_a_second_chance"  # a marketer's long campaign id


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def _labels_whole(page: Page, name: str) -> None:
    """Every text of every chart lies inside its chart (a label longer than its column is cut off)."""
    clipped = page.evaluate("""() => [...document.querySelectorAll('svg')].flatMap(svg => {
        const frame = svg.getBoundingClientRect();
        return [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()])
            .filter(([_, b]) => b.left < frame.left - 0.5 || b.right > frame.right + 0.5).map(([text]) => text);
    })""")
    assert clipped == [], f"{name}: chart labels cut off: {clipped}"


def test_the_report_lays_out_on_a_phone_and_a_desktop_and_fetches_nothing(env, pg_sessions, browser, tmp_path):
    seed_program(pg_sessions)
    with transaction(pg_sessions) as session:  # a campaign whose long id labels two chart bars
        session.add(Delivery(occurrence_key=f"{LONG_CAMPAIGN}:A:1", campaign=LONG_CAMPAIGN,
                             member_id=member_id(pg_sessions, "A"), channel="email", state="sent",
                             send_at=datetime(2027, 6, 9, 9, tzinfo=UTC), planned_at=datetime(2027, 6, 9, 9, tzinfo=UTC),
                             finished_at=datetime(2027, 6, 9, 9, 1, tzinfo=UTC), attempts=1))
    report = tmp_path / "report.html"
    assert loyalty(env, "report", *JUNE, "--html", str(report)).returncode == 0
    html = report.read_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (375, 1280):
        page, fetched = offline_page(browser, html, width)
        try:
            page.screenshot(path=str(ARTIFACTS / f"report-{width}.png"), full_page=True)
            assert fetched == [], f"the report fetched {fetched}"
            assert page_width(page) <= width, f"the report is {page_width(page)}px wide in a {width}px window"
            assert page.locator("h1").inner_text() == "Loyalty program report"
            box_inside(page, ".figure:has-text('points issued')", width)
            assert page.locator("svg").count() >= 5
            _labels_whole(page, f"report at {width}px")
            assert page.locator(f"svg text:text-is('{LONG_CAMPAIGN}')").count() == 1
            # every table and chart fits a desktop's window; on a phone they scroll inside their box
            sideways = page.evaluate("[...document.querySelectorAll('.wide')]"
                                     ".filter(e => e.scrollWidth > e.clientWidth + 1).length")
            if width >= 1280:
                assert sideways == 0, f"{sideways} tables or charts need scrolling on a desktop"
            cell = page.locator("td.n").first
            assert float(cell.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 12
        finally:
            page.close()


@pytest.mark.parametrize("locale", ["en", "fr"])
@pytest.mark.parametrize("kind", ["ask", "done", "invalid", "proof"])
def test_each_unsubscribe_page_names_the_shop_and_lays_out_on_a_phone_and_a_desktop(browser, locale, kind):
    html = unsubscribe_page(locale, kind, brand=BRAND, channel="email",
                            action="https://club.example.com/unsubscribe/token").body.decode()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (320, 800):
        page, fetched = offline_page(browser, html, width)
        try:
            page.screenshot(path=str(ARTIFACTS / f"unsubscribe-{kind}-{locale}-{width}.png"), full_page=True)
            assert fetched == []
            assert page_width(page) <= width, f"{kind}/{locale}: {page_width(page)}px wide in {width}px"
            assert page.evaluate("document.documentElement.lang") == locale
            assert page.title().endswith(f" · {BRAND.shop_name}")
            shop = box_inside(page, "a.shop", width)
            assert page.locator("a.shop").inner_text() == BRAND.shop_name and shop["height"] > 0
            assert page.locator("a.shop").get_attribute("href") == BRAND.url
            if kind == "ask":  # the one thing to do on the page: a button a thumb can hit
                button = box_inside(page, "form button[type=submit]", width)
                assert button["height"] >= 44 and button["width"] >= 44, f"the button is {button}"
                assert page.locator("form").get_attribute("action") == "https://club.example.com/unsubscribe/token"
            else:
                assert page.locator("button").count() == 0
        finally:
            page.close()


def test_the_unsubscribe_page_of_a_program_without_a_brand_names_the_default(browser):
    page, _ = offline_page(browser, unsubscribe_page("en", "ask", channel="sms").body.decode(), 320)
    try:
        assert page.locator(".shop").inner_text() == Brand().shop_name and page.locator("a.shop").count() == 0
        assert page.locator("p").first.inner_text() == "Stop receiving our text messages?"
        assert page_width(page) <= 320
    finally:
        page.close()
