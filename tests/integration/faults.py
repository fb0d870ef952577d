"""Fault injection on real processes: kill workers, cut connections, restart a Redis of our own, crash a PostgreSQL."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from tests.support.services import unavailable

FIGURES: dict[str, int] = {}  # what the fault tests survived, printed at the end of the session


def count(figure: str, n: int = 1) -> None:
    FIGURES[figure] = FIGURES.get(figure, 0) + n


def pid_of(run: dict) -> int:
    """The process training a run, from its `worker` column ("<hostname> pid <pid>")."""
    return int(re.search(r"pid (\d+)$", run["worker"]).group(1))


def kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


class RedisServer:
    """A Redis of the test's own on a spare port, persisting to an append-only file, that can be stopped and started."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "our Redis did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        """A clean shutdown: what was appended stays on disk."""
        if self.process and self.process.poll() is None:
            try:
                redis.Redis.from_url(self.url).shutdown()
            except redis.ConnectionError:
                pass  # it answers by closing the connection
            self.process.wait(timeout=10)


class PostgresServer:
    """A PostgreSQL of the test's own, in a new data directory, that can be crashed as a machine crashes.

    PostgreSQL refuses to run as root, so as root its commands run as the
    `postgres` user, which Debian's packages create. Without the server's
    programs the test is skipped, or fails in CI.
    """

    # No process but the WAL writer writes the WAL of asynchronous commits: no
    # autovacuum, no background writer, and WAL buffers that hold seconds of it.
    SETTINGS = "-c autovacuum=off -c bgwriter_lru_maxpages=0 -c wal_buffers=128MB -c wal_writer_delay=10s"

    def __init__(self, port: int) -> None:
        # On PATH, or where Debian's packages put them.
        found = [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))]
        initdb = next((path for path in found if path), None)
        if initdb is None:
            unavailable("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        self.bin = Path(initdb).parent
        self.port = port
        self.directory = Path(tempfile.mkdtemp(prefix="gradsweep-postgres-"))  # not under pytest's root-only tmp
        self.data = self.directory / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "--pgdata", str(self.data), "--username", "postgres", "--auth", "trust", "--no-sync")

    def _run(self, command: str, *args: str) -> None:
        done = subprocess.run([*self.as_postgres, str(self.bin / command), *args], capture_output=True, text=True)
        log = self.directory / "server.log"
        assert done.returncode == 0, done.stdout + done.stderr + (log.read_text()[-3000:] if log.exists() else "")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 {self.SETTINGS}"
        self._run("pg_ctl", "start", "--pgdata", str(self.data), "--wait", "--options", options,
                  "--log", str(self.directory / "server.log"))

    def pause_wal_writer(self) -> None:
        """From now on the WAL of asynchronous commits stays in shared memory, as if no disk write finished.

        (Left to run, the WAL writer would hand it to the operating system, whose
        cache outlives a killed PostgreSQL: only a crash of the machine loses it.)
        """
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            wal_writer = connection.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")).scalar_one()
        engine.dispose()
        os.kill(wal_writer, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILLs every process of the server, as a power cut stops them."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # it starts no new backend now
        processes = [*_children(postmaster), postmaster]
        for pid in processes:
            kill(pid)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in processes):
            assert time.monotonic() < deadline, "PostgreSQL's processes did not die"
            time.sleep(0.05)
        # As after a reboot: no process holds the lock files any more (a killed postmaster
        # may linger as a zombie, and PostgreSQL would take it for a running server).
        for lock in (self.data / "postmaster.pid", self.directory / f".s.PGSQL.{self.port}.lock"):
            lock.unlink()

    def stop(self) -> None:
        """Killed (a paused WAL writer would hold up a clean shutdown) and its data directory removed."""
        if (self.data / "postmaster.pid").exists():
            self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server; `cut()` drops every connection and refuses new ones until `restore()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()
