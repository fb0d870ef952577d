"""The product as a user drives it: submit a sweep over HTTP, real workers train it, read and plot the results.

Every test runs twice: on Redis + PostgreSQL, and on the embedded defaults
(SQLite + the SQLite broker), each with a real `gradsweep worker` process.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import time

import pytest

from gradsweep.engine.tasks.linear_regression import stability_limit, train
from tests.support.curves import assert_each_epoch_stored_once, expected_curves
from tests.support.services import wait_for
from tests.support.sweeps import all_runs

SWEEP = {"name": "e2e", "learning_rates": [0.01, 0.05], "seeds": [0, 1], "epochs": 50}


def assert_close(batched: list[float], alone: list[float]) -> None:
    """A run trained in a batch equals it trained alone within 1e-12 relative."""
    assert len(batched) == len(alone)
    assert all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(batched, alone))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_a_sweep_trains_every_run_and_stores_every_epoch(stack):
    created = stack.http.post("/sweeps", json=SWEEP)
    assert created.status_code == 201, created.text
    sweep = stack.wait_for_sweep(created.json()["id"])

    assert sweep["n_runs"] == 4
    assert sweep["counts"]["succeeded"] == 4
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep["id"], sweep["runs"])
    expected = expected_curves(sweep["runs"])
    for run in sweep["runs"]:
        assert run["status"] == "succeeded" and run["attempts"] == 1 and run["worker"] and run["epochs_done"] == 50
        stored = stack.http.get(f"/runs/{run['id']}").json()["losses"]
        assert stored == expected[run["id"]]  # bit for bit
        assert_close(stored, train(run["learning_rate"], run["seed"], 50).losses)  # the run trained alone
        assert run["final_loss"] == stored[-1] and run["best_loss"] == min(stored)


def test_curves_come_back_as_json_and_csv(stack):
    sweep = stack.wait_for_sweep(stack.http.post("/sweeps", json=SWEEP).json()["id"])
    curves = stack.http.get(f"/sweeps/{sweep['id']}/losses").json()["runs"]
    rows = list(csv.DictReader(io.StringIO(stack.http.get(f"/sweeps/{sweep['id']}/losses?format=csv").text)))
    assert len(curves) == 4 and len(rows) == 4 * 50
    for curve in curves:
        from_csv = [float(r["loss"]) for r in rows if int(r["run_id"]) == curve["run_id"]]
        assert from_csv == curve["losses"] == expected_curves(sweep["runs"])[curve["run_id"]]


@pytest.mark.parametrize("kind", ["curves", "final"])
def test_plots_are_images_of_sensible_size(stack, kind):
    sweep = stack.wait_for_sweep(stack.http.post("/sweeps", json=SWEEP).json()["id"])
    png = stack.http.get(f"/sweeps/{sweep['id']}/plot.png", params={"kind": kind})
    assert png.headers["content-type"] == "image/png"
    width, height = png_size(png.content)
    assert width >= 600 and height >= 400
    svg = stack.http.get(f"/sweeps/{sweep['id']}/plot.svg", params={"kind": kind})
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    compare = stack.http.get("/compare/plot.png", params={"sweeps": f"{sweep['id']},{sweep['id']}"})
    assert png_size(compare.content)[0] >= 600


def test_a_learning_rate_above_the_stability_limit_ends_diverged_with_finite_losses(stack):
    too_fast = 1.5 * stability_limit()
    created = stack.http.post("/sweeps", json={**SWEEP, "learning_rates": [too_fast], "epochs": 2000})
    sweep = stack.wait_for_sweep(created.json()["id"])
    run = sweep["runs"][0]
    assert run["status"] == "diverged"
    detail = stack.http.get(f"/runs/{run['id']}")
    assert "NaN" not in detail.text and "Infinity" not in detail.text
    losses = json.loads(detail.text)["losses"]
    assert run["diverged_at"] == len(losses) < 2000
    assert losses == expected_curves(sweep["runs"])[run["id"]]
    assert run["diverged_at"] == train(too_fast, run["seed"], 2000).diverged_at


def test_cancel_stops_queued_and_running_runs_and_retry_redoes_them(stack):
    # Six long runs on two worker processes: two run while four wait.
    long_sweep = {**SWEEP, "learning_rates": [0.01, 0.02, 0.03], "epochs": 100_000}
    sweep_id = stack.http.post("/sweeps", json=long_sweep).json()["id"]
    wait_for(lambda: stack.http.get(f"/sweeps/{sweep_id}").json()["counts"]["running"] >= 1)

    cancelled = stack.http.post(f"/sweeps/{sweep_id}/cancel").json()
    assert cancelled["status"] == "finished"

    # The running runs notice at their next batch of losses, well before their 100,000 epochs.
    time.sleep(2)
    runs = all_runs(stack.http, sweep_id)
    assert {run["status"] for run in runs} == {"cancelled"}
    assert all(run["epochs_done"] < 100_000 for run in runs)
    started = [run for run in runs if run["attempts"] == 1]
    assert started, "no run had started before the cancel"
    done_after_cancel = {run["id"]: run["epochs_done"] for run in runs}
    time.sleep(1)
    assert {r["id"]: r["epochs_done"] for r in all_runs(stack.http, sweep_id)} \
        == done_after_cancel, "a cancelled run kept training"

    retried = stack.http.post(f"/sweeps/{sweep_id}/retry").json()
    assert retried["counts"]["queued"] + retried["counts"]["running"] == 6  # a worker may already have one
    sweep = stack.wait_for_sweep(sweep_id, timeout=240)
    assert sweep["counts"]["succeeded"] == 6
    assert {run["epochs_done"] for run in sweep["runs"]} == {100_000}
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep_id, sweep["runs"])
