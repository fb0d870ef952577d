"""A copy of the project driven with docker compose, as a user drives it: the README's commands, run for real."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.support.processes import free_port
from tests.support.sweeps import wait_until_finished
from tests.support.services import unavailable

ROOT = Path(__file__).resolve().parents[2]


# Variables docker-compose.yml refuses to start without (`${NAME:?...}`).
REQUIRED = ("POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD", "REDIS_PASSWORD", "GRADSWEEP_API_TOKEN")


def readme_commands(heading: str, block: int = 0) -> list[str]:
    """The commands of a README section's `block`-th bash block, one per line, without their comments."""
    section = (ROOT / "README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    text = section.split("```bash", block + 1)[block + 1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in text.strip().splitlines() if line.strip()]


def readme_compose_commands() -> list[str]:
    """The commands of the README's compose section."""
    return readme_commands("Deploy with docker compose")


def compose_program() -> list[str]:
    """`docker compose` where the v2 plugin is installed, else the stand-alone `docker-compose` (1.29 on Debian)."""
    if shutil.which("docker") is None:
        unavailable("docker is not installed (apt-get install docker.io)")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        unavailable("no Docker engine answers (start dockerd)")
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor docker-compose is installed")


class Project:
    """A copy of the repository (its tracked files and its wheelhouse) in its own folder, as one compose project.

    Each instance has its own project name, so its containers, network and volumes are
    its own, and its own host ports, so that it runs beside this machine's PostgreSQL and
    Redis (5432 and 6379 are taken).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"gradsweep-test-{uuid.uuid4().hex[:8]}"
        self.compose = compose_program()
        self.ports = {name: free_port() for name in ("API_PORT", "POSTGRES_PORT", "REDIS_PORT", "FLOWER_PORT")}
        self.token = uuid.uuid4().hex
        self.flower_password = uuid.uuid4().hex
        # The settings docker-compose.yml requires, as a user makes them (letters and digits).
        self.required = {name: uuid.uuid4().hex for name in REQUIRED} | {"GRADSWEEP_API_TOKEN": self.token}
        self.ran: list[str] = []  # every README command run, in order
        self.api_url = f"http://127.0.0.1:{self.ports['API_PORT']}"
        self.http = httpx.Client(base_url=self.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.token}"})
        # The working tree as it is, without what git ignores (.env, .venv, the wheelhouse's wheels).
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, capture_output=True, check=True).stdout
        for name in files.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (directory / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, directory / name)
        # Wheels built before are reused: pip would build the same ones again, only slower.
        (directory / "docker" / "wheelhouse").mkdir(parents=True, exist_ok=True)
        for wheel in (ROOT / "docker" / "wheelhouse").glob("*.whl"):
            shutil.copy2(wheel, directory / "docker" / "wheelhouse" / wheel.name)

    def environment(self) -> dict[str, str]:
        return {**os.environ, "COMPOSE_PROJECT_NAME": self.name}

    def settings(self, **values: str | int | None) -> None:
        """Set lines of .env, as a user edits it: a variable set again replaces its line; None removes it."""
        env_file = self.directory / ".env"
        lines = env_file.read_text().splitlines() if env_file.exists() else []
        for name, value in values.items():
            lines = [line for line in lines if not line.startswith(f"{name}=")]
            lines += [] if value is None else [f"{name}={value}"]
        env_file.write_text("\n".join(lines) + "\n")

    def setting(self, name: str) -> str | None:
        lines = (self.directory / ".env").read_text().splitlines()
        return next((line.split("=", 1)[1] for line in lines if line.startswith(f"{name}=")), None)

    @property
    def tls(self) -> bool:
        return "docker-compose.tls.yml" in (self.setting("COMPOSE_FILE") or "")

    @property
    def database_url(self) -> str:
        """The application's role's URL, as the host reaches PostgreSQL: with TLS through the published port
        (its certificate names 127.0.0.1), else at the container's address on its network (it is not published)."""
        password = self.required["POSTGRES_PASSWORD"]
        if self.tls:
            tls = self.directory / "docker" / "tls"
            return (f"postgresql://gradsweep:{password}@127.0.0.1:{self.ports['POSTGRES_PORT']}/gradsweep"
                    f"?sslmode=verify-full&sslrootcert={tls}/ca.crt&sslcert={tls}/worker.crt&sslkey={tls}/worker.key")
        return f"postgresql://gradsweep:{password}@{self.address_of('postgres')}:5432/gradsweep"

    def address_of(self, service: str) -> str:
        """The address of the service's (first) container on the project's network, which this host reaches."""
        container = self.containers(service)[0]
        return self.inspect(container)["NetworkSettings"]["Networks"][self.network_of(container)]["IPAddress"]

    def published(self) -> set[tuple[str, str, str]]:
        """(service, container port, host address) for each port of the project's running containers that
        is published on the host."""
        ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={self.name}"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
        found = set()
        for container in ids:
            described = self.inspect(container)
            service = described["Config"]["Labels"]["com.docker.compose.service"]
            for port, bindings in (described["NetworkSettings"]["Ports"] or {}).items():
                found |= {(service, port, binding["HostIp"]) for binding in bindings or []}
        return found

    def argv(self, command: str) -> list[str]:
        """A README command as this machine runs it: `docker compose` may be docker-compose; `exec` gets
        -T (no terminal here); `logs -f` does not follow (it would never end)."""
        words = shlex.split(command)
        if words[:2] != ["docker", "compose"]:
            return words
        words = self.compose + words[2:]
        if "exec" in words:
            words.insert(words.index("exec") + 1, "-T")
        if "logs" in words and "-f" in words:
            words.remove("-f")
        return words

    def run(self, command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run a README command (or any command) in the project's folder; README commands are recorded."""
        if command in readme_compose_commands():
            self.ran.append(command)
        done = subprocess.run(self.argv(command), cwd=self.directory, env=self.environment(),
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def compose_run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(shlex.join(["docker", "compose", *args]), timeout=timeout, check=check)

    def containers(self, service: str, every: bool = False) -> list[str]:
        """The ids of the service's containers (running ones, or all with `every`)."""
        args = ["ps", "-q"] + (["-a"] if every else []) + [service]
        return self.compose_run(*args).stdout.split()

    def inspect(self, container: str) -> dict:
        done = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(done.stdout)[0]

    def state(self, container: str) -> str:
        """"healthy", "unhealthy" or "starting" for a container with a healthcheck, else its status ("running", "exited")."""
        state = self.inspect(container)["State"]
        return state["Health"]["Status"] if state.get("Health") else state["Status"]

    def wait_healthy(self, services: dict[str, int], timeout: float = 180) -> None:
        """Wait until each service has its number of containers, every one healthy (or running, without a check)."""
        deadline = time.monotonic() + timeout
        while True:
            states = {service: [self.state(c) for c in self.containers(service)] for service in services}
            if all(len(states[s]) == n and all(x in ("healthy", "running") for x in states[s])
                   for s, n in services.items()):
                return
            assert time.monotonic() < deadline, f"not healthy after {timeout} s: {states}"
            time.sleep(1)

    def container_of(self, worker: str) -> str:
        """The worker container that trained a run, from the run's `worker` ("gradsweep-<pid>@<hostname> pid <pid>");
        a container's hostname is the start of its id."""
        hostname = re.match(r"gradsweep-\d+@(\S+)", worker).group(1)
        return next(c for c in self.containers("worker", every=True) if c.startswith(hostname))

    def network_of(self, container: str) -> str:
        """The compose network the container is on (its name depends on the compose version)."""
        return next(iter(self.inspect(container)["NetworkSettings"]["Networks"]))

    def wait_for_sweep(self, sweep_id: int, timeout: float = 240) -> dict:
        return wait_until_finished(self.http, sweep_id, timeout, poll=0.5)

    def down(self) -> None:
        self.compose_run("--profile", "monitoring", "down", "--volumes", "--remove-orphans", timeout=180, check=False)
