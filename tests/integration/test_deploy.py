"""Deployment: docker-compose.yml runs real gradsweep commands with real settings, and
scripts/stack.sh, which starts those same commands here as processes, runs a sweep on them.

No Docker engine is needed: the compose file is checked against the CLI and the settings,
and the script reads its commands from the compose file, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer
import yaml
from celery import Celery

from service.cli import app as cli_app
from service.settings import Settings
from tests.integration.stack import free_port, gradsweep
from tests.integration.test_demo import processes_in
from tests.services import new_schema, unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
STACK_SCRIPT = ROOT / "scripts" / "stack.sh"
GRADSWEEP_SERVICES = ("migrate", "api", "worker")
AFTER_MIGRATION = {
    "migrate": "service_completed_successfully",
    "postgres": "service_healthy",
    "redis": "service_healthy",
}
INTERPOLATED = re.compile(r"\$\{(\w+)")


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def setting_names() -> set[str]:
    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{field}".upper() for field in Settings.model_fields}


def argv(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(argument) for argument in command]


def parse_gradsweep(arguments: list[str]):
    """The CLI command that `arguments` run, and its parsed parameters; raises as the CLI would refuse them."""
    assert arguments[0] == "gradsweep"
    # typer builds its commands on a click of its own: tell a group by what it does, not by its class.
    command = typer.main.get_command(cli_app)
    rest = arguments[1:]
    while hasattr(command, "get_command"):
        name, rest = rest[0], rest[1:]
        subcommand = command.get_command(command.context_class(command), name)
        assert subcommand is not None, f"gradsweep has no command {name!r}"
        command = subcommand
    return command, command.make_context(command.name, rest).params


# ---- the compose file ----


def test_the_compose_file_is_valid_for_docker_compose():
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (apt-get install docker-compose)")
    checked = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("name", GRADSWEEP_SERVICES)
def test_each_gradsweep_service_runs_a_real_command_with_real_settings(services, name):
    service = services[name]
    command, params = parse_gradsweep(argv(service))
    assert command.name == {"migrate": "upgrade"}.get(name, name)
    assert set(service["environment"]) <= setting_names()
    assert {"GRADSWEEP_DATABASE_URL", "GRADSWEEP_BROKER_URL"} <= set(service["environment"])
    assert service["image"] == services["migrate"]["image"] and service["build"] == "."
    if name == "api":
        assert params["host"] == "0.0.0.0"  # reachable through the published port
        assert any(str(port).endswith(f":{params['port']}") for port in service["ports"])
        assert f":{params['port']}/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["healthcheck"]["test"][:2] == ["CMD", "python"]  # the image has no curl


def test_workers_scale_out_and_take_their_concurrency_from_the_environment(services):
    worker = services["worker"]
    _, params = parse_gradsweep(argv(worker))
    assert params["concurrency"] is None  # so `gradsweep worker` reads GRADSWEEP_WORKER_CONCURRENCY
    assert "GRADSWEEP_WORKER_CONCURRENCY" in worker["environment"]
    # --scale worker=N needs containers that share no name and no host port.
    assert "container_name" not in worker and "ports" not in worker


def test_api_and_workers_start_after_the_migration_on_healthy_databases(services):
    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        assert {service: rule["condition"] for service, rule in depends_on.items()} == AFTER_MIGRATION
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"]
        volume = services[name]["volumes"][0].split(":")[0]
        assert not volume.startswith((".", "/")), "a named volume, not a folder of the host"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert argv(services["redis"])[1:3] == ["--appendonly", "yes"]


def test_flower_monitors_the_same_broker_under_its_own_profile(services):
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]
    arguments = argv(flower)
    assert arguments[0] == "celery" and "flower" in arguments
    module, _, attribute = arguments[arguments.index("flower") - 1].removeprefix("--app=").partition(":")
    assert isinstance(getattr(importlib.import_module(module), attribute or "app"), Celery)
    assert set(flower["environment"]) == {"GRADSWEEP_BROKER_URL"}
    assert flower["environment"]["GRADSWEEP_BROKER_URL"] == services["api"]["environment"]["GRADSWEEP_BROKER_URL"]
    assert any(str(port).endswith(":5555") for port in flower["ports"])


def test_env_example_documents_every_variable_and_names_only_real_settings(services):
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert {name for name in documented if name.startswith("GRADSWEEP_")} <= setting_names()
    interpolated = set(INTERPOLATED.findall(COMPOSE_FILE.read_text()))
    set_in_services = {name for service in services.values() for name in service.get("environment") or {}}
    settings_set = {name for name in set_in_services if name.startswith("GRADSWEEP_")}
    assert interpolated | settings_set <= documented


def test_no_secret_is_written_in_the_compose_file_but_the_development_default():
    text = COMPOSE_FILE.read_text()
    for password in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert set(re.findall(r"\$\{" + password + r":-([^}]*)\}", text)) == {"gradsweep"}
    assert "${GRADSWEEP_API_TOKEN:-}" in text


# ---- the stack script, end to end ----


def live_processes_in_group(group: int) -> list[int]:
    """Processes of the group that have not exited: zombies are left out (reaping them is init's job)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            found.append(int(stat.parent.name))
    return found


def stack_script(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STACK_SCRIPT), command], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def stack_env(postgres_database, redis_broker, tmp_path) -> dict[str, str]:
    """This machine's PostgreSQL (a fresh schema) and Redis (the test database), and a free port."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("GRADSWEEP_")}
    return {
        **inherited,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # gradsweep and python3
        "GRADSWEEP_DATABASE_URL": new_schema(postgres_database).render_as_string(hide_password=False),
        "GRADSWEEP_BROKER_URL": redis_broker,
        "GRADSWEEP_API_URL": f"http://127.0.0.1:{free_port()}",
        "GRADSWEEP_STACK_DIR": str(tmp_path / "stack"),
    }


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_stack_script_trains_a_sweep_on_three_workers_and_stops_every_process(stack_env, tmp_path):
    state = Path(stack_env["GRADSWEEP_STACK_DIR"])
    recorded: dict[str, int] = {}
    try:
        up = stack_script("up", stack_env, tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        lines = (state / "pids").read_text().splitlines()
        recorded = {name: int(pid) for name, pid in (line.split() for line in lines)}
        assert set(recorded) == {"api", "worker-1", "worker-2", "worker-3"}

        # 5 learning rates × 6 seeds × 2 optimizers, all below SGD's stability limit.
        submitted = gradsweep("submit", "--lr", "1e-3,3e-3,1e-2,3e-2,5e-2", "--seeds", "0-5",
                              "--optimizer", "sgd,adam", "--epochs", "300", "--name", "stack", "--wait",
                              env=stack_env, cwd=tmp_path, timeout=90)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "60 succeeded" in submitted.stdout
        sweep_id = int(re.search(r"sweep (\d+): 60 runs queued", submitted.stdout).group(1))

        sweep = httpx.get(f"{stack_env['GRADSWEEP_API_URL']}/sweeps/{sweep_id}", timeout=30).json()
        assert sweep["n_runs"] == 60 and sweep["counts"]["succeeded"] == 60
        assert all(run["status"] == "succeeded" for run in sweep["runs"])
        # `gradsweep worker` names itself gradsweep-<its pid>@<host>: each run names the worker that trained it.
        trained_by = {int(re.match(r"gradsweep-(\d+)@", run["worker"]).group(1)) for run in sweep["runs"]}
        workers = {pid for name, pid in recorded.items() if name.startswith("worker-")}
        assert trained_by <= workers and len(trained_by) >= 2, sweep["runs"]
    finally:
        down = stack_script("down", stack_env, tmp_path)

    assert down.returncode == 0, down.stdout + down.stderr
    assert not (state / "pids").exists()
    left = {name: live_processes_in_group(pid) for name, pid in recorded.items()}
    assert recorded and not any(left.values()), left
    assert processes_in(state.resolve()) == []  # nor any that left its process group: each ran in the stack folder
