"""Debian's Chromium, driven by Playwright's Python package, for the HTML people look at (emails, the
report, the web pages). `.ci/run` installs the package; the tests start the browser themselves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright


def chromium_executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is not installed; run `apt-get install -y chromium` (`.ci/run` does)."
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def offline_page(browser: Browser, html: str, width: int, *, height: int = 900) -> tuple[Page, list[str]]:
    """``html`` opened in a window ``width`` px wide, with every request refused and recorded: the
    page and the list of addresses it tried to fetch (a self-contained page tries none)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    fetched: list[str] = []

    def refuse(route) -> None:
        fetched.append(route.request.url)
        route.abort()

    page.route("**/*", refuse)
    page.set_content(html, wait_until="load")
    return page, fetched


def page_width(page: Page) -> int:
    """How wide the document is laid out (wider than the window means the page scrolls sideways)."""
    return int(page.evaluate("document.documentElement.scrollWidth"))


def box_inside(page: Page, selector: str, width: int) -> dict:
    """The first matching element's box, asserted visible, with a size, and within the window's width."""
    element = page.locator(selector).first
    assert element.count() == 1 and element.is_visible(), f"{selector} is not visible"
    box = element.bounding_box()
    assert box and box["width"] > 0 and box["height"] > 0, f"{selector} has no size"
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{selector} sticks out: {box}"
    return box
