"""What the service refuses, checked on real parts: nothing reaches the queue or the database."""

from __future__ import annotations

import redis

from gradsweep.worker.app import QUEUE
from tests.integration.conftest import settings_for
from tests.support.processes import Stack, free_port, gradsweep

BAD_BODIES = {
    "learning_rates": {"name": "x", "learning_rates": [0], "seeds": [0], "epochs": 5},
    "seeds": {"name": "x", "learning_rates": [0.1], "seeds": [2**32], "epochs": 5},
    "epochs": {"name": "x", "learning_rates": [0.1], "seeds": [0], "epochs": 0},
    "surprise": {"name": "x", "learning_rates": [0.1], "seeds": [0], "epochs": 5, "surprise": True},
}


def test_bad_sweeps_store_nothing_and_queue_nothing_on_redis_and_postgresql(request, tmp_path):
    stack = Stack(settings_for("redis+postgresql", request, tmp_path), tmp_path)  # an API, no worker
    queue = redis.Redis.from_url(stack.env["GRADSWEEP_BROKER_URL"])
    try:
        stack.migrate()
        stack.start_api()
        for field, body in BAD_BODIES.items():
            response = stack.http.post("/sweeps", json=body)
            assert response.status_code == 422
            assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}
        assert stack.http.get("/sweeps").json() == []
        assert queue.llen(QUEUE) == 0

        good = stack.http.post("/sweeps", json={**BAD_BODIES["seeds"], "seeds": [0, 1, 2, 3]})
        assert good.status_code == 201
        assert queue.llen(QUEUE) == 2  # two jobs of two runs: so the zero above was a real zero
    finally:
        stack.stop()
        queue.close()


def test_with_the_broker_down_a_sweep_is_refused_with_503_and_nothing_is_stored(tmp_path):
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    stack = Stack({"GRADSWEEP_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
                   "GRADSWEEP_BROKER_URL": dead_broker}, tmp_path)
    try:
        stack.migrate()
        stack.start_api(healthy=False)
        health = stack.http.get("/healthz")
        assert health.status_code == 503 and health.json()["broker"].startswith("unavailable")
        response = stack.http.post("/sweeps", json=BAD_BODIES["seeds"] | {"seeds": [0]})
        assert response.status_code == 503
        assert "broker" in response.json()["detail"] and "nothing was stored" in response.json()["detail"]
        assert stack.http.get("/sweeps").json() == []
    finally:
        stack.stop()


def test_api_and_worker_refuse_an_unmigrated_database(tmp_path):
    env = Stack({"GRADSWEEP_DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite",
                 "GRADSWEEP_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.sqlite"}, tmp_path).env
    for command in (["api", "--port", str(free_port())], ["worker"]):
        refused = gradsweep(*command, env=env, cwd=tmp_path, timeout=60)
        assert refused.returncode == 1
        assert "not migrated" in refused.stdout and "gradsweep db upgrade" in refused.stdout
