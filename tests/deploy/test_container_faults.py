"""Faults that need separate hosts: containers cut off the network, databases restarted, workers stopped warmly;
and a worker on "another machine" that reaches PostgreSQL and Redis over TLS only.

Each container is a host with its own address, so a worker can lose the network while
its processes live on, which no local process can. The stack is the README's multi-machine
one (TLS on, PostgreSQL and Redis published), so every fault happens over TLS. Each test
ends with every run complete, each epoch stored once and every curve bit-equal to its batch
trained here.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.deploy.compose import Project, readme_commands
from tests.deploy.test_compose import assert_exact
from tests.integration.faults import count
from tests.support.services import wait_for
from tests.support.sweeps import all_runs

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

LEASE = 4  # GRADSWEEP_RUN_LEASE_SECONDS: a cut-off worker's runs are taken back within ~5 s
WORKERS = 3
STACK = {"redis": 1, "postgres": 1, "api": 1, "worker": WORKERS}


MULTI_MACHINE = "Add workers on other machines"


@pytest.fixture(scope="module")
def stack(built_project: Project) -> Iterator[Project]:
    """The README's multi-machine stack: its certificates made, its COMPOSE_FILE line in .env, then `up --build`."""
    built_project.settings(**built_project.required, GRADSWEEP_RUN_LEASE_SECONDS=LEASE,
                           GRADSWEEP_MIN_JOBS_PER_SWEEP=2 * WORKERS, **built_project.ports)
    certificates, compose_file, up = readme_commands(MULTI_MACHINE)
    assert up == "docker compose up -d"
    # As root already (the key files change owners), sudo is not needed.
    built_project.run(certificates.removeprefix("sudo " if os.geteuid() == 0 else ""))
    subprocess.run(["bash", "-c", compose_file], cwd=built_project.directory, check=True)
    assert built_project.tls
    started = time.monotonic()
    built_project.compose_run("up", "-d", "--build", "--scale", f"worker={WORKERS}", timeout=900)
    built_project.wait_healthy(STACK)
    count("deploy: TLS stack, up --build until healthy, seconds", round(time.monotonic() - started))
    yield built_project
    built_project.down()
    built_project.settings(COMPOSE_FILE=None)


def submit(stack: Project, epochs: int, seeds: int = 4) -> int:
    """Six jobs (one per worker process) of `seeds` runs each."""
    body = {"name": "container faults", "learning_rates": [1e-3, 3e-3, 1e-2, 2e-2, 3e-2, 5e-2],
            "seeds": list(range(seeds)), "epochs": epochs}
    response = stack.http.post("/sweeps", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def runs_of(stack: Project, sweep_id: int) -> list[dict]:
    return all_runs(stack.http, sweep_id)


def training(stack: Project, sweep_id: int) -> list[dict]:
    """Runs that have written losses and are still running."""
    return wait_for(lambda: [r for r in runs_of(stack, sweep_id) if r["status"] == "running" and r["epochs_done"] > 0],
                    timeout=120)


def logs(stack: Project, container: str) -> str:
    done = stack.run(f"docker logs {container}")
    return done.stdout + done.stderr


def finished_exactly(stack: Project, sweep_id: int, expected: dict[int, list[float]] | None = None) -> dict:
    """The finished sweep, every run checked by `assert_exact` (against `expected`, when checked before)."""
    sweep = stack.wait_for_sweep(sweep_id, timeout=300)
    sweep["curves"] = assert_exact(stack, sweep, expected)
    if expected is None:
        count("deploy: runs checked after faults", sweep["n_runs"])
    return sweep


def worker_environment(stack: Project) -> dict[str, str]:
    """The README's two variables for a worker on another machine, for this one: the stack's host is localhost
    (the certificate names it), its published ports the test's, the certificates where make-certs.sh wrote them."""
    exports = [line for line in readme_commands(MULTI_MACHINE, 1) if line.startswith("export ")]
    env = {}
    for line in exports:
        name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        for placeholder, actual in (("<POSTGRES_PASSWORD>", stack.required["POSTGRES_PASSWORD"]),
                                    ("<REDIS_PASSWORD>", stack.required["REDIS_PASSWORD"]),
                                    ("stack.example.org", "localhost"),
                                    (":5432/", f":{stack.ports['POSTGRES_PORT']}/"),
                                    (":6379/", f":{stack.ports['REDIS_PORT']}/"),
                                    ("$HOME/gradsweep-tls", str(stack.directory / "docker" / "tls"))):
            value = value.replace(placeholder, actual)
        env[name] = value
    assert set(env) == {"GRADSWEEP_DATABASE_URL", "GRADSWEEP_BROKER_URL"}
    return env


def test_a_worker_on_another_machine_trains_a_sweep_over_tls_only(stack, tmp_path: Path):
    started = time.monotonic()
    env = worker_environment(stack)
    # Plain connections to the published ports are refused: PostgreSQL has no entry for them, Redis speaks TLS only.
    plain = f"postgresql://gradsweep:{stack.required['POSTGRES_PASSWORD']}@127.0.0.1:{stack.ports['POSTGRES_PORT']}" \
            "/gradsweep?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(plain, connect_timeout=10)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        redis.Redis(port=stack.ports["REDIS_PORT"], password=stack.required["REDIS_PASSWORD"],
                    socket_timeout=5, retry_on_timeout=False).ping()

    stack.run("docker compose stop worker")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "gradsweep", "worker", "--concurrency=2"],
                                  env={**os.environ, **env}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        sweep_id = submit(stack, epochs=3_000, seeds=2)
        sweep = finished_exactly(stack, sweep_id)
        assert {r["worker"].split()[0].split("@")[1] for r in sweep["runs"]} == {socket.gethostname()}
        with psycopg.connect(stack.database_url) as connection:
            sessions = connection.execute("SELECT a.client_addr IS NULL, s.ssl FROM pg_stat_ssl s "
                                          "JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'gradsweep'").fetchall()
        assert sessions and all(ssl for local, ssl in sessions if not local), sessions
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
    log = (tmp_path / "worker.log").read_text()
    assert "Connected to rediss://" in log, log[-3000:]
    count("deploy: runs trained over TLS by a worker outside the stack", sweep["n_runs"])
    stack.run(f"docker compose up -d --scale worker={WORKERS}")
    stack.wait_healthy(STACK)
    count("deploy: seconds for the TLS worker test", round(time.monotonic() - started))


def test_a_worker_cut_off_the_network_for_longer_than_its_lease_loses_its_runs_and_writes_nothing_late(stack):
    sweep_id = submit(stack, epochs=60_000)
    node = training(stack, sweep_id)[0]["worker"].split()[0]
    container = stack.container_of(node)
    network = stack.network_of(container)
    held = {r["id"] for r in runs_of(stack, sweep_id) if r["status"] == "running" and r["worker"].startswith(node)}

    stack.run(f"docker network disconnect {network} {container}")
    cut = time.monotonic()
    count("deploy: worker containers cut off the network (docker network disconnect)")
    # Taken back after the lease by the other workers' reapers, and trained by them.
    wait_for(lambda: all(not r["worker"].startswith(node) for r in runs_of(stack, sweep_id) if r["id"] in held),
             timeout=120)
    count("deploy: seconds until a cut-off worker's runs ran elsewhere", round(time.monotonic() - cut))
    count("deploy: runs taken back from a cut-off worker", len(held))
    stack.run(f"docker network connect {network} {container}")
    reconnected = time.monotonic()

    sweep = finished_exactly(stack, sweep_id)
    runs = {r["id"]: r for r in sweep["runs"]}
    assert all(runs[i]["attempts"] >= 2 and not runs[i]["worker"].startswith(node) for i in held)
    # Back on the network, the old attempt's writes are refused: its job ends having recorded none of its runs.
    log = wait_for(lambda: "'0 of " in (text := logs(stack, container)) and text, timeout=180)
    assert "runs recorded'" in log.split("'0 of ", 1)[1].splitlines()[0], log[-3000:]
    count("deploy: seconds from the reconnect until the late attempt was refused", round(time.monotonic() - reconnected))
    again = finished_exactly(stack, sweep_id, sweep["curves"])  # nothing written since
    assert [(r["id"], r["attempts"], r["worker"]) for r in again["runs"]] == \
        [(r["id"], r["attempts"], r["worker"]) for r in sweep["runs"]]
    count("deploy: late attempts refused after a reconnect")


def test_postgresql_restarted_mid_sweep_loses_nothing(stack):
    sweep_id = submit(stack, epochs=40_000)
    training(stack, sweep_id)
    stack.run("docker compose restart postgres")
    count("deploy: PostgreSQL container restarts mid-sweep")
    finished_exactly(stack, sweep_id)


def test_redis_restarted_with_runs_queued_loses_nothing(stack):
    stack.run("docker compose stop worker")
    sweep_id = submit(stack, epochs=5_000)
    assert {r["status"] for r in runs_of(stack, sweep_id)} == {"queued"}
    stack.run("docker compose restart redis")
    count("deploy: Redis container restarts with runs queued")
    stack.run(f"docker compose up -d --scale worker={WORKERS}")
    stack.wait_healthy(STACK)
    finished_exactly(stack, sweep_id)


def test_workers_stopped_warmly_mid_run_finish_what_they_run(stack):
    sweep_id = submit(stack, epochs=20_000)
    training(stack, sweep_id)
    running = {r["id"] for r in runs_of(stack, sweep_id) if r["status"] == "running"}
    started = time.monotonic()
    stack.run("docker compose stop worker", timeout=120)
    count("deploy: worker containers stopped warmly mid-run (docker compose stop)", WORKERS)
    stopped_in = time.monotonic() - started
    after = {r["id"]: r for r in runs_of(stack, sweep_id)}
    # A warm shutdown ends the jobs it holds before the container stops: none cut short.
    assert all(after[i]["status"] == "succeeded" and after[i]["attempts"] == 1 for i in running), (stopped_in, after)
    assert stopped_in < 30, "a worker was killed at the end of stop_grace_period"
    count("deploy: runs that finished during a warm shutdown", len(running))
    stack.run(f"docker compose up -d --scale worker={WORKERS}")
    stack.wait_healthy(STACK)
    finished_exactly(stack, sweep_id)
