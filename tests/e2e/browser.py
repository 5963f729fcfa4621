"""A headless system Chromium driven by Playwright, for the tests of pages the web process
serves (the ops dashboard, ``/docs``).

Needs ``/usr/bin/chromium`` (``scripts/test.sh`` installs it as root) and the ``playwright``
package; without them a browser test is skipped, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(f"{reason} (scripts/test.sh installs Chromium when run as root)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless system Chromium for the module that asks for it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
