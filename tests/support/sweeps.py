"""Reading a whole sweep back through the paged API, for tests that check every run; waiting for its end."""

from __future__ import annotations

import time
from collections.abc import Callable

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


def wait_until_finished(http: httpx.Client, sweep_id: int, timeout: float, poll: float = 0.2,
                        explain: Callable[[], str] = str) -> dict:
    """The sweep's summary once no run is queued or running, with every run under "runs";
    fails after `timeout` seconds, with the counts and `explain()`. A 503 (the database restarting,
    as the fault tests make it) is waited through, as a client should."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/sweeps/{sweep_id}")
        if response.status_code == 503:
            assert time.monotonic() < deadline, f"sweep {sweep_id}: still 503 ({response.text})\n{explain()}"
            time.sleep(poll)
            continue
        sweep = response.json()
        if sweep["status"] == "finished":
            return with_runs(http, sweep)
        assert time.monotonic() < deadline, f"sweep {sweep_id} unfinished: {sweep['counts']}\n{explain()}"
        time.sleep(poll)


def names_field(response: httpx.Response, field: str) -> bool:
    """Whether a 422 answer names `field` in one of its errors' locations."""
    return any(field in [str(part) for part in error["loc"]] for error in response.json()["detail"])
