"""Deployment, statically: docker-compose.yml runs real gradsweep commands with real settings.

No Docker engine is needed: the compose file is checked against the CLI and the settings,
so that a wrong command or setting name fails here, in seconds. tests/deploy/ runs the
file on a real Docker engine.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from celery import Celery

from gradsweep.service.client.cli import app as cli_app
from gradsweep.service.settings import Settings
from tests.support.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Overrides: TLS for PostgreSQL and Redis; both published for workers on other machines.
TLS_FILE = ROOT / "docker-compose.tls.yml"
PUBLISH_FILE = ROOT / "docker-compose.publish.yml"
REQUIRED = ("POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD", "REDIS_PASSWORD", "GRADSWEEP_API_TOKEN")
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


@pytest.mark.parametrize("files", [[COMPOSE_FILE], [COMPOSE_FILE, TLS_FILE, PUBLISH_FILE]],
                         ids=["alone", "tls+publish"])
def test_the_compose_file_is_valid_for_docker_compose(files):
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (apt-get install docker-compose)")
    env = {"PATH": os.environ["PATH"]} | {name: "secret" for name in REQUIRED}
    checked = subprocess.run(["docker-compose", *[f"--file={file}" for file in files], "config", "-q"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("name", GRADSWEEP_SERVICES)
def test_each_gradsweep_service_runs_a_real_command_with_real_settings(services, name):
    service = services[name]
    command, params = parse_gradsweep(argv(service))
    assert command.name == {"migrate": "upgrade"}.get(name, name)
    assert set(service["environment"]) <= setting_names()
    assert {"GRADSWEEP_DATABASE_URL", "GRADSWEEP_BROKER_URL"} <= set(service["environment"])
    assert service["image"] == services["migrate"]["image"] and service["build"]["context"] == "."
    assert service["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim}"
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
    # The official images by default; docker/offline-build.sh may name stand-ins in .env.
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert services["redis"]["image"] == "${REDIS_IMAGE:-redis:7}"
    assert argv(services["redis"])[1:3] == ["--appendonly", "yes"]


def test_flower_monitors_the_same_broker_under_its_own_profile(services):
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]
    # sh -c '...; exec celery ... flower ...': it refuses to start without a password.
    shell = argv(flower)
    assert shell[:2] == ["sh", "-c"] and 'test -n "$$FLOWER_PASSWORD"' in shell[2]
    arguments = shlex.split(shell[2].rpartition("exec ")[2])
    assert arguments[0] == "celery" and "flower" in arguments
    assert '--basic-auth=$$FLOWER_USER:$$FLOWER_PASSWORD' in arguments
    module, _, attribute = arguments[arguments.index("flower") - 1].removeprefix("--app=").partition(":")
    assert isinstance(getattr(importlib.import_module(module), attribute or "app"), Celery)
    assert set(flower["environment"]) == {"GRADSWEEP_BROKER_URL", "FLOWER_USER", "FLOWER_PASSWORD"}
    assert flower["environment"]["FLOWER_PASSWORD"] == "${FLOWER_PASSWORD:-}"  # no default password
    assert flower["environment"]["GRADSWEEP_BROKER_URL"] == services["api"]["environment"]["GRADSWEEP_BROKER_URL"]
    assert any(str(port).endswith(":5555") for port in flower["ports"])


def test_env_example_documents_every_variable_and_names_only_real_settings(services):
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert {name for name in documented if name.startswith("GRADSWEEP_")} <= setting_names()
    interpolated = {name for file in (COMPOSE_FILE, TLS_FILE, PUBLISH_FILE) for name in INTERPOLATED.findall(file.read_text())}
    set_in_services = {name for service in services.values() for name in service.get("environment") or {}}
    settings_set = {name for name in set_in_services if name.startswith("GRADSWEEP_")}
    assert interpolated | settings_set <= documented


def test_no_password_has_a_default_and_each_missing_one_is_named():
    for file in (COMPOSE_FILE, TLS_FILE):
        text = file.read_text()
        for name in REQUIRED:
            uses = re.findall(r"\$\{" + name + r"(:?[-?][^}]*)?\}", text)
            assert set(uses) <= {f":?set {name} in .env (see .env.example)"}, (file.name, name, uses)
            assert uses or file != COMPOSE_FILE, name
    assert "${FLOWER_PASSWORD:-}" in COMPOSE_FILE.read_text()  # Flower's own command refuses an empty one


def test_every_container_is_capped_and_only_the_api_and_flower_publish_a_port(services):
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service, name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["mem_limit"], name
        assert "privileged" not in service and "network_mode" not in service, name
    assert {name for name, service in services.items() if "ports" in service} == {"api", "flower"}
    assert services["api"]["ports"] == ["${API_ADDRESS:-127.0.0.1}:${API_PORT:-8000}:8000"]
    assert services["flower"]["ports"] == ["${FLOWER_ADDRESS:-127.0.0.1}:${FLOWER_PORT:-5555}:5555"]
    # Each server runs as its own user from the start: the images' root steps would need capabilities.
    assert services["postgres"]["user"] == "postgres" and services["redis"]["user"] == "redis"


def test_the_application_connects_as_its_own_role_not_the_superuser(services):
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "postgres" and postgres["POSTGRES_DB"] == "gradsweep"
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_SUPERUSER_PASSWORD:?")
    assert postgres["APP_ROLE_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert services["api"]["environment"]["GRADSWEEP_DATABASE_URL"].startswith(
        "postgresql://gradsweep:${POSTGRES_PASSWORD:?")
    assert "./docker/postgres/initdb:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    script = (ROOT / "docker" / "postgres" / "initdb" / "gradsweep-role.sh").read_text()
    assert "CREATE ROLE gradsweep LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in script
    assert "$APP_ROLE_PASSWORD" in script


def test_with_tls_every_connection_is_verified_and_no_plain_one_is_accepted():
    tls = yaml.safe_load(TLS_FILE.read_text())["services"]
    for name in ("migrate", "api", "worker"):
        database, broker = tls[name]["environment"]["GRADSWEEP_DATABASE_URL"], tls[name]["environment"]["GRADSWEEP_BROKER_URL"]
        assert database.startswith("postgresql://gradsweep:") and "sslmode=verify-full" in database, name
        assert broker.startswith("rediss://") and "ssl_cert_reqs=required" in broker, name
    assert tls["flower"]["environment"]["GRADSWEEP_BROKER_URL"] == tls["api"]["environment"]["GRADSWEEP_BROKER_URL"]
    redis_command = tls["redis"]["command"]
    assert redis_command[redis_command.index("--port") + 1] == "0"  # no plain port
    assert "ssl=on" in tls["postgres"]["command"]
    hba = [line.split() for line in (ROOT / "docker" / "postgres" / "pg_hba-tls.conf").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert {line[0] for line in hba} == {"local", "hostssl"}
    assert all(line[1:3] == ["gradsweep", "gradsweep"] and "clientcert=verify-ca" in line
               for line in hba if line[0] == "hostssl")
    published = yaml.safe_load(PUBLISH_FILE.read_text())["services"]
    assert set(published) == {"postgres", "redis"}
