"""Curve reads: every curve of a sweep into numpy, through the storage layer and the API, against a raw SELECT.

    python -m benchmarks.curve_read_bench [--runs 1000] [--epochs 1000] [--repeats 3] [--quick]

A sweep of R runs x E epochs (a million losses by default) on each backend,
its losses written as workers write such a sweep: `Storage.record` per job of
100 runs, each run's curve one chunk (a row of `loss_chunks`). Ours:
`Storage.sweep_losses(sweep_id)` (a numpy array per run), and
GET /sweeps/{id}/losses from a `gradsweep api` process, parsed into a numpy
array per run. Baseline: the same chunks, sorted by run and first epoch,
fetched with a raw SELECT on the driver (psycopg or sqlite3) and put end to end
into a numpy array per run; on PostgreSQL the faster of reading the float8[]
in its binary form (`array_send`, into `np.frombuffer`) and as psycopg parses
it (a list of floats, into `np.array`); on SQLite the float64 bytes, into
`np.frombuffer`. Target: the storage layer <= 2x the baseline; the API's figure
is reported, and on PostgreSQL so is the old query, a row per loss, through the
`losses` view (run id and loss, sorted by run and epoch, into an (n, 2) array).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

import httpx
import numpy as np
import psycopg
from sqlalchemy import make_url

from benchmarks.common import (
    RUNS_PER_JOB,
    against,
    database,
    driver_dsn,
    empty_broker,
    header,
    interleaved,
    main_per_backend,
    median,
    print_repetitions,
    processes,
    report,
    seed_task_runs,
    service_env,
    timed,
)
from gradsweep.service.storage import LossWrite, Storage

IN_SWEEP = "WHERE run_id IN (SELECT id FROM runs WHERE sweep_id = {})"
CHUNKS = "SELECT run_id, {} FROM loss_chunks " + IN_SWEEP + " ORDER BY run_id, first_epoch"
PER_LOSS = "SELECT run_id, value FROM losses " + IN_SWEEP + " ORDER BY run_id, epoch"
VIEW = "losses view, a row per loss"
# A one-dimensional float8[] in binary: a 20-byte header, then (length, value) per element.
ELEMENT = np.dtype([("size", ">i4"), ("value", ">f8")])


def end_to_end(chunks: Iterable[tuple[int, np.ndarray]]) -> dict[int, np.ndarray]:
    """Each run's chunks, in the order given, as one array."""
    pieces: dict[int, list[np.ndarray]] = {}
    for run_id, values in chunks:
        pieces.setdefault(run_id, []).append(values)
    return {run_id: np.concatenate(values) for run_id, values in pieces.items()}


def raw_reads(connection: sqlite3.Connection | psycopg.Connection, sweep_id: int) -> dict[str, Callable[[], object]]:
    """The baselines: each reads the sweep's curves on the driver, over `connection` (opened once, as a pool would)."""
    if isinstance(connection, sqlite3.Connection):
        def blobs() -> dict[int, np.ndarray]:
            rows = connection.execute(CHUNKS.format("losses", "?"), (sweep_id,))
            return end_to_end((run_id, np.frombuffer(blob, dtype="<f8")) for run_id, blob in rows)

        return {"raw SELECT, bytes": blobs}

    def array_send() -> dict[int, np.ndarray]:
        with connection.transaction():
            rows = connection.execute(CHUNKS.format("array_send(losses)", "%s"), (sweep_id,))
            return end_to_end((run_id, np.frombuffer(array, dtype=ELEMENT, offset=20)["value"].astype(np.float64))
                              for run_id, array in rows)

    def float_lists() -> dict[int, np.ndarray]:
        with connection.transaction():
            rows = connection.execute(CHUNKS.format("losses", "%s"), (sweep_id,))
            return end_to_end((run_id, np.array(values, dtype=np.float64)) for run_id, values in rows)

    def per_loss() -> np.ndarray:
        with connection.transaction():
            return np.array(connection.execute(PER_LOSS.format("%s"), (sweep_id,)).fetchall(), dtype=np.float64)

    return {"raw SELECT, array_send": array_send, "raw SELECT, float8[]": float_lists, VIEW: per_loss}


def connect(backend: str, url: str) -> sqlite3.Connection | psycopg.Connection:
    if backend == "sqlite":
        return sqlite3.connect(make_url(url).database, isolation_level=None)
    return psycopg.connect(driver_dsn(url), autocommit=True)


def bench(backend: str, n_runs: int, epochs: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    with database(backend) as url:
        storage = Storage(url)
        starts = range(0, n_runs, RUNS_PER_JOB)
        sweep, runs = storage.create_sweep("reads", seed_task_runs(n_runs, epochs), lambda jobs: None,
                                           batch_sizes=[min(RUNS_PER_JOB, n_runs - first) for first in starts])
        for first in starts:
            job = storage.start_job([run.id for run in runs[first:first + RUNS_PER_JOB]], "bench")
            storage.record([LossWrite(run.id, 0, rng.random(epochs), run.attempts) for run in job.batch])
        empty_broker()
        with processes(service_env(url)) as started:
            api = httpx.Client(base_url=started.api(), timeout=120)

            def through_api() -> dict[int, np.ndarray]:
                body = api.get(f"/sweeps/{sweep.id}/losses").raise_for_status().json()
                return {run["run_id"]: np.array(run["losses"], dtype=np.float64) for run in body["runs"]}

            connection = connect(backend, url)
            raw = raw_reads(connection, sweep.id)
            expected = storage.sweep_losses(sweep.id)
            for name, read in {**raw, "api": through_api}.items():
                curves = read()
                if name == VIEW:  # (run id, loss) rows
                    same = np.array_equal(curves[:, 1], np.concatenate([expected[run.id] for run in runs]))
                else:
                    same = curves.keys() == expected.keys() and all(np.array_equal(curves[k], expected[k])
                                                                    for k in curves)
                if not same:
                    raise SystemExit(f"{name} and the storage layer read different curves")
            times = interleaved({
                **{name: (lambda read=read: timed(read)) for name, read in raw.items()},
                "storage": lambda: timed(lambda: storage.sweep_losses(sweep.id)),
                "api": lambda: timed(through_api),
            }, repeats)
            connection.close()
            api.close()
        storage.close()

    baseline_name = min((name for name in raw if name.startswith("raw")), key=lambda name: median(times[name]))
    base, ours = median(times[baseline_name]), median(times["storage"])
    header(f"{backend}: every curve of a {n_runs} x {epochs} sweep into numpy; {repeats} repetitions; "
           f"milliseconds (lower is better)")
    report("Storage.sweep_losses", ours * 1e3, base * 1e3, baseline_name, "ms", target=against(ours / base, 2))
    report("GET /sweeps/{id}/losses (JSON)", median(times["api"]) * 1e3, base * 1e3, baseline_name, "ms",
           target="(reported)")
    if VIEW in times:
        report("Storage.sweep_losses", ours * 1e3, median(times[VIEW]) * 1e3, VIEW, "ms", target="(the old query)")
    print_repetitions(times, "ms", 1e3, 1)


def main() -> None:
    main_per_backend(__doc__, bench, "(ratio = ours / baseline, in seconds)")


if __name__ == "__main__":
    main()
