"""Sweeps and runs page through the API: summaries without runs, cursors and offsets, filters and sorts;
and a sweep is deleted whole.

The API runs in process on a SQLite file (tests/api/conftest.py), with runs
given losses through the storage as a worker would write them.
"""

from __future__ import annotations

import gzip
import math
import re

import pytest
import zstandard
from fastapi.testclient import TestClient

from gradsweep.engine.tasks.linear_regression import least_squares_loss, stability_limit
from gradsweep.service.api.routes import plots as plot_routes
from gradsweep.service.domain.text import human_number
from gradsweep.service.plots import final_figure
from gradsweep.service.storage import RunStatus, Storage
from tests.support.writes import finish_run, start_run, write_losses

GRID = {"name": "grid", "learning_rates": [1e-3, 1e-2, 3e-2, 1e-1], "seeds": [0, 1, 2],
        "optimizers": ["sgd", "adam"], "epochs": 10}


@pytest.fixture
def storage(api_storage: Storage) -> Storage:
    return api_storage


def finish(storage: Storage, run: dict, final_loss: float, status: RunStatus = RunStatus.SUCCEEDED) -> None:
    """As a worker would: start the run, write its losses, end it."""
    started = start_run(storage, run["id"], "test-worker")
    write_losses(storage, run["id"], 0, [final_loss * 2, final_loss], attempt=started.attempts)
    finish_run(storage, run["id"], status, final_loss=final_loss, attempt=started.attempts)


def all_runs(api: TestClient, sweep_id: int, **params) -> list[dict]:
    page = api.get(f"/sweeps/{sweep_id}/runs", params={"limit": 1000, **params})
    assert page.status_code == 200, page.text
    return page.json()["runs"]


def test_a_sweep_is_answered_as_a_summary_and_its_runs_page_by_offset(api):
    created = api.post("/sweeps", json=GRID)
    assert created.status_code == 201
    summary = created.json()
    assert "runs" not in summary and summary["n_runs"] == 24 and summary["best_run"] is None
    assert summary["n_jobs"] == 2  # one batch per optimizer
    assert (summary["n_samples"], summary["n_features"], summary["data_seed"]) == (100, 50, 0)
    assert summary["least_squares_loss"] == least_squares_loss(100, 50, 0)
    assert summary["stability_limit"] == stability_limit(100, 50, 0)
    assert api.get(f"/sweeps/{summary['id']}").json() == summary

    pages = [api.get(f"/sweeps/{summary['id']}/runs", params={"limit": 10, "offset": offset}).json()
             for offset in (0, 10, 20)]
    assert [page["total"] for page in pages] == [24, 24, 24]
    assert [len(page["runs"]) for page in pages] == [10, 10, 4]
    ids = [run["id"] for page in pages for run in page["runs"]]
    assert ids == sorted(ids) and len(set(ids)) == 24


def test_runs_filter_by_status_optimizer_and_learning_rate_and_sort_by_loss(api, storage):
    sweep = api.post("/sweeps", json=GRID).json()
    runs = all_runs(api, sweep["id"])
    losses = {}
    for i, run in enumerate(runs[:12]):
        losses[run["id"]] = 1.0 / (i + 1)
        finish(storage, run, losses[run["id"]])

    by_loss = all_runs(api, sweep["id"], sort="final_loss")
    assert [run["id"] for run in by_loss[:12]] == sorted(losses, key=losses.get)
    assert all(run["final_loss"] is None for run in by_loss[12:])  # no loss yet: last, in both orders
    descending = all_runs(api, sweep["id"], sort="final_loss", order="desc")
    assert [run["id"] for run in descending[:12]] == sorted(losses, key=losses.get, reverse=True)
    assert all(run["final_loss"] is None for run in descending[12:])

    queued = all_runs(api, sweep["id"], status="queued")
    assert len(queued) == 12 and {run["status"] for run in queued} == {"queued"}
    both = api.get(f"/sweeps/{sweep['id']}/runs", params=[("status", "queued"), ("status", "succeeded")]).json()
    assert both["total"] == 24
    adam = all_runs(api, sweep["id"], optimizer="adam")
    assert len(adam) == 12 and {run["optimizer"] for run in adam} == {"adam"}
    middle = all_runs(api, sweep["id"], min_learning_rate=1e-2, max_learning_rate=3e-2)
    assert {run["learning_rate"] for run in middle} == {1e-2, 3e-2} and len(middle) == 12
    by_lr = all_runs(api, sweep["id"], sort="learning_rate", order="desc")
    assert [run["learning_rate"] for run in by_lr] == sorted((run["learning_rate"] for run in runs), reverse=True)

    best = api.get(f"/sweeps/{sweep['id']}").json()["best_run"]
    assert best["id"] == min(losses, key=losses.get) and math.isclose(best["final_loss"], min(losses.values()))


# Momentum's beta searched, as the README's search.yaml: sgd's runs have none.
BETA_SEARCH = {"name": "beta", "method": "random", "run_cap": 12, "search_seed": 3,
               "parameters": {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1e-1},
                              "optimizer": {"values": ["sgd", "momentum"]},
                              "beta": {"distribution": "uniform", "min": 0.5, "max": 0.99}, "epochs": {"value": 5}}}


def test_runs_sort_and_filter_by_a_searched_parameter_and_those_without_it_come_last(api):
    sweep = api.post("/sweeps", json=BETA_SEARCH).json()
    runs = all_runs(api, sweep["id"])
    betas = {run["id"]: run["beta"] for run in runs}
    with_beta = sorted((run for run in runs if run["beta"] is not None), key=lambda run: (run["beta"], run["id"]))
    assert 0 < len(with_beta) < len(runs)

    for order, reverse in (("asc", False), ("desc", True)):
        ordered = all_runs(api, sweep["id"], sort="beta", order=order)
        assert [run["id"] for run in ordered[:len(with_beta)]] == [
            run["id"] for run in sorted(with_beta, key=lambda run: run["beta"], reverse=reverse)]
        assert all(betas[run["id"]] is None for run in ordered[len(with_beta):])  # sgd's: last, either way
    middle = with_beta[len(with_beta) // 2]["beta"]
    high = all_runs(api, sweep["id"], min_beta=middle)
    assert {run["id"] for run in high} == {run["id"] for run in with_beta if run["beta"] >= middle}
    low = all_runs(api, sweep["id"], max_beta=middle, sort="beta")
    assert [run["id"] for run in low] == [run["id"] for run in with_beta if run["beta"] <= middle]
    assert api.get(f"/sweeps/{sweep['id']}/runs", params={"min_beta": "nan"}).status_code == 422


def test_the_dashboards_runs_table_has_a_column_per_searched_parameter_sorted_and_filtered_by_the_server(api):
    sweep = api.post("/sweeps", json=BETA_SEARCH).json()
    runs = all_runs(api, sweep["id"], sort="beta")
    with_beta = [run for run in runs if run["beta"] is not None]
    page = api.get(f"/ui/sweeps/{sweep['id']}/runs", params={"sort": "beta", "order": "asc"})
    assert page.status_code == 200
    cells = re.findall(r'<td class="num" data-col="beta" data-value="([^"]*)">([^<]*)</td>', page.text)
    assert [value for value, _ in cells] == [repr(run["beta"]) if run["beta"] is not None else "" for run in runs]
    assert [text for _, text in cells[:len(with_beta)]] == [human_number(run["beta"]) for run in with_beta]  # 0.936
    assert cells[-1][1] == "none"
    assert 'data-sort-key="beta"' in page.text and 'name="min_beta"' in page.text

    middle = with_beta[len(with_beta) // 2]["beta"]
    filtered = api.get(f"/ui/sweeps/{sweep['id']}/runs", params={"sort": "beta", "min_beta": middle})
    shown = re.findall(r'data-col="beta" data-value="([^"]*)"', filtered.text)
    assert [float(value) for value in shown] == [run["beta"] for run in with_beta if run["beta"] >= middle]
    assert f"min_beta={middle}" in filtered.text  # the pager's and headers' links keep the filter
    assert api.get(f"/ui/sweeps/{sweep['id']}/runs", params={"min_beta": "x"}).status_code == 422


def test_sweeps_page_newest_first_by_a_cursor_that_new_sweeps_do_not_shift(api):
    ids = [api.post("/sweeps", json=GRID | {"name": f"s{i}"}).json()["id"] for i in range(5)]
    first = api.get("/sweeps", params={"limit": 2})
    assert [sweep["id"] for sweep in first.json()] == ids[:-3:-1]
    next_url = re.match(r'<([^>]+)>; rel="next"', first.headers["link"]).group(1)
    api.post("/sweeps", json=GRID | {"name": "meanwhile"})
    second = api.get(next_url)
    assert [sweep["id"] for sweep in second.json()] == [ids[2], ids[1]]
    last = api.get("/sweeps", params={"limit": 2, "before": ids[1]})
    assert [sweep["id"] for sweep in last.json()] == [ids[0]] and "link" not in last.headers
    assert len(api.get("/sweeps").json()) == 6


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
    ({"sort": "loss"}, "sort"), ({"order": "up"}, "order"), ({"status": "done"}, "status"),
    ({"optimizer": "lbfgs"}, "optimizer"), ({"min_learning_rate": 0}, "min_learning_rate"),
    ({"max_learning_rate": "nan"}, "max_learning_rate"),
])
def test_bad_page_parameters_are_a_422_naming_the_parameter(api, params, field):
    sweep = api.post("/sweeps", json=GRID).json()
    response = api.get(f"/sweeps/{sweep['id']}/runs", params=params)
    assert response.status_code == 422
    assert any(field in [str(part) for part in error["loc"]] for error in response.json()["detail"])


def test_the_runs_of_a_missing_sweep_are_a_404(api):
    assert api.get("/sweeps/12345/runs").status_code == 404


def test_a_sweep_is_deleted_whole_but_not_while_a_run_is_running(api, storage):
    sweep = api.post("/sweeps", json=GRID).json()
    run = all_runs(api, sweep["id"])[0]
    start_run(storage, run["id"], "test-worker")
    refused = api.delete(f"/sweeps/{sweep['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    assert api.get(f"/sweeps/{sweep['id']}").status_code == 200

    assert api.post(f"/sweeps/{sweep['id']}/cancel").status_code == 200
    assert api.delete(f"/sweeps/{sweep['id']}").status_code == 204
    assert api.get(f"/sweeps/{sweep['id']}").status_code == 404
    assert api.get(f"/runs/{run['id']}").status_code == 404
    assert api.delete(f"/sweeps/{sweep['id']}").status_code == 404


def test_curves_down_sample_to_the_points_asked_for_keeping_each_buckets_extremes(api, storage):
    sweep = api.post("/sweeps", json=GRID | {"learning_rates": [1e-2], "seeds": [0], "optimizers": ["sgd"],
                                             "epochs": 1_000}).json()
    (run,) = all_runs(api, sweep["id"])
    losses = [1.0 / (epoch + 1) for epoch in range(1_000)]
    losses[500] = 50.0  # a spike that averaging would hide
    attempt = start_run(storage, run["id"], "test-worker").attempts
    write_losses(storage, run["id"], 0, losses, attempt=attempt)

    full = api.get(f"/runs/{run['id']}").json()
    assert full["losses"] == losses and full["sampled_epochs"] is None
    sampled = api.get(f"/runs/{run['id']}", params={"points": 100}).json()
    assert len(sampled["sampled_epochs"]) <= 100 and 500 in sampled["sampled_epochs"] and 50.0 in sampled["losses"]
    assert sampled["losses"] == [losses[epoch] for epoch in sampled["sampled_epochs"]]
    (curve,) = api.get(f"/sweeps/{sweep['id']}/losses", params={"points": 100}).json()["runs"]
    assert (curve["sampled_epochs"], curve["losses"]) == (sampled["sampled_epochs"], sampled["losses"])
    rows = api.get(f"/sweeps/{sweep['id']}/losses", params={"points": 100, "format": "csv"}).text.splitlines()[1:]
    assert [int(row.split(",")[-2]) for row in rows] == sampled["sampled_epochs"]
    assert api.get(f"/runs/{run['id']}/losses.csv", params={"points": 100}).text.splitlines()[1:] == rows
    for bad in (1, 100_001, "x"):
        response = api.get(f"/runs/{run['id']}", params={"points": bad})
        assert response.status_code == 422 and "points" in response.text


def test_curves_asked_for_again_answer_304_until_a_worker_writes(api, storage):
    sweep = api.post("/sweeps", json=GRID | {"learning_rates": [1e-2], "seeds": [0], "optimizers": ["sgd"],
                                             "epochs": 1_000}).json()
    (run,) = all_runs(api, sweep["id"])
    attempt = start_run(storage, run["id"], "test-worker").attempts
    write_losses(storage, run["id"], 0, [1.0, 0.5], attempt=attempt)
    url = f"/sweeps/{sweep['id']}/losses?points=100"

    first = api.get(url)
    tag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    unchanged = api.get(url, headers={"If-None-Match": tag})
    assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", tag)
    assert api.get(f"/sweeps/{sweep['id']}/losses", headers={"If-None-Match": tag}).status_code == 200  # all points
    write_losses(storage, run["id"], 2, [0.25], attempt=attempt)
    changed = api.get(url, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.json()["runs"][0]["losses"] == [1.0, 0.5, 0.25]


UNZSTD = zstandard.ZstdDecompressor().decompress


@pytest.mark.parametrize(("accept", "coding", "decompress"), [
    ("gzip, deflate, br, zstd", "zstd", UNZSTD),
    ("gzip;q=1.0, zstd;q=0", "gzip", gzip.decompress),
    ("br, *", "zstd", UNZSTD),
    ("identity", None, bytes),
    ("zstd;q=0, gzip;q=0.0, deflate", None, bytes),
    ("zstd;q=oops", "zstd", UNZSTD),
])
def test_curves_come_compressed_as_the_client_accepts_with_a_tag_of_their_own(api, storage, accept, coding,
                                                                               decompress):
    sweep = api.post("/sweeps", json=GRID).json()
    for number, run in enumerate(all_runs(api, sweep["id"])):
        finish(storage, run, 0.1 + number)
    url = f"/sweeps/{sweep['id']}/losses?points=100"
    plain = api.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"

    # As the bytes came over the wire: httpx would otherwise undo the coding itself.
    with api.stream("GET", url, headers={"Accept-Encoding": accept}) as answer:
        raw = b"".join(answer.iter_raw())
    assert answer.headers.get("content-encoding") == coding and answer.headers["vary"] == "Accept-Encoding"
    assert int(answer.headers["content-length"]) == len(raw)
    assert decompress(raw) == plain.content  # the same JSON, byte for byte
    assert (answer.headers["etag"] == plain.headers["etag"]) == (coding is None)  # one tag per representation
    again = api.get(url, headers={"Accept-Encoding": accept, "If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("kind,line", [("curves", "least-squares optimum"), ("final", "GD stability limit")])
def test_the_plots_of_a_search_that_varies_the_data_draw_no_one_reference_line(api, storage, kind, line):
    # The summary's rule (service/domain/reference_lines.py): runs of different data have no one optimum or limit.
    base = {"method": "grid", "parameters": {"learning_rate": {"value": 0.01}, "epochs": {"value": 2}}}
    one_data = api.post("/sweeps", json={"name": "one dataset", **base}).json()
    base["parameters"]["data_seed"] = {"values": [0, 1]}
    many_data = api.post("/sweeps", json={"name": "two datasets", **base}).json()
    assert many_data["least_squares_loss"] is None and one_data["least_squares_loss"] is not None
    for sweep in (one_data, many_data):
        for run in all_runs(api, sweep["id"]):
            finish(storage, run, 0.1)
    # matplotlib's SVG names each text it draws in a comment.
    assert f"<!-- {line}" in api.get(f"/sweeps/{one_data['id']}/plot.svg", params={"kind": kind}).text
    assert f"<!-- {line}" not in api.get(f"/sweeps/{many_data['id']}/plot.svg", params={"kind": kind}).text


def test_a_runs_plot_names_the_run_and_says_where_it_diverged(api, storage):
    """Issue 24: not "mean over seeds" nor 5.473520283788641e-01; the × at the last finite epoch, said in words."""
    sweep = api.post("/sweeps", json=GRID | {"learning_rates": [0.5473520283788641], "seeds": [0],
                                             "optimizers": ["momentum"]}).json()
    [run] = all_runs(api, sweep["id"])
    started = start_run(storage, run["id"], "test-worker")
    write_losses(storage, run["id"], 0, [1.0, 10.0, 100.0], attempt=started.attempts)
    finish_run(storage, run["id"], RunStatus.DIVERGED, final_loss=100.0, diverged_at=3, attempt=started.attempts)
    svg = api.get(f"/runs/{run['id']}/plot.svg").text
    # matplotlib's SVG names each text it draws in a comment.
    assert f"<!-- Run {run['id']}: lr = 0.547, seed 0, momentum -->" in svg
    assert "<!-- lr = 0.547, seed 0, momentum" in svg
    assert "<!-- loss finite through epoch 2; diverged at epoch 3 -->" in svg
    assert "mean over seeds" not in svg and "e-01" not in svg


def test_the_final_loss_plot_rings_a_diverged_runs_best_loss_only_below_its_start(api, storage, monkeypatch):
    """The plot is given each run's last loss alone, with a diverged run's first beside it (issue 24)."""
    sweep = api.post("/sweeps", json=GRID | {"learning_rates": [0.01, 0.1, 1.0], "seeds": [0],
                                             "optimizers": ["sgd"]}).json()
    by_rate = {run["learning_rate"]: run for run in all_runs(api, sweep["id"])}
    finish(storage, by_rate[0.01], 0.1)
    for rate, losses in ((0.1, [1.0, 5.0, 50.0]), (1.0, [1.0, 0.5, 50.0])):  # climbed at once; dipped first
        started = start_run(storage, by_rate[rate]["id"], "test-worker")
        write_losses(storage, by_rate[rate]["id"], 0, losses, attempt=started.attempts)
        finish_run(storage, by_rate[rate]["id"], RunStatus.DIVERGED, final_loss=50.0, diverged_at=3,
                   attempt=started.attempts)
    given = []
    monkeypatch.setattr(plot_routes, "plot_final", lambda runs, **kwargs: given.extend(runs) or b"")
    assert api.get(f"/sweeps/{sweep['id']}/plot.png", params={"kind": "final"}).status_code == 200
    assert {run.learning_rate: (run.initial_loss, list(run.epochs)) for run in given} == {
        0.01: (None, [1]), 0.1: (1.0, [2]), 1.0: (1.0, [2])}
    ax = final_figure(given, title="final").axes[0]
    ringed = [x for line in ax.lines if line.get_marker() == "o" and line.get_markerfacecolor() == "none"
              for x in line.get_xdata()]
    assert sorted(ringed) == [0.01, 1.0]
