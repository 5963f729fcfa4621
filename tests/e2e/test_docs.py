"""``/docs`` works with no internet: the real web process serves Swagger UI's page, script,
style sheet and icon itself, and the page, opened in Chromium with every request to another
host refused, renders every operation of ``/openapi.json``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e import procfile

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with procfile.serving_web() as (_, base):
        yield base


def test_docs_page_names_only_its_own_assets(services: object, web: str) -> None:
    page = httpx.get(f"{web}/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/"), asset  # nothing from another host
        answer = httpx.get(f"{web}{asset}", timeout=10)
        assert answer.status_code == 200 and len(answer.content) > 100, asset
    assert httpx.get(f"{web}/redoc", timeout=10).status_code == 404  # it would need a CDN


def test_docs_render_every_operation_offline(services: object, web: str, browser: Any) -> None:
    elsewhere: list[str] = []
    context = browser.new_context()
    page = context.new_page()

    def only_this_host(route: Any) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(web).netloc:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_host)
    try:
        page.goto(f"{web}/docs", wait_until="load")
        page.wait_for_selector(".opblock", timeout=60_000)
        operations = sum(len(methods) for methods in
                         httpx.get(f"{web}/openapi.json", timeout=10).json()["paths"].values())
        assert page.locator(".opblock").count() == operations
        assert page.locator(".info .title").inner_text().startswith("bulkjobs")
    finally:
        context.close()
    assert elsewhere == []
