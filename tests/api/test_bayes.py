"""A Bayesian search's waves, in process: the first stored with the sweep, each next one proposed once its wave before
has ended, the same from the same history, stored once however often proposed (tests/integration/ trains them)."""

from __future__ import annotations

import pytest

from gradsweep.engine.tasks.linear_regression import train
from gradsweep.service.domain import bayes
from gradsweep.service.domain.search import SearchSpec
from gradsweep.service.storage import RunStatus, Storage
from gradsweep.worker.waves import propose_next_wave
from tests.support.writes import finish_run

BAYES = {"name": "bayes", "method": "bayes", "run_cap": 10, "wave_size": 4, "search_seed": 3, "parameters": {
    "learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1.0},
    "optimizer": {"values": ["sgd", "adam"]}, "epochs": {"value": 30}, "seed": {"values": [0, 1], "repeat": True}}}


@pytest.fixture
def storage(api_storage: Storage) -> Storage:
    return api_storage


def train_wave(storage: Storage, sweep_id: int) -> None:
    """Ends every queued run of the sweep as a worker would, with the final loss `train` gives it."""
    for run in storage.list_runs(sweep_id):
        if run.status == RunStatus.QUEUED:
            config = run.config
            result = train(config.learning_rate, config.seed, config.epochs, optimizer=config.optimizer,
                           constants=config.constants)
            status = RunStatus.DIVERGED if result.diverged else RunStatus.SUCCEEDED
            assert finish_run(storage, run.id, status, final_loss=result.losses[-1], losses=result.losses,
                                      diverged_at=result.diverged_at)


def points(storage: Storage, sweep_id: int) -> list[tuple]:
    return sorted((run.point, run.config.seed, run.config.learning_rate, run.config.optimizer)
                  for run in storage.list_runs(sweep_id))


def test_waves_are_proposed_one_after_the_other_until_run_cap(api, queued, storage):
    created = api.post("/sweeps", json=BAYES)
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert sweep["status"] == "queued" and sweep["n_runs"] == 8  # 4 points × 2 seeds
    assert sweep["search"]["wave_size"] == 4 and sweep["search"]["run_cap"] == 10
    assert propose_next_wave(storage, sweep["id"], queued.extend) == []  # not before its wave has ended

    train_wave(storage, sweep["id"])
    assert api.get(f"/sweeps/{sweep['id']}").json()["status"] == "running"  # between waves: more to come
    assert len(propose_next_wave(storage, sweep["id"], queued.extend)) == 8
    train_wave(storage, sweep["id"])
    assert len(propose_next_wave(storage, sweep["id"], queued.extend)) == 4  # the last: 2 points, to run_cap
    train_wave(storage, sweep["id"])
    assert propose_next_wave(storage, sweep["id"], queued.extend) == []
    summary = api.get(f"/sweeps/{sweep['id']}").json()
    assert summary["status"] == "finished" and summary["n_runs"] == 20
    assert [point for point, *_ in points(storage, sweep["id"])] == [p for p in range(10) for _ in range(2)]
    assert len({(lr, optimizer) for _, _, lr, optimizer in points(storage, sweep["id"])}) == 10


def test_a_wave_proposed_again_is_the_same_and_stored_once(api, queued, storage):
    sweep_id = api.post("/sweeps", json=BAYES).json()["id"]
    train_wave(storage, sweep_id)
    history = storage.list_runs(sweep_id)
    stored = {name: value for name, value in BAYES.items() if name != "name"}  # the search kept with the sweep
    wave = bayes.next_wave(SearchSpec.of_stored(stored | {"wave_size": 4}), history, "tensor")
    assert wave == bayes.next_wave(SearchSpec.of_stored(stored), history, "tensor")  # a proposer killed and started again
    assert sorted(point for point, _ in wave) == [4, 4, 5, 5, 6, 6, 7, 7]
    assert len(propose_next_wave(storage, sweep_id, queued.extend)) == 8
    points_, configs = zip(*wave)
    assert storage.add_runs(sweep_id, configs, points_, queued.extend, batch_sizes=[1] * 8, searching=True) == []
    assert storage.get_sweep(sweep_id).n_runs == 16
    # The same request makes the same first wave; its second follows from the same losses, so it too is the same.
    again = api.post("/sweeps", json=BAYES | {"name": "again"}).json()["id"]
    train_wave(storage, again)
    propose_next_wave(storage, again, queued.extend)
    assert points(storage, again) == points(storage, sweep_id)


def test_a_cancelled_search_proposes_no_more_waves(api, queued, storage):
    sweep_id = api.post("/sweeps", json=BAYES).json()["id"]
    assert api.post(f"/sweeps/{sweep_id}/cancel").status_code == 200
    assert propose_next_wave(storage, sweep_id, queued.extend) == []
    assert api.get(f"/sweeps/{sweep_id}").json()["status"] == "finished"


def test_a_cancelled_search_retried_goes_on_to_its_run_cap(api, queued, storage):
    sweep_id = api.post("/sweeps", json=BAYES).json()["id"]
    assert api.post(f"/sweeps/{sweep_id}/cancel").status_code == 200
    assert api.post(f"/sweeps/{sweep_id}/retry").status_code == 200
    assert propose_next_wave(storage, sweep_id, queued.extend) == []  # its first wave again, queued
    train_wave(storage, sweep_id)
    assert len(propose_next_wave(storage, sweep_id, queued.extend)) == 8  # the waves come again
    train_wave(storage, sweep_id)
    assert len(propose_next_wave(storage, sweep_id, queued.extend)) == 4
    train_wave(storage, sweep_id)
    summary = api.get(f"/sweeps/{sweep_id}").json()
    assert summary["status"] == "finished" and summary["n_runs"] == summary["planned_runs"] == 20


def test_a_finished_search_retried_proposes_nothing_more(api, queued, storage):
    sweep_id = api.post("/sweeps", json=BAYES).json()["id"]
    for _ in range(3):
        train_wave(storage, sweep_id)
        propose_next_wave(storage, sweep_id, queued.extend)
    assert api.post(f"/sweeps/{sweep_id}/retry").status_code == 200
    assert storage.waiting_searches() == []
    assert api.get(f"/sweeps/{sweep_id}").json()["n_runs"] == 20
