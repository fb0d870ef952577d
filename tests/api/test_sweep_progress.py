"""A sweep's progress in its summary (issue 24): `planned_runs`, the runs it will have when done, counted from the
start, so that a Bayesian search of 30 points × 3 seeds reads 0/90 while its first wave of 15 runs trains."""

from __future__ import annotations

from gradsweep.service.storage import RunStatus, Storage
from gradsweep.worker.waves import propose_next_wave
from tests.api.test_bayes import train_wave

# The README's hyperband.yaml, with fewer epochs.
HYPERBAND = {"name": "hyperband", "method": "bayes", "run_cap": 30, "wave_size": 5,
             "early_stopping": {"type": "hyperband", "min_epochs": 8, "eta": 4}, "parameters": {
                 "learning_rate": {"distribution": "log_uniform", "min": 0.001, "max": 1},
                 "optimizer": {"values": ["sgd", "momentum", "adam"]}, "epochs": {"value": 40},
                 "seed": {"values": [0, 1, 2], "repeat": True}}}


def test_a_bayesian_search_plans_its_run_cap_times_its_repeats_from_the_first_wave(api, queued, api_storage):
    created = api.post("/sweeps", json=HYPERBAND)
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert (sweep["n_runs"], sweep["planned_runs"], sweep["n_finished"]) == (15, 90, 0)

    train_wave(api_storage, sweep["id"])
    between = api.get(f"/sweeps/{sweep['id']}").json()
    assert (between["status"], between["n_finished"], between["planned_runs"]) == ("running", 15, 90)
    assert len(propose_next_wave(api_storage, sweep["id"], queued.extend)) == 15
    assert api.get(f"/sweeps/{sweep['id']}").json()["planned_runs"] == 90
    # The list says it as well, so a client pages through sweeps without reading each summary.
    assert [(listed["id"], listed["planned_runs"]) for listed in api.get("/sweeps").json()] == [(sweep["id"], 90)]


def test_a_search_cancelled_between_waves_plans_only_the_runs_it_has(api, queued, api_storage):
    sweep = api.post("/sweeps", json=HYPERBAND).json()
    train_wave(api_storage, sweep["id"])
    assert api.post(f"/sweeps/{sweep['id']}/cancel").status_code == 200
    summary = api.get(f"/sweeps/{sweep['id']}").json()
    assert (summary["status"], summary["n_runs"], summary["planned_runs"]) == ("finished", 15, 15)


def test_grids_and_random_searches_plan_the_runs_they_have(api, api_storage: Storage):
    grid = api.post("/sweeps", json={"name": "grid", "learning_rates": [0.01, 0.1], "seeds": [0, 1, 2],
                                     "epochs": 5}).json()
    assert grid["planned_runs"] == grid["n_runs"] == 6
    random = api.post("/sweeps", json=HYPERBAND | {"method": "random", "wave_size": None}).json()
    assert random["planned_runs"] == random["n_runs"] == 90
    assert all(run.status == RunStatus.QUEUED for run in api_storage.list_runs(random["id"]))
