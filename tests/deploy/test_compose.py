"""The README's compose section, run line by line on a real Docker engine, with the token on.

Each command is the README's own (see `Project.argv` for the two changes a script needs);
after each one, what the README says it does is checked, and that the stack is safe when
published (issue 22): no start without passwords, only the API on the host, an application
role that cannot reach the server. The images are built offline (docker/offline-build.sh), as
on a machine that reaches no registry.
"""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import psycopg
import pytest

from tests.support.curves import assert_each_epoch_stored_once, expected_curves
from tests.deploy.compose import REQUIRED, Project, readme_compose_commands
from tests.integration.faults import count
from tests.support.processes import gradsweep
from tests.support.sweeps import all_runs
from tests.support.services import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1500)]

STACK = {"redis": 1, "postgres": 1, "api": 1, "worker": 1}


def assert_exact(project: Project, sweep: dict, expected: dict[int, list[float]] | None = None) -> dict:
    """Every run succeeded, each epoch stored once, its curve bit-equal to its batch trained here (or to
    `expected`, curves checked so before); returns the curves by run id."""
    runs = all_runs(project.http, sweep["id"])
    assert [run["status"] for run in runs] == ["succeeded"] * len(runs), [(r["id"], r["status"]) for r in runs]
    assert_each_epoch_stored_once(project.database_url, sweep["id"], runs)
    expected = expected_curves(runs) if expected is None else expected
    for run in runs:
        assert project.http.get(f"/runs/{run['id']}").json()["losses"] == expected[run["id"]], run["id"]
    return expected


def sweep_id_of(output: str) -> int:
    return int(re.search(r"sweep (\d+): \d+ runs queued", output).group(1))


def test_the_stack_refuses_to_start_without_each_password_and_names_it(project: Project):
    started = time.monotonic()
    readme_so_far = list(project.ran)  # these `up`s are not the README's walk-through
    for missing in REQUIRED:
        project.settings(**project.required, **project.ports)
        project.settings(**{missing: None})
        refused = project.run("docker compose up -d", check=False)
        assert refused.returncode != 0 and f"set {missing} in .env" in refused.stderr, (missing, refused.stderr)
    project.ran[:] = readme_so_far
    assert not subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}"],
                              capture_output=True, text=True, check=True).stdout.split()
    count("deploy: seconds to check that compose refuses to start without each password",
          round(time.monotonic() - started))


def assert_safe_when_published(project: Project) -> None:
    """Only the API listens on the host, on 127.0.0.1; every container is capped; the application's role owns its
    database and nothing more, and the superuser cannot log in over the network."""
    assert project.published() == {("api", "8000/tcp", "127.0.0.1")}
    for container in project.containers("api") + project.containers("worker") + project.containers("postgres") \
            + project.containers("redis"):
        host = project.inspect(container)["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], container
        assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["Memory"] > 0, container
    with psycopg.connect(project.database_url, autocommit=True) as connection:
        role = connection.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                                  "WHERE rolname = current_user").fetchone()
        assert role == (False, False, False)
        for statement in ("CREATE ROLE intruder", "COPY (SELECT 1) TO PROGRAM 'true'",
                          "ALTER ROLE gradsweep SUPERUSER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
    superuser = project.database_url.replace(f"gradsweep:{project.required['POSTGRES_PASSWORD']}@",
                                             f"postgres:{project.required['POSTGRES_SUPERUSER_PASSWORD']}@")
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        psycopg.connect(superuser.replace("/gradsweep", "/postgres"))


def test_the_readme_compose_section_runs_as_written(project: Project):
    commands = readme_compose_commands()
    project.settings(**project.required, FLOWER_PASSWORD=project.flower_password,
                     # Eight jobs a sweep: one per worker process once there are four workers.
                     GRADSWEEP_MIN_JOBS_PER_SWEEP=8, GRADSWEEP_RUN_LEASE_SECONDS=5, **project.ports)

    started = time.monotonic()
    project.run("docker compose up -d --build", timeout=900)
    project.wait_healthy(STACK)
    count("deploy: up --build until healthy, seconds", round(time.monotonic() - started))

    status = project.run("docker compose ps").stdout
    assert len(re.findall(r"\(healthy\)", status)) == 4, status
    migrate = project.containers("migrate", every=True)
    assert [project.inspect(c)["State"]["ExitCode"] for c in migrate] == [0]
    assert_safe_when_published(project)

    # The token guards the data, through the published port; the health check and the docs stay open.
    assert httpx.get(f"{project.api_url}/sweeps", timeout=10).status_code == 401
    assert httpx.get(f"{project.api_url}/healthz", timeout=10).status_code == 200
    assert project.http.get("/sweeps").json() == []

    inside = project.run("docker compose exec api gradsweep submit --lr 1e-3,1e-2,5e-2 --seeds 0-4 --wait")
    assert "15 succeeded" in inside.stdout, inside.stdout
    assert_exact(project, project.http.get(f"/sweeps/{sweep_id_of(inside.stdout)}").json())

    # The host's CLI: the URL of the published port, the token from .env (read from the current folder).
    env = project.environment() | {"GRADSWEEP_API_URL": project.api_url}
    env.pop("GRADSWEEP_API_TOKEN", None)
    host = gradsweep(*commands[4].split()[1:], env=env, cwd=project.directory, timeout=120)
    project.ran.append(commands[4])
    assert host.returncode == 0 and "10 succeeded" in host.stdout, host.stdout + host.stderr
    assert_exact(project, project.http.get(f"/sweeps/{sweep_id_of(host.stdout)}").json())

    project.run("docker compose up -d --scale worker=4")
    project.wait_healthy(STACK | {"worker": 4})

    # A sweep over all four workers, and one of them killed while it trains.
    body = {"name": "kill", "learning_rates": [1e-3, 3e-3, 1e-2, 3e-2], "seeds": list(range(8)), "epochs": 30_000}
    response = project.http.post("/sweeps", json=body)
    assert response.status_code == 201, response.text
    sweep = response.json()
    running = wait_for(lambda: [r for r in all_runs(project.http, sweep['id'])
                                if r["status"] == "running" and r["epochs_done"] > 0], timeout=120)
    node = running[0]["worker"].split()[0]
    project.run(f"docker kill {project.container_of(node)}")
    cut_short = {r["id"] for r in all_runs(project.http, sweep['id'])
                 if r["status"] == "running" and r["worker"].startswith(node)}
    count("deploy: worker containers killed mid-sweep (docker kill)")
    finished = project.wait_for_sweep(sweep["id"])
    assert finished["counts"]["succeeded"] == 32, finished["counts"]
    curves = assert_exact(project, finished)
    runs = {r["id"]: r for r in all_runs(project.http, sweep['id'])}
    assert cut_short and all(runs[i]["attempts"] >= 2 and not runs[i]["worker"].startswith(node) for i in cut_short)
    count("deploy: runs checked after faults", 32)

    # Flower joins; the workers stay four (the README's command says --scale again).
    project.run("docker compose --profile monitoring up -d --scale worker=4")
    project.wait_healthy(STACK | {"worker": 4, "flower": 1})
    flower = f"http://127.0.0.1:{project.ports['FLOWER_PORT']}"
    wait_for(lambda: answers(f"{flower}/healthcheck"), timeout=120)
    assert httpx.get(f"{flower}/", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    login = ("gradsweep", project.flower_password)
    assert project.published() == {("api", "8000/tcp", "127.0.0.1"), ("flower", "5555/tcp", "127.0.0.1")}
    assert httpx.get(f"{flower}/", auth=login, timeout=10).status_code == 200
    workers = wait_for(lambda: len(seen := httpx.get(f"{flower}/api/workers?refresh=1", auth=login, timeout=30).json()) == 4
                       and seen, timeout=60)
    assert all(name.startswith("gradsweep-") for name in workers)

    logs = project.run("docker compose logs -f worker").stdout
    assert logs.count("ready.") >= 4, logs[-2000:]

    before = project.http.get("/sweeps").json()
    project.run("docker compose --profile monitoring down")
    assert project.containers("api", every=True) == []
    project.run("docker compose up -d")
    project.wait_healthy(STACK)
    assert project.http.get("/sweeps").json() == before
    assert_exact(project, finished, curves)

    project.run("docker compose --profile monitoring down --volumes")
    volumes = project.run(f"docker volume ls -q --filter label=com.docker.compose.project={project.name}").stdout
    assert volumes.split() == []

    assert project.ran[-len(commands):] == commands, (project.ran, commands)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code < 500
    except httpx.HTTPError:
        return False

