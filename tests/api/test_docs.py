"""/docs and /redoc work with no internet: every file the pages load comes from the app itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN and are blank offline. These tests check
that the pages name no address outside the app, that the app serves what they name, and that an
API token keeps the data closed but not the docs.
"""

from __future__ import annotations

import re

import pytest


PAGES = ["/docs", "/redoc"]
# A browser refuses a style sheet served under another type, and with nosniff a script too.
TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def assets(html: str) -> list[str]:
    """The URLs of the page's scripts, style sheets and icon."""
    return re.findall(r'(?:src|href)="([^"]*)"', html)


@pytest.mark.parametrize("page", PAGES)
def test_the_page_loads_nothing_from_outside_the_app(api, page):
    response = api.get(page)
    assert response.status_code == 200
    assert "://" not in response.text and "cdn" not in response.text
    urls = assets(response.text)
    assert any(url.endswith(".js") for url in urls)  # without its bundle the page is blank
    for url in urls:
        asset = api.get(url)
        assert asset.status_code == 200, url
        assert TYPES[url[url.rindex("."):]] in asset.headers["content-type"], url
        assert len(asset.content) > (10_000 if url.endswith(".js") else 1_000), url


def test_with_a_token_the_docs_stay_open_and_the_data_does_not(api, token):
    urls = ["/openapi.json", *PAGES, *(url for page in PAGES for url in assets(api.get(page).text))]
    assert len(urls) > len(PAGES) + 1
    for url in urls:
        assert api.get(url).status_code == 200, url
    assert api.get("/sweeps").status_code == 401
    assert api.get("/sweeps", headers={"Authorization": f"Bearer {token}"}).status_code == 200
