"""What the service benchmarks share: a database and a broker of their own, service processes, the timing loop.

Every benchmark measures its baseline in the same run as the service, alternating
the two sides repetition by repetition so that a slow moment of the machine hits
both alike, and prints medians and their ratio, as `engine_bench` does.

Where they run: PostgreSQL at GRADSWEEP_BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432; a database `gradsweep_bench_<random>` is
created and dropped), Redis at GRADSWEEP_BENCH_REDIS_URL (default
redis://127.0.0.1:6379/14; only that database is ever emptied).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import redis
from sqlalchemy import make_url

from gradsweep.engine.tasks import linear_regression
from gradsweep.service.client.cli import worker_environment
from gradsweep.service.storage import LossWrite, Run, RunConfig, RunStatus, Storage
from tests.support.databases import empty_redis, new_database
from tests.support.processes import answering, free_port, stop_all

POSTGRES_SERVER = os.environ.get("GRADSWEEP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("GRADSWEEP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
# What `gradsweep worker` sets for its training processes (one BLAS thread each, a heap pad):
# the plain processes of the baselines get it too.
WORKER_ENVIRONMENT = worker_environment({})
REPO = Path(__file__).resolve().parent.parent
# The batched limit's batches (train_batch calls of 100 runs), and the job size of the storage benchmarks.
RUNS_PER_JOB = 100
# 20 learning rates, all below the seed task's stability limit (0.074): no run diverges.
LEARNING_RATES = {"logspace": [1e-3, 5e-2, 20]}


def seed_task_runs(n_runs: int, epochs: int) -> list[RunConfig]:
    """`n_runs` runs of the seed's task (sgd, learning rate 0.01, tensor mode), seeds 0, 1, ..., as a sweep stores them."""
    return [RunConfig(learning_rate=0.01, seed=seed, optimizer="sgd", epochs=epochs, n_samples=100, n_features=50,
                      data_seed=0, mode="tensor") for seed in range(n_runs)]


# ---- sweeps of the seed's task, and the same trainings without the service ----


def sweep_body(name: str, n_runs: int, epochs: int, **extra: object) -> dict:
    """A POST /sweeps body of `n_runs` runs: the 20 learning rates above x n_runs / 20 seeds."""
    if n_runs % 20:
        raise SystemExit(f"--runs must be a multiple of 20 (20 learning rates x seeds), not {n_runs}")
    return {"name": name, "learning_rates": LEARNING_RATES, "seeds": list(range(n_runs // 20)), "epochs": epochs,
            **extra}


def grid(n_runs: int) -> list[tuple[float, int]]:
    """The (learning rate, seed) of each run of `sweep_body(n_runs)`, in the order the API stores them."""
    low, high, count = LEARNING_RATES["logspace"]
    rates = np.logspace(math.log10(low), math.log10(high), count).tolist()
    return list(itertools.product(rates, range(n_runs // count)))


def train_one(run: tuple[float, int, int]) -> int:
    """One run alone, as `gradsweep train` trains it; returns its number of losses, not the losses."""
    learning_rate, seed, epochs = run
    return len(linear_regression.train(learning_rate, seed, epochs).losses)


def train_together(batch: tuple[list[float], list[int], int]) -> int:
    """Runs as one computation, as a job trains them; returns their number of losses."""
    learning_rates, seeds, epochs = batch
    return sum(len(result.losses) for result in linear_regression.train_batch(learning_rates, seeds, epochs))


def batches(runs: list[tuple[float, int]], epochs: int, size: int = RUNS_PER_JOB) -> list[tuple[list, list, int]]:
    """`train_together`'s arguments for consecutive batches of `size` runs."""
    return [([rate for rate, _ in runs[i:i + size]], [seed for _, seed in runs[i:i + size]], epochs)
            for i in range(0, len(runs), size)]


def wait_for_sweep(storage: Storage, sweep_id: int, poll: float = 0.5, timeout: float = 1800) -> list[Run]:
    """The sweep's runs once none is queued or running; exits if any did not succeed.

    Callers time a sweep by its runs' `finished_at`, so a slow poll costs no
    accuracy, and takes less of the cores from the service it measures.
    """
    deadline = time.monotonic() + timeout
    while (sweep := storage.get_sweep(sweep_id)).counts["queued"] + sweep.counts["running"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep {sweep_id} is not done after {timeout} s: {sweep.counts}")
        time.sleep(poll)
    runs = storage.list_runs(sweep_id)
    if any(run.status != RunStatus.SUCCEEDED for run in runs):
        raise SystemExit(f"runs of sweep {sweep_id} did not succeed: {sweep.counts}")
    return runs


def last_stored(runs: list[Run]) -> float:
    """When the last of `runs` was stored, as a `time.time()`."""
    return max(run.finished_at.timestamp() for run in runs)


# ---- databases and broker ----


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    with new_database(make_url(POSTGRES_SERVER).set(drivername="postgresql+psycopg"), "gradsweep_bench") as url:
        yield url.render_as_string(hide_password=False)


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="gradsweep-bench-") as folder:
        yield f"sqlite:///{folder}/gradsweep.sqlite"


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A new database on `backend` ("postgresql" or "sqlite"), migrated."""
    with postgres_database() if backend == "postgresql" else sqlite_database() as url:
        storage = Storage(url)
        storage.upgrade()
        storage.close()
        yield url


def driver_dsn(url: str) -> str:
    """A PostgreSQL database URL as psycopg takes it, for the baselines written by hand on the driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def empty_broker() -> None:
    """Empties our Redis database (and only it): no message of an earlier repetition or run is left."""
    empty_redis(REDIS_URL)


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a service process on `database_url` and our broker, as `gradsweep` reads it."""
    return {**os.environ, **WORKER_ENVIRONMENT, "GRADSWEEP_DATABASE_URL": database_url,
            "GRADSWEEP_BROKER_URL": REDIS_URL, **extra}


def use_service_settings(database_url: str) -> None:
    """Points this process's settings (and so the Celery app, once imported) at our database and broker."""
    os.environ.update(GRADSWEEP_DATABASE_URL=database_url, GRADSWEEP_BROKER_URL=REDIS_URL)
    from gradsweep.service.settings import get_settings

    get_settings.cache_clear()
    if "gradsweep.worker.app" in sys.modules and sys.modules["gradsweep.worker.app"].app.conf.broker_url != REDIS_URL:
        raise RuntimeError("worker.app was imported before the benchmark chose its broker")


# ---- service processes ----


class Processes:
    """Service processes started as a user starts them (`gradsweep api`, a Celery worker), stopped together."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.started.append(process)
        return process

    def api(self) -> str:
        """Starts `gradsweep api` and returns its URL once /healthz answers 200."""
        port = free_port()
        self.start("api", [sys.executable, "-m", "gradsweep", "api", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        if not answering(lambda: httpx.get(f"{url}/healthz", timeout=5)):
            raise RuntimeError(f"the API did not come up; see {self.workdir / 'api.log'}")
        return url

    def worker(self, concurrency: int = 2, app: str = "gradsweep.worker.app", name: str = "worker") -> subprocess.Popen:
        """A Celery worker with `gradsweep worker`'s command line; `app` may add tasks to gradsweep's app."""
        return self.start(name, [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel=INFO",
                                 f"--concurrency={concurrency}", f"--hostname=gradsweep-bench-{name}@%h"])

    def stop(self) -> None:
        stop_all(self.started, whole_sessions=True, timeout=30)


@contextmanager
def processes(env: dict[str, str]) -> Iterator[Processes]:
    """Processes stopped on the way out, even on SIGTERM (they have sessions of their own)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="gradsweep-bench-") as folder:
        running = Processes(env, Path(folder))
        try:
            yield running
        finally:
            running.stop()


@dataclass
class Service:
    """The service a benchmark measures: its database (`url`, `storage`), our Redis (`broker`), its processes
    (`started`: the API, and the workers the benchmark starts) and a client of its API (`api`)."""

    url: str
    storage: Storage
    broker: redis.Redis
    started: Processes
    api: httpx.Client


@contextmanager
def service_on_postgresql(api_timeout: float) -> Iterator[Service]:
    """A new PostgreSQL database and our Redis emptied, this process's settings pointed at both (import the
    Celery app only inside), and `gradsweep api` up; no worker yet. Closed, dropped and emptied afterwards."""
    with database("postgresql") as url:
        use_service_settings(url)
        empty_broker()
        broker = redis.Redis.from_url(REDIS_URL)
        storage = Storage(url)
        try:
            with processes(service_env(url)) as started:
                with httpx.Client(base_url=started.api(), timeout=api_timeout) as api:
                    yield Service(url, storage, broker, started, api)
        finally:
            storage.close()
            broker.close()
            empty_broker()


def wait_until_drained(client: redis.Redis, queue: str, timeout: float = 600, poll: float = 0.005) -> float:
    """Waits until every message of `queue` has been taken and acknowledged; returns the time it saw that.

    With late acknowledgement a message stays in kombu's `unacked` hash until its
    task has returned, so an empty queue and an empty hash mean all tasks are done.
    Two empty looks in a row, because the worker moves a message from the queue to
    the hash in two steps.
    """
    deadline = time.perf_counter() + timeout
    empty_since = None
    while True:
        with client.pipeline() as pipe:
            waiting, unacked = pipe.llen(queue).hlen("unacked").execute()
        now = time.perf_counter()
        if waiting == 0 and unacked == 0:
            if empty_since is not None:
                return empty_since
            empty_since = now
        else:
            empty_since = None
        if now > deadline:
            raise TimeoutError(f"{waiting} messages waiting and {unacked} unacknowledged after {timeout} s")
        time.sleep(poll)


# ---- a process's memory ----


def peak_rss(pid: int) -> int:
    """The process's resident memory at its highest (Linux's VmHWM) since it started or `reset_peak_rss`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def reset_peak_rss(pid: int) -> None:
    """Lowers the process's VmHWM to its resident memory now, so that `peak_rss` measures what comes next."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def fill_sweep(storage: Storage, run_ids: list[int], epochs: int, seed: int = 0) -> None:
    """Random losses for every epoch of these runs, through `Storage.record` (a transaction per 100 runs):
    a sweep of any size in seconds, without training it."""
    rng = np.random.default_rng(seed)
    for start in range(0, len(run_ids), RUNS_PER_JOB):
        storage.record([LossWrite(run_id, 0, rng.random(epochs)) for run_id in run_ids[start:start + RUNS_PER_JOB]])


# ---- timing and reporting ----


def interleaved(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Runs each side once per repetition, in turn; each returns its own measurement."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, measure in sides.items():
            results[name].append(measure())
    return results


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """All repetitions, for the reader to see the noise."""
    return "[" + ", ".join(f"{v * scale:.{digits}f}" for v in values) + "]"


def print_repetitions(results: dict[str, list[float]], unit: str, scale: float = 1.0, digits: int = 2) -> None:
    """Every side's every repetition, a line each."""
    for name, values in results.items():
        print(f"  every repetition, {name}: {spread(values, scale, digits)} {unit}")


def paired_ratios(ours: list[float], baseline: list[float]) -> str:
    """Each repetition's ratio, ours / its baseline measured just before: the spread a noisy machine gives."""
    return spread([a / b for a, b in zip(ours, baseline, strict=True)])


def report(label: str, ours: float, baseline: float, baseline_name: str, unit: str, *, ratio: float | None = None,
           target: str = "") -> float:
    """One line: our figure, the baseline's, their ratio (ours / baseline unless given) and the target."""
    ratio = ours / baseline if ratio is None else ratio
    print(f"{label:<34} {ours:>12,.2f} {unit:<10} {baseline_name:<30} {baseline:>12,.2f} {unit:<10}"
          f" ratio {ratio:6.2f}x   {target}", flush=True)
    return ratio


def main_per_backend(doc: str, bench: Callable[[str, int, int, int], None], ratio_note: str) -> None:
    """The command line of the benchmarks that run on both backends: bench(backend, runs, epochs, repeats) each."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="200 runs, 3 repetitions")
    args = parser.parse_args()
    n_runs = 200 if args.quick else args.runs
    for backend in ("postgresql", "sqlite") if args.backend == "both" else (args.backend,):
        bench(backend, n_runs, args.epochs, args.repeats)
    print(ratio_note)


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def against(value: float, goal: float, stretch: float | None = None, *, unit: str = "x", higher: bool = False) -> str:
    """The target's text, and whether `value` meets it (and the stretch target): "(target <= 0.4x: met, ...)"."""
    sign = ">=" if higher else "<="

    def met(bound: float) -> str:
        return "met" if (value >= bound if higher else value <= bound) else "NOT met"

    text = f"(target {sign} {goal:g}{unit}: {met(goal)}"
    if stretch is not None:
        text += f"; stretch {sign} {stretch:g}{unit}: {met(stretch)}"
    return text + ")"
