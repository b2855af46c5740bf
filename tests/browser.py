"""A real headless browser for tests: Debian's Chromium driven by PyPI's playwright, offline.

Chromium comes from Debian (``.ci/setup-browser.sh`` installs it; ``playwright install`` downloads a
browser and cannot work here). Every request to another origin than the page's own is aborted and
recorded, so a test sees both what a page would have fetched from the internet and how it looks
without it::

    require_chromium()
    with chromium() as browser, open_offline(browser, "http://127.0.0.1:PORT/report.html") as view:
        assert view.blocked == []
        assert view.page.get_by_text("Drifted features").is_visible()

Under ``CI=true`` a missing Chromium (or playwright) fails the test; elsewhere the test is skipped
with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path(os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_browser() -> str | None:
    """Why no browser test can run here, or None."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)) and not shutil.which(str(CHROMIUM)):
        return f"{CHROMIUM} not installed: `bash .ci/setup-browser.sh` (root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed: `make install-dev`"
    return None


def require_chromium() -> None:
    """Skip when Chromium/playwright are missing, except under CI (.ci/run installs them): fail there."""
    why = missing_browser()
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {why} (.ci/setup-browser.sh should have installed it)")
    pytest.skip(why)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass
class OfflineView:
    """One page opened with every other origin blocked."""

    page: Any  # playwright Page
    origin: str
    requested: list[str] = field(default_factory=list)  # every request the page made (own origin)
    blocked: list[str] = field(default_factory=list)  # requests to another origin, aborted
    errors: list[str] = field(default_factory=list)  # uncaught JavaScript errors

    def goto(self, url: str) -> Any:
        """Navigate (same origin only: another one would be blocked like any request)."""
        return self.page.goto(url, wait_until="load")


@contextmanager
def open_offline(
    browser: Any, url: str, *, javascript: bool = True, cookies: dict[str, str] | None = None
) -> Iterator[OfflineView]:
    """Open ``url`` in a fresh browser context that may only reach ``url``'s own origin.

    ``cookies`` are set for that origin first (e.g. Airflow's ``_token``: a logged-in user).
    """
    context = browser.new_context(java_script_enabled=javascript, service_workers="block")
    if cookies:
        context.add_cookies([{"name": k, "value": v, "url": origin(url)} for k, v in cookies.items()])
    view = OfflineView(page=None, origin=origin(url))

    def route(r: Any) -> None:
        req = r.request.url
        if req.startswith(("data:", "blob:", "about:")) or origin(req) == view.origin:
            view.requested.append(req)
            r.continue_()
        else:
            view.blocked.append(req)
            r.abort("blockedbyclient")

    try:
        context.route("**/*", route)
        context.on("weberror", lambda e: view.errors.append(str(e.error)))
        view.page = context.new_page()
        response = view.goto(url)
        assert response is not None and response.ok, f"{url}: HTTP {response and response.status}"
        yield view
    finally:
        context.close()
