"""Every field of `POST /sweeps` is checked: bad input gets a 422 naming the field, and nothing is stored or queued.

The API runs in process (tests/api/conftest.py); the integration tests repeat the key
cases against real Redis and PostgreSQL.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gradsweep.service.api.deps import get_enqueue, get_storage
from gradsweep.service.api.main import create_app
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import Storage
from tests.support.sweeps import names_field, with_runs

VALID = {"name": "ok", "learning_rates": [0.01], "seeds": [0], "epochs": 10}


BAD = [
    ("learning_rates", {"learning_rates": [0.0]}),
    ("learning_rates", {"learning_rates": [-0.1]}),
    ("learning_rates", {"learning_rates": ["0.1"]}),
    ("learning_rates", {"learning_rates": [True]}),
    ("learning_rates", {"learning_rates": []}),
    ("learning_rates", {"learning_rates": 0.1}),
    ("learning_rates", {"learning_rates": [0.1] * 10_001}),
    ("learning_rates", {"learning_rates": {"logspace": [1e-3, 1e-1]}}),
    ("learning_rates", {"learning_rates": {"logspace": [1e-1, 1e-3, 5]}}),
    ("learning_rates", {"learning_rates": {"logspace": [0, 1e-1, 5]}}),
    ("learning_rates", {"learning_rates": {"logspace": [1e-3, 1e-1, 5], "extra": 1}}),
    ("seeds", {"seeds": [-1]}),
    ("seeds", {"seeds": [2**32]}),
    ("seeds", {"seeds": [1.5]}),
    ("seeds", {"seeds": []}),
    ("epochs", {"epochs": 0}),
    ("epochs", {"epochs": -5}),
    ("epochs", {"epochs": 100_001}),
    ("epochs", {"epochs": "10"}),
    ("optimizers", {"optimizers": ["lbfgs"]}),
    ("optimizers", {"optimizers": []}),
    ("mode", {"mode": "gpu"}),
    ("n_samples", {"n_samples": 0}),
    ("n_features", {"n_features": 0}),
    ("data_seed", {"data_seed": -1}),
    ("name", {"name": ""}),
    ("name", {"name": "x" * 100_000}),
    ("surprise", {"surprise": 1}),
]
BAD_TASKS = [
    {"n_samples": 100_000, "n_features": 10_000},
    {"mode": "scalar", "n_samples": 1_000, "n_features": 1_000},
]


@pytest.mark.parametrize("field, change", BAD, ids=[f"{f}={str(c[f])[:30]}" for f, c in BAD])
def test_bad_input_is_refused_by_name_and_nothing_is_stored_or_queued(api, queued, field, change):
    response = api.post("/sweeps", json={**VALID, **change})
    assert response.status_code == 422, response.text
    assert names_field(response, field), response.json()
    assert api.get("/sweeps").json() == [] and queued == []


@pytest.mark.parametrize("change", BAD_TASKS)
def test_tasks_too_large_for_a_worker_are_refused(api, queued, change):
    response = api.post("/sweeps", json={**VALID, **change})
    assert response.status_code == 422 and "n_samples × n_features" in response.text
    assert queued == []


@pytest.mark.parametrize("missing", ["name", "learning_rates", "seeds", "epochs"])
def test_missing_fields_are_named(api, missing):
    body = {k: v for k, v in VALID.items() if k != missing}
    response = api.post("/sweeps", json=body)
    assert response.status_code == 422 and names_field(response, missing)


def test_non_finite_learning_rates_are_refused(api, queued):
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        response = api.post("/sweeps", content=f'{{"name": "x", "learning_rates": [{literal}], "seeds": [0], '
                                                f'"epochs": 5}}', headers={"content-type": "application/json"})
        assert response.status_code == 422 and names_field(response, "learning_rates"), literal
    assert queued == []


def test_a_grid_larger_than_the_limit_is_refused_whole(api, queued):
    response = api.post("/sweeps", json={**VALID, "learning_rates": [0.01] * 101, "seeds": list(range(100))})
    assert response.status_code == 422
    assert "10000" in response.text and queued == []


def test_malformed_json_and_wrong_content_type_are_422(api, queued):
    assert api.post("/sweeps", content="{not json", headers={"content-type": "application/json"}).status_code == 422
    assert api.post("/sweeps", content="name=x", headers={"content-type": "text/plain"}).status_code == 422
    assert queued == []


def test_a_good_sweep_is_stored_and_every_run_queued(api, queued):
    body = {**VALID, "learning_rates": {"logspace": [1e-3, 1e-1, 3]}, "seeds": [0, 1], "optimizers": ["sgd", "adam"]}
    response = api.post("/sweeps", json=body)
    assert response.status_code == 201
    sweep = with_runs(api, response.json())
    assert sweep["n_runs"] == 12 and sweep["counts"]["queued"] == 12
    assert sorted(run_id for job in queued for run_id in job.run_ids) == sorted(run["id"] for run in sweep["runs"])
    assert sorted({run["learning_rate"] for run in sweep["runs"]}) == pytest.approx([1e-3, 1e-2, 1e-1])
    # Runs that differ only in learning rate and seed train together: a job of sgd runs, one of adam runs.
    optimizer = {run["id"]: run["optimizer"] for run in sweep["runs"]}
    assert [(len(job.run_ids), job.batch_size, {optimizer[i] for i in job.run_ids}) for job in queued] == [
        (6, 6, {"sgd"}), (6, 6, {"adam"})]


def test_a_sweep_may_ask_for_one_run_per_job(api, queued):
    sweep = with_runs(api, api.post("/sweeps", json={**VALID, "seeds": [0, 1, 2], "batched": False}).json())
    assert [job.run_ids for job in queued] == [(run["id"],) for run in sweep["runs"]]
    assert {run["batch_size"] for run in sweep["runs"]} == {1}
    assert names_field(api.post("/sweeps", json={**VALID, "batched": "no"}), "batched")


def test_when_the_queue_fails_nothing_is_stored(api):
    from gradsweep.worker.queue import BrokerUnavailable

    def broken(run_ids):
        raise BrokerUnavailable("no broker")

    api.app.dependency_overrides[get_enqueue] = lambda: broken
    response = api.post("/sweeps", json=VALID)
    assert response.status_code == 503 and "nothing was stored" in response.json()["detail"]
    assert api.get("/sweeps").json() == []


@pytest.mark.parametrize("path", ["/sweeps/999", "/runs/999", "/sweeps/999/losses", "/sweeps/999/plot.png"])
def test_unknown_ids_are_404(api, path):
    assert api.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/sweeps/abc", "/sweeps/0", "/runs/-1", "/sweeps/99999999999999999999999"])
def test_impossible_ids_are_422(api, path):
    assert api.get(path).status_code == 422


def test_compare_needs_a_list_of_ids(api):
    response = api.get("/compare/plot.png", params={"sweeps": "1,two"})
    assert response.status_code == 422 and names_field(response, "sweeps")


def test_with_a_token_every_request_but_healthz_needs_it(api, monkeypatch):
    monkeypatch.setenv("GRADSWEEP_API_TOKEN", "s3cret")
    get_settings.cache_clear()
    try:
        assert api.get("/sweeps").status_code == 401
        assert api.get("/sweeps", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert api.get("/sweeps", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert api.get("/healthz").status_code in (200, 503)  # open; its answer depends on the broker
    finally:
        monkeypatch.delenv("GRADSWEEP_API_TOKEN")
        get_settings.cache_clear()


def test_the_openapi_document_and_docs_are_served(api):
    assert "/sweeps" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200


def test_a_body_over_the_size_limit_is_refused_before_parsing(api, queued):
    million = {**VALID, "learning_rates": [0.01] * 1_000_000}
    response = api.post("/sweeps", json=million)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        yield b'{"name": "x", "learning_rates": ['
        for _ in range(200_000):
            yield b"0.01, "
        yield b'0.01], "seeds": [0], "epochs": 5}'

    streamed = api.post("/sweeps", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert queued == [] and api.get("/sweeps").json() == []


def test_cors_is_closed_unless_configured(tmp_path, monkeypatch):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    storage = Storage(f"sqlite:///{tmp_path}/cors.sqlite")
    storage.upgrade()
    for origins, allowed in (("[]", None), ('["http://elsewhere.example"]', "http://elsewhere.example")):
        monkeypatch.setenv("GRADSWEEP_CORS_ORIGINS", origins)
        get_settings.cache_clear()
        app = create_app()
        app.dependency_overrides[get_storage] = lambda: storage
        with TestClient(app, base_url="http://127.0.0.1") as client:
            response = client.options("/sweeps", headers=preflight)
            assert response.headers.get("access-control-allow-origin") == allowed
    get_settings.cache_clear()
    storage.close()
