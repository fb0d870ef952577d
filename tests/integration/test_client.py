"""The Python client against the real API and workers, as a notebook uses it: submit, wait, DataFrames, delete."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from gradsweep.service.client import ApiError, Client
from gradsweep.service.settings import get_settings
from tests.support.curves import expected_curves

SWEEP = dict(learning_rates=[1e-3, 1e-2, 5e-2], seeds=range(3), optimizers=["sgd", "adam"], epochs=120,
             name="from a notebook")


@pytest.fixture
def client(stack) -> Client:
    return Client(base_url=stack.url, token=stack.env.get("GRADSWEEP_API_TOKEN", ""))


def test_submit_wait_and_read_a_sweep_as_dataframes_and_arrays(client):
    submitted = client.submit(**SWEEP)
    assert submitted["n_runs"] == 18 and "runs" not in submitted
    sweep = client.wait(submitted["id"], poll_seconds=0.1, progress=False)
    assert sweep["status"] == "finished" and sweep["counts"]["succeeded"] == 18
    assert submitted["id"] in [s["id"] for s in client.sweeps()]
    assert [s["id"] for s in client.sweeps(limit=1)] == [max(s["id"] for s in client.sweeps())]

    runs = client.runs(submitted["id"])
    frame = client.runs_frame(submitted["id"])
    assert list(frame.index) == [run["id"] for run in runs] and frame.index.name == "id"
    assert frame["final_loss"].tolist() == [run["final_loss"] for run in runs]
    assert set(frame.groupby("optimizer")["final_loss"].count()) == {9}
    assert str(frame["finished_at"].dtype).startswith("datetime64")
    assert len(client.runs_frame(submitted["id"], optimizer="adam")) == 9
    best = client.runs_frame(submitted["id"], sort="final_loss").iloc[0]
    assert best.name == sweep["best_run"]["id"]

    expected = expected_curves(runs)
    curves = client.curves(submitted["id"])
    assert set(curves) == set(expected)
    for run_id, (epochs, losses) in curves.items():
        assert losses.dtype == np.float64 and losses.tolist() == expected[run_id]
        assert epochs.tolist() == list(range(120))
    long = client.curves_frame(submitted["id"])
    assert len(long) == 18 * 120 and list(long.columns) == ["run_id", "learning_rate", "seed", "optimizer", "epoch",
                                                              "loss"]
    mean = long.groupby(["optimizer", "learning_rate", "epoch"])["loss"].mean()
    assert len(mean) == 2 * 3 * 120
    sampled = client.curves_frame(submitted["id"], points=20)
    assert sampled.groupby("run_id").size().max() <= 20
    assert set(sampled["loss"]) <= set(long["loss"])

    assert client.cancel(submitted["id"])["counts"]["cancelled"] == 0  # nothing left to cancel
    assert client.retry(submitted["id"])["counts"]["queued"] == 0
    client.delete_sweep(submitted["id"])
    with pytest.raises(ApiError, match="404") as missing:
        client.sweep(submitted["id"])
    assert (missing.value.status_code, missing.value.reason) == (404, f"no sweep {submitted['id']}")


def test_cancel_and_retry_from_a_notebook(client):
    long = client.submit(learning_rates=[1e-4], epochs=100_000, mode="scalar", name="long")  # minutes of training
    cancelled = client.cancel(long["id"])
    assert cancelled["status"] == "finished" and cancelled["counts"]["cancelled"] == 1
    retried = client.retry(long["id"])
    assert retried["counts"]["cancelled"] == 0 and retried["counts"]["queued"] + retried["counts"]["running"] == 1
    assert client.cancel(long["id"])["counts"]["cancelled"] == 1
    client.wait(long["id"], poll_seconds=0.1, progress=False)
    client.delete_sweep(long["id"])


def test_a_search_from_a_notebook_comes_back_with_each_runs_hyperparameters(client):
    parameters = {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 0.1},
                  "optimizer": {"values": ["momentum", "adam"]}, "beta": {"values": [0.5, 0.9]},
                  "epochs": {"value": 40}, "seed": {"values": [0, 1, 2], "repeat": True}}
    submitted = client.search(parameters, run_cap=5, search_seed=2)
    assert submitted["n_runs"] == 15 and submitted["search"]["method"] == "random"
    client.wait(submitted["id"], poll_seconds=0.1, progress=False)
    frame = client.runs_frame(submitted["id"])
    assert set(frame["status"]) == {"succeeded"}
    momentum, adam = frame[frame["optimizer"] == "momentum"], frame[frame["optimizer"] == "adam"]
    assert set(momentum["beta"]) <= {0.5, 0.9} and adam["beta"].isna().all() and set(adam["beta2"]) <= {0.999}
    # Seeds as repeats: every point is trained over the three, so a mean over seeds is a mean of three.
    assert set(frame.groupby(["optimizer", "learning_rate", "beta"], dropna=False)["seed"].count()) == {3}
    with pytest.raises(ApiError, match="422.*run_cap") as refused:
        client.search(parameters)  # random needs run_cap
    assert refused.value.status_code == 422
    assert refused.value.reason == "method random needs run_cap, the number of points to draw"
    with pytest.raises(ApiError) as refused:
        client.search(parameters | {"beta": {"values": [0.5, 1.5]}}, run_cap=2)
    assert refused.value.reason == "parameters.beta.values[1] = 1.5: Input should be less than 1"
    client.delete_sweep(submitted["id"])


def test_the_client_reads_the_url_and_the_token_from_the_settings_as_the_cli_does(monkeypatch):
    monkeypatch.setenv("GRADSWEEP_API_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("GRADSWEEP_API_TOKEN", "secret")
    get_settings.cache_clear()
    try:
        client = Client()
        assert str(client.http.base_url).rstrip("/") == "http://127.0.0.1:1"
        assert client.http.headers["Authorization"] == "Bearer secret"
        with pytest.raises(ApiError, match="cannot reach the API"):
            client.sweeps()
    finally:
        get_settings.cache_clear()


def test_the_progress_bar_of_a_bayesian_search_counts_its_run_cap_times_its_repeats_from_the_start(client):
    parameters = {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1}, "epochs": {"value": 30},
                  "seed": {"values": [0, 1, 2], "repeat": True}}
    submitted = client.search(parameters, run_cap=4, method="bayes", wave_size=2,
                              early_stopping={"type": "hyperband", "min_epochs": 4, "eta": 2})
    assert (submitted["n_runs"], submitted["planned_runs"]) == (6, 12)  # its first wave, of the 12 it plans
    shown = io.StringIO()
    sweep = client.wait(submitted["id"], poll_seconds=0.1, console=Console(file=shown, width=100))
    assert sweep["n_runs"] == sweep["planned_runs"] == 12
    assert "12/12 runs" in shown.getvalue() and "/6 runs" not in shown.getvalue()  # it said 12/6 (issue 24)
    client.delete_sweep(submitted["id"])
