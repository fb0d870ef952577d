"""Reading a whole sweep back through the paged API, for tests that check every run."""

from __future__ import annotations

import httpx


def all_runs(http: httpx.Client, sweep_id: int) -> list[dict]:
    """Every run of the sweep, by id, from `GET /sweeps/{id}/runs` a page at a time."""
    runs: list[dict] = []
    while True:
        response = http.get(f"/sweeps/{sweep_id}/runs", params={"limit": 1000, "offset": len(runs)})
        assert response.status_code == 200, response.text
        page = response.json()
        runs += page["runs"]
        if not page["runs"] or len(runs) >= page["total"]:
            return runs


def with_runs(http: httpx.Client, sweep: dict) -> dict:
    """The sweep's summary and, under "runs", every run of it."""
    return sweep | {"runs": all_runs(http, sweep["id"])}
