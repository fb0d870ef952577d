"""Curve reads: every curve of a sweep into numpy, through the storage layer and the API, against a raw SELECT.

    python -m benchmarks.curve_read_bench [--runs 1000] [--epochs 1000] [--repeats 3] [--quick]

A sweep of R runs x E epochs (a million losses by default) on each backend.
Ours: `Storage.sweep_losses(sweep_id)` (a numpy array per run), and
GET /sweeps/{id}/losses from a `gradsweep api` process, parsed into a numpy
array per run. Baseline: the same rows, (run id, loss) sorted by run and
epoch, fetched with a raw SELECT on the driver (psycopg or sqlite3) and put
into numpy arrays, the faster of `np.array(cursor.fetchall())` and
`np.fromiter` over the cursor. Target: the storage layer <= 2x the baseline;
the API's figure is reported.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from itertools import chain

import httpx
import numpy as np
import psycopg
from sqlalchemy import make_url

from benchmarks.common import (
    database,
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
from service.storage import Storage

SELECT = ("SELECT run_id, value FROM losses WHERE run_id IN (SELECT id FROM runs WHERE sweep_id = {}) "
          "ORDER BY run_id, epoch")


def raw_reads(backend: str, url: str, sweep_id: int) -> dict[str, Callable[[], np.ndarray]]:
    """The baseline's two ways of reading the rows into an (n, 2) float64 array."""
    if backend == "postgresql":
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

        def cursor_of() -> tuple[psycopg.Connection, psycopg.Cursor]:
            connection = psycopg.connect(dsn)
            return connection, connection.execute(SELECT.format("%s"), (sweep_id,))
    else:
        def cursor_of() -> tuple[sqlite3.Connection, sqlite3.Cursor]:
            connection = sqlite3.connect(make_url(url).database)
            return connection, connection.execute(SELECT.format("?"), (sweep_id,))

    def fetchall() -> np.ndarray:
        connection, cursor = cursor_of()
        pairs = np.array(cursor.fetchall(), dtype=np.float64)
        connection.close()
        return pairs

    def fromiter() -> np.ndarray:
        connection, cursor = cursor_of()
        pairs = np.fromiter(chain.from_iterable(cursor), dtype=np.float64).reshape(-1, 2)
        connection.close()
        return pairs

    return {"fetchall": fetchall, "fromiter": fromiter}


def bench(backend: str, n_runs: int, epochs: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    with database(backend) as url:
        storage = Storage(url)
        sweep, runs = storage.create_sweep("reads", seed_task_runs(n_runs, epochs),
                                           lambda run_ids: None)
        for run in runs:
            attempt = storage.start_run(run.id, "bench").attempts
            storage.write_losses(run.id, 0, rng.random(epochs), attempt=attempt)
        empty_broker()
        with processes(service_env(url)) as started:
            api = httpx.Client(base_url=started.api(), timeout=120)

            def through_api() -> dict[int, np.ndarray]:
                body = api.get(f"/sweeps/{sweep.id}/losses").raise_for_status().json()
                return {run["run_id"]: np.array(run["losses"], dtype=np.float64) for run in body["runs"]}

            raw = raw_reads(backend, url, sweep.id)
            expected = storage.sweep_losses(sweep.id)
            pairs = raw["fetchall"]()
            assert pairs.shape == (n_runs * epochs, 2) and all(
                np.array_equal(pairs[i * epochs:(i + 1) * epochs, 1], expected[run.id]) for i, run in enumerate(runs)
            ), "the baseline and the storage layer read different curves"
            assert all(np.array_equal(curve, expected[run_id]) for run_id, curve in through_api().items())
            times = interleaved({
                "raw fetchall": lambda: timed(raw["fetchall"]),
                "raw fromiter": lambda: timed(raw["fromiter"]),
                "storage": lambda: timed(lambda: storage.sweep_losses(sweep.id)),
                "api": lambda: timed(through_api),
            }, repeats)
            api.close()
        storage.close()

    baseline_name = min(("raw fetchall", "raw fromiter"), key=lambda name: median(times[name]))
    base = median(times[baseline_name])
    header(f"{backend}: every curve of a {n_runs} x {epochs} sweep into numpy; {repeats} repetitions; "
           f"seconds (lower is better)")
    report("Storage.sweep_losses", median(times["storage"]), base, f"raw SELECT, {baseline_name.split()[1]}", "s",
           target="(target <= 2x)")
    report("GET /sweeps/{id}/losses (JSON)", median(times["api"]), base, f"raw SELECT, {baseline_name.split()[1]}",
           "s", target="(reported)")
    print_repetitions(times, "s", 1, 3)


def main() -> None:
    main_per_backend(__doc__, bench, "(ratio = ours / baseline, in seconds)")


if __name__ == "__main__":
    main()
