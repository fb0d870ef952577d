"""The service as real processes: `gradsweep api` and `gradsweep worker`, as a user starts them; free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from gradsweep.service.client.local import answering, free_port
from tests.support.sweeps import wait_until_finished


def embedded_settings(workdir: Path, **extra: str) -> dict[str, str]:
    """SQLite and the SQLite broker in `workdir`: no server needed, nothing shared with other test sessions.
    No GRADSWEEP_API_TOKEN from the environment unless `extra` sets one."""
    return {"GRADSWEEP_DATABASE_URL": f"sqlite:///{workdir}/gradsweep.sqlite",
            "GRADSWEEP_BROKER_URL": f"sqla+sqlite:///{workdir}/gradsweep-broker.sqlite",
            "GRADSWEEP_API_TOKEN": "", **extra}


def stop_all(processes: Sequence[subprocess.Popen], *, whole_sessions: bool, timeout: float) -> None:
    """SIGTERM to each process still running (to its whole session if `whole_sessions`), then `timeout` seconds
    for each to end before its session gets SIGKILL. Each process must lead a session of its own."""
    for process in processes:
        if process.poll() is None:
            if whole_sessions:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def gradsweep(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60,
              input: str | None = None) -> subprocess.CompletedProcess:
    """Run a `gradsweep` command to completion, `input` typed at its prompts."""
    return subprocess.run([sys.executable, "-m", "gradsweep", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, input=input)


class Stack:
    """An API process and any number of worker processes sharing one database and broker."""

    def __init__(self, settings: dict[str, str], workdir: Path) -> None:
        self.env = {**os.environ, **settings}
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env["GRADSWEEP_API_URL"] = self.url
        self.processes: list[subprocess.Popen] = []
        self.named: dict[str, subprocess.Popen] = {}
        self.http = httpx.Client(base_url=self.url, timeout=30, headers=self._auth())

    def _auth(self) -> dict[str, str]:
        token = self.env.get("GRADSWEEP_API_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def migrate(self) -> None:
        done = gradsweep("db", "upgrade", env=self.env, cwd=self.workdir)
        assert done.returncode == 0, done.stdout + done.stderr

    def start_api(self, healthy: bool = True) -> None:
        """Start the API and wait until it answers (and, with `healthy`, until /healthz says 200)."""
        self._start("api", ["api", "--port", str(self.port)])
        assert answering(lambda: self.http.get("/healthz"), healthy), f"API not up; log:\n{self.log('api')}"

    def start_worker(self, concurrency: int = 2, name: str = "worker") -> subprocess.Popen:
        return self._start(name, ["worker", f"--concurrency={concurrency}"])

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "gradsweep", *args], env=self.env, cwd=self.workdir,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        self.named[name] = process
        return process

    def kill_all_of(self, name: str) -> None:
        """SIGKILL a process and every process it started (its session): a machine losing power, for it."""
        os.killpg(self.named[name].pid, signal.SIGKILL)
        self.named[name].wait()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_sweep(self, sweep_id: int, timeout: float = 120) -> dict:
        """The sweep's summary once it has finished, with every run under "runs"."""
        return wait_until_finished(self.http, sweep_id, timeout, explain=lambda: self.log("worker"))

    def stop(self) -> None:
        stop_all(self.processes, whole_sessions=False, timeout=10)
        self.http.close()


@contextmanager
def running_stack(settings: dict[str, str], workdir: Path, concurrency: int | None = 2) -> Iterator[Stack]:
    """A migrated database, a worker of `concurrency` processes (none if None) and the API; all stopped at the end."""
    stack = Stack(settings, workdir)
    try:
        stack.migrate()
        if concurrency is not None:
            stack.start_worker(concurrency=concurrency)
        stack.start_api()
        yield stack
    finally:
        stack.stop()
