"""Faults injected for real: nothing lost, nothing doubled, nothing left `running`.

Workers are SIGKILLed mid-run, a Redis of the test's own is stopped and started,
PostgreSQL connections are terminated and cut, a PostgreSQL of the test's own
crashes, a poison run kills every worker that takes it, and a pickled message is
put on the queue. Each test ends by checking every run against an uninterrupted
training of the same config.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, make_url, text

from tests.support.curves import (
    assert_each_epoch_stored_once, assert_early_stopping_kept_the_curves, expected_curves, expected_stops,
)
from gradsweep.worker.app import TRAIN_JOB
from tests.integration.conftest import settings_for
from tests.integration.faults import PostgresServer, RedisServer, TcpProxy, count, kill, pid_of
from tests.support.processes import Stack, free_port
from tests.support.services import wait_for
from tests.support.sweeps import all_runs

LEASE = 3.0  # GRADSWEEP_RUN_LEASE_SECONDS for these tests: a vanished worker's run is taken back within ~4 s
FAULT_SETTINGS = {"GRADSWEEP_RUN_LEASE_SECONDS": str(LEASE), "GRADSWEEP_MAX_ATTEMPTS": "3"}


def started(stack: Stack, workers: int = 1, concurrency: int = 2, **settings: str) -> Stack:
    stack.env.update(FAULT_SETTINGS | settings)
    stack.migrate()
    for i in range(workers):
        stack.start_worker(concurrency=concurrency, name=f"worker{i}")
    stack.start_api()
    return stack


@pytest.fixture(params=["redis+postgresql", "embedded"])
def stack(request: pytest.FixtureRequest, tmp_path: Path):
    running = Stack(settings_for(request.param, request, tmp_path), tmp_path)
    running.backend = request.param
    yield running
    running.stop()


def submit(stack: Stack, **sweep) -> int:
    body = {"name": "faults", "learning_rates": [0.01], "seeds": [0], "epochs": 20_000} | sweep
    response = stack.http.post("/sweeps", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def runs_of(stack: Stack, sweep_id: int) -> list[dict]:
    return all_runs(stack.http, sweep_id)


def assert_every_run_complete_and_exact(stack: Stack, sweep_id: int, failed: tuple[int, ...] = ()) -> dict:
    """Every run but `failed` succeeded, each epoch stored once, equal bit for bit to its batch trained uninterrupted."""
    sweep = stack.wait_for_sweep(sweep_id, timeout=240)
    unfinished = {run["id"]: (run["status"], run["attempts"], run["error"]) for run in sweep["runs"]
                  if run["status"] != "succeeded" and run["id"] not in failed}
    assert not unfinished, unfinished
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep_id, sweep["runs"])
    expected = expected_curves(sweep["runs"])
    for run in sweep["runs"]:
        if run["id"] not in failed:
            assert run["epochs_done"] == run["epochs"]
            assert stack.http.get(f"/runs/{run['id']}").json()["losses"] == expected[run["id"]]
    count("runs checked after faults", sweep["n_runs"] - len(failed))
    return sweep


def test_a_worker_process_killed_mid_run_is_redone_to_the_same_curve(stack):
    started(stack)
    sweep_id = submit(stack, epochs=100_000)
    run = wait_for(lambda: next((r for r in runs_of(stack, sweep_id) if r["epochs_done"] > 0), None))
    assert kill(pid_of(run))
    count("worker processes killed mid-run")

    sweep = assert_every_run_complete_and_exact(stack, sweep_id)
    assert sweep["runs"][0]["attempts"] == 2


def interrupted_attempts(runs: list[dict]) -> int:
    """Attempts that did not end the run: each is a kill that hit a run mid-way."""
    return sum(run["attempts"] - 1 for run in runs if run["attempts"] > 0)


def test_ten_kills_of_batched_jobs_at_random_moments_lose_and_double_nothing(stack):
    started(stack, GRADSWEEP_MAX_ATTEMPTS="7", GRADSWEEP_MIN_JOBS_PER_SWEEP="3")
    # Twelve runs in three jobs of four, each a few seconds long, so there is always a job to hit;
    # each job may be killed five times (15 chances for 10 kills) and still succeed on a later attempt.
    sweep_id = submit(stack, learning_rates=[0.005, 0.01, 0.02], seeds=[0, 1, 2, 3], epochs=100_000)
    assert [run["batch_size"] for run in runs_of(stack, sweep_id)] == [4] * 12
    rng = random.Random(7)
    while interrupted_attempts(runs := runs_of(stack, sweep_id)) < 4 * 10:
        assert stack.http.get(f"/sweeps/{sweep_id}").json()["status"] != "finished", "finished before ten kills"
        running = [r for r in runs if r["status"] == "running" and r["epochs_done"] > 0 and r["attempts"] < 6]
        if running:
            kill(pid_of(rng.choice(running)))
        time.sleep(rng.uniform(0.2, 0.6))

    sweep = assert_every_run_complete_and_exact(stack, sweep_id)
    kills = interrupted_attempts(sweep["runs"]) // 4  # each kill interrupts an attempt of each of a job's runs
    assert kills >= 10 and sweep["counts"]["running"] == 0
    count("worker processes killed mid-job", kills)


def test_a_poison_run_in_a_batch_is_isolated_and_fails_alone(stack):
    started(stack, GRADSWEEP_MIN_JOBS_PER_SWEEP="1")
    # One job of eight runs; whichever process trains run `poison` dies, at every attempt.
    sweep_id = submit(stack, learning_rates=[0.005, 0.01, 0.02, 0.04], seeds=[0, 1], epochs=50_000)
    runs = runs_of(stack, sweep_id)
    assert {run["batch_size"] for run in runs} == {8}
    poison = runs[5]["id"]
    killed = set()
    while (run := stack.http.get(f"/runs/{poison}").json())["status"] != "failed":
        assert run["status"] != "succeeded", "the poison run outlived its kills"
        if run["status"] == "running" and run["epochs_done"] > 0 and run["attempts"] not in killed:
            kill(pid_of(run))
            killed.add(run["attempts"])
        time.sleep(0.05)

    # Three attempts of the whole job (GRADSWEEP_MAX_ATTEMPTS), then one each of its half, its quarter, and the
    # run alone. (A killed job's message that Celery hands back after the split starts nothing: it is older. Handed
    # back before the reaper takes the runs back, it is the redo itself, and that attempt comes on top: one in four
    # runs here, on the embedded broker.)
    assert run["attempts"] == len(killed) and 3 + 3 <= run["attempts"] <= 3 + 3 + 2
    assert f"{run['attempts']} attempts" in run["error"]
    sweep = assert_every_run_complete_and_exact(stack, sweep_id, failed=(poison,))
    assert sweep["counts"] == {**sweep["counts"], "succeeded": 7, "failed": 1}
    count("poison runs isolated in a batch and failed alone")
    count("worker processes killed mid-job", len(killed))


def test_a_run_whose_whole_worker_vanished_is_taken_back_within_the_lease(stack):
    started(stack)
    sweep_id = submit(stack, epochs=100_000)
    wait_for(lambda: runs_of(stack, sweep_id)[0]["epochs_done"] > 0)
    stack.kill_all_of("worker0")  # the whole worker: its main process and its pool
    killed_at = time.monotonic()
    count("whole workers killed mid-run")

    stack.start_worker(concurrency=2, name="replacement")
    wait_for(lambda: runs_of(stack, sweep_id)[0]["attempts"] == 2, timeout=60)
    taken_back = time.monotonic() - killed_at
    assert taken_back < LEASE + 10  # lease, a reaper pass, and the new worker's start
    assert_every_run_complete_and_exact(stack, sweep_id)


def test_a_poison_run_fails_after_max_attempts_and_the_worker_goes_on(stack):
    started(stack)
    poison = submit(stack, epochs=100_000)
    attempts_killed = set()
    while len(attempts_killed) < 3:
        run = runs_of(stack, poison)[0]
        if run["status"] == "running" and run["attempts"] not in attempts_killed and run["epochs_done"] > 0:
            kill(pid_of(run))
            attempts_killed.add(run["attempts"])
        assert run["status"] != "succeeded", "the poison run outlived its kills"
        time.sleep(0.05)

    run = wait_for(lambda: (r := runs_of(stack, poison)[0])["status"] == "failed" and r, timeout=60)
    assert run["attempts"] == 3 and "3 attempts" in run["error"]
    count("poison runs failed after max attempts")

    healthy = submit(stack, epochs=500)
    assert_every_run_complete_and_exact(stack, healthy)


def test_the_broker_restarting_loses_no_queued_run(request, tmp_path):
    own_redis = RedisServer(tmp_path, free_port())
    own_redis.start()
    settings = settings_for("redis+postgresql", request, tmp_path) | {"GRADSWEEP_BROKER_URL": own_redis.url}
    # Twelve jobs of two runs: most wait on the queue while the broker restarts.
    stack = started(Stack(settings, tmp_path), GRADSWEEP_MIN_JOBS_PER_SWEEP="12")
    try:
        sweep_id = submit(stack, learning_rates=[0.005, 0.01, 0.02, 0.04], seeds=[0, 1, 2, 3, 4, 5], epochs=20_000)
        worker = "worker0"
        for restart in range(2):
            wait_for(lambda: stack.http.get(f"/sweeps/{sweep_id}").json()["counts"]["queued"] > 0
                     and any(r["status"] == "succeeded" for r in runs_of(stack, sweep_id)))
            own_redis.stop()
            refused = stack.http.post("/sweeps", json={"name": "while down", "learning_rates": [0.01],
                                                       "seeds": [0], "epochs": 10})
            assert refused.status_code == 503 and "broker" in refused.json()["detail"]
            assert [s["name"] for s in stack.http.get("/sweeps").json()] == ["faults"]
            time.sleep(1)
            own_redis.start()
            count("broker restarts survived")
            worker = restart_if_crashed(stack, worker, f"worker-restarted-{restart}")
        assert_every_run_complete_and_exact(stack, sweep_id)
    finally:
        stack.stop()
        own_redis.stop()


def restart_if_crashed(stack: Stack, name: str, replacement: str) -> str:
    """Starts `replacement` if worker `name` died, as docker-compose.yml's `restart: unless-stopped` would;
    returns the name of the worker now running.

    Celery 5.7's worker can die ("Unrecoverable error: AttributeError ... 'hostname'")
    when the broker goes away while it acknowledges a message: kombu then reads the
    settings of a connection that is already closed. The run was stored before the
    acknowledgement, so nothing is lost; the worker has to be started again.
    """
    time.sleep(0.5)
    if "Unrecoverable error" not in stack.log(name):
        assert stack.named[name].poll() is None, stack.log(name)[-3000:]
        return name
    stack.named[name].wait(timeout=30)  # it shuts its pool down first
    stack.start_worker(concurrency=2, name=replacement)
    count("workers restarted after Celery died with the broker")
    return replacement


def test_terminated_and_cut_database_connections_are_survived(request, tmp_path):
    settings = settings_for("redis+postgresql", request, tmp_path)
    url = make_url(settings["GRADSWEEP_DATABASE_URL"])
    proxy = TcpProxy(url.port or 5432)
    settings["GRADSWEEP_DATABASE_URL"] = url.set(port=proxy.port).render_as_string(hide_password=False)
    stack = started(Stack(settings, tmp_path))
    admin = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    try:
        sweep_id = submit(stack, learning_rates=[0.005, 0.01, 0.02], seeds=[0, 1], epochs=30_000)
        wait_for(lambda: any(r["epochs_done"] > 0 for r in runs_of(stack, sweep_id)))
        for _ in range(3):
            with admin.connect() as connection:
                terminated = connection.execute(text(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
            count("database connections terminated", terminated)
            time.sleep(0.7)

        proxy.cut()  # now the database is unreachable, for the API and the workers alike
        down = stack.http.get(f"/sweeps/{sweep_id}")
        assert down.status_code == 503 and down.json() == {"detail": "the database is unavailable; try again shortly"}
        assert stack.http.post("/sweeps", json={"name": "x", "learning_rates": [0.1], "seeds": [0],
                                                "epochs": 5}).status_code == 503
        time.sleep(3)
        proxy.restore()
        count("database outages survived")
        assert_every_run_complete_and_exact(stack, sweep_id)
    finally:
        stack.stop()
        proxy.close()
        admin.dispose()


def test_a_database_crash_forgets_the_workers_last_commits_and_every_run_is_redone(request, tmp_path):
    # Workers commit without waiting for the disk, so the crash of the database's machine loses their last
    # commits: starts, batches of losses and outcomes they were told had been stored.
    server = PostgresServer(free_port())
    server.start()
    settings = settings_for("redis+postgresql", request, tmp_path) | {"GRADSWEEP_DATABASE_URL": server.url}
    stack = started(Stack(settings, tmp_path))
    database = create_engine(server.url)
    progress = text("SELECT id, status, epochs_done FROM runs ORDER BY id")
    try:
        # Runs of about 2 s, which write their losses every 0.5 s: the crash falls in the middle of two of them.
        sweep_id = submit(stack, learning_rates=[0.005, 0.01], seeds=[0, 1, 2, 3], epochs=100_000)
        wait_for(lambda: sum(r["epochs_done"] > 0 for r in runs_of(stack, sweep_id)) >= 2)

        server.pause_wal_writer()
        time.sleep(1.0)
        with database.connect() as connection:
            seen = connection.execute(progress).all()  # what the workers committed, as any reader saw it
        server.kill()
        database.dispose()
        server.start()
        with database.connect() as connection:
            recovered = connection.execute(progress).all()
        forgotten = [(before, after) for before, after in zip(seen, recovered, strict=True)
                     if (before.status, before.epochs_done) != (after.status, after.epochs_done)]
        assert forgotten, "the crash forgot no commit: this test tests nothing"
        count("database crashes survived")
        count("runs whose last commits a database crash forgot", len(forgotten))

        assert_every_run_complete_and_exact(stack, sweep_id)
    finally:
        stack.stop()
        database.dispose()
        server.stop()


def test_a_pickled_message_is_refused_and_the_worker_keeps_serving(request, tmp_path):
    from gradsweep.service.storage import RunConfig, Storage

    # A long lease: with the fault tests' 3 s one, the reaper would rightly enqueue the
    # stored run again (queued, no message waiting) during the 3 s this test waits.
    stack = started(Stack(settings_for("redis+postgresql", request, tmp_path), tmp_path),
                    GRADSWEEP_RUN_LEASE_SECONDS="600")
    try:
        storage = Storage(stack.env["GRADSWEEP_DATABASE_URL"])
        config = RunConfig(0.01, 0, "sgd", 200, 100, 50, 0, "tensor")
        _, (run,) = storage.create_sweep("pickled", [config], lambda ids: None)  # stored, not queued
        storage.close()
        from celery import Celery

        sender = Celery(broker=stack.env["GRADSWEEP_BROKER_URL"])
        sender.send_task(TRAIN_JOB, args=[[run.id]], queue="gradsweep", serializer="pickle")
        time.sleep(3)
        assert stack.http.get(f"/runs/{run.id}").json()["status"] == "queued"  # never ran
        assert "untrusted content" in stack.log("worker0") or "ContentDisallowed" in stack.log("worker0")
        count("pickled messages refused")

        sender.send_task(TRAIN_JOB, args=[[run.id]], queue="gradsweep", serializer="json")
        wait_for(lambda: stack.http.get(f"/runs/{run.id}").json()["status"] == "succeeded", timeout=30)
    finally:
        stack.stop()
        redis.Redis.from_url(stack.env["GRADSWEEP_BROKER_URL"]).flushdb()


# The kill tests of searches run on the deployment stack only: what they add to the kills above is the search's
# own state (rungs, waves), stored alike on both backends, and each takes a minute or two (CI's budget is 30).
ON_POSTGRESQL = pytest.mark.parametrize("stack", ["redis+postgresql"], indirect=True)


@ON_POSTGRESQL
def test_a_job_with_early_stopping_killed_between_its_rungs_replays_their_decisions(stack):
    started(stack, GRADSWEEP_MIN_JOBS_PER_SWEEP="1")
    # Twelve runs in one batch, judged together after 10,000, 30,000 and 90,000 epochs: 4 go past the first
    # rung, 1 past the second. Killed between the two, the job is redone for the 4; judged again at the first
    # rung against their own first decisions, rather than given them back, 16 would keep 5 and stop 1 or 2 of them.
    stopping = {"type": "successive_halving", "min_epochs": 10_000, "eta": 3}
    body = {"name": "stopping", "method": "random", "run_cap": 12, "search_seed": 1, "early_stopping": stopping,
            "parameters": {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 0.05},
                           "epochs": {"value": 100_000}}}
    created = stack.http.post("/sweeps", json=body)
    assert created.status_code == 201, created.text
    sweep_id, database = created.json()["id"], create_engine(stack.env["GRADSWEEP_DATABASE_URL"])

    def judged(rung: int) -> int:
        with database.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM rungs WHERE sweep_id = :s AND rung = :r"),
                                      {"s": sweep_id, "r": rung}).scalar_one()

    wait_for(lambda: judged(10_000), timeout=120)
    assert kill(pid_of(next(r for r in runs_of(stack, sweep_id) if r["status"] == "running")))
    assert judged(30_000) == 0, "killed too late: after the second rung"
    count("worker processes killed mid-job")

    sweep = stack.wait_for_sweep(sweep_id, timeout=240)
    database.dispose()
    runs = sweep["runs"]
    # The 8 stopped at 10,000 are recorded stopped just after their decision; killed in between, they are redone too.
    assert sorted(run["attempts"] for run in runs) in ([1] * 8 + [2] * 4, [2] * 12)
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep_id, runs)
    stops = expected_stops(runs, stopping)
    assert sorted(stops.values()) == [10_000] * 8 + [30_000] * 3
    assert {run["id"]: run["epochs_done"] for run in runs if run["status"] == "stopped_early"} == stops
    assert [run["status"] for run in runs].count("succeeded") == 1
    stored = {run["id"]: stack.http.get(f"/runs/{run['id']}").json()["losses"] for run in runs}
    assert_early_stopping_kept_the_curves(runs, stored, stopping)
    count("runs checked after faults", len(runs))


@ON_POSTGRESQL
def test_a_bayesian_search_whose_workers_are_killed_proposes_the_same_waves_once(stack):
    started(stack, GRADSWEEP_MAX_ATTEMPTS="5")
    body = {"name": "bayes", "method": "bayes", "run_cap": 6, "wave_size": 2, "search_seed": 4, "parameters": {
        "learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 0.05},
        "optimizer": {"values": ["sgd", "adam"]}, "epochs": {"value": 40_000},
        "seed": {"values": [0, 1], "repeat": True}}}
    sweep_id = stack.http.post("/sweeps", json=body).json()["id"]
    killed: set[tuple[int, int]] = set()
    while len(killed) < 3:  # each kill in another wave's job, or in another attempt of it
        runs = runs_of(stack, sweep_id)
        assert stack.http.get(f"/sweeps/{sweep_id}").json()["status"] != "finished", "finished before 3 kills"
        run = next((r for r in runs if r["status"] == "running" and r["epochs_done"] > 0
                    and (r["point"], r["attempts"]) not in killed), None)
        if run is not None and kill(pid_of(run)):
            killed.add((run["point"], run["attempts"]))
            count("worker processes killed mid-job")
        time.sleep(0.1)

    sweep = stack.wait_for_sweep(sweep_id, timeout=240)
    runs = sweep["runs"]
    assert sorted(run["point"] for run in runs) == [point for point in range(6) for _ in range(2)]
    assert all(run["status"] == "succeeded" for run in runs), [(r["status"], r["error"]) for r in runs]
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep_id, runs)
    expected = expected_curves(runs)
    assert all(stack.http.get(f"/runs/{run['id']}").json()["losses"] == expected[run["id"]] for run in runs)
    calm = stack.wait_for_sweep(stack.http.post("/sweeps", json=body | {"name": "calm"}).json()["id"], timeout=240)
    key = ("point", "learning_rate", "seed", "optimizer", "final_loss")
    assert sorted(tuple(run[k] for k in key) for run in calm["runs"]) == sorted(tuple(run[k] for k in key)
                                                                             for run in runs)
    count("runs checked after faults", len(runs))
