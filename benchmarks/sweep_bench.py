"""Sweep throughput: a sweep through the whole service against the same trainings in plain processes that store nothing.

    python -m benchmarks.sweep_bench [--seeds 10] [--epochs 1000] [--repeats 5] [--quick]

Ours: `gradsweep api` and one `gradsweep worker` of 2 processes on Redis and
PostgreSQL; POST /sweeps with 20 learning rates x 10 seeds (200 runs of the
seed's task, 1,000 epochs each), timed from the request to the moment the last
run was stored (its `finished_at`). Baseline: the same 200 trainings
(`linear_regression.train`, same arguments) in a pool of 2 processes started
beforehand, with one BLAS thread each as the workers have, returning nothing.
Target: <= 1.3x. A third side shows how much of the difference is Celery's:
the same trainings as bare Celery tasks on the same worker, storing nothing,
timed from the first message sent until the last is acknowledged.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import time

import httpx
import numpy as np
import redis

from benchmarks.common import (
    ONE_BLAS_THREAD,
    REDIS_URL,
    database,
    empty_broker,
    header,
    interleaved,
    median,
    paired_ratios,
    print_repetitions,
    processes,
    report,
    service_env,
    timed,
    use_service_settings,
    wait_until_drained,
)
from engine.tasks import linear_regression
from service.storage import RunStatus, Storage

LEARNING_RATES = {"logspace": [1e-3, 5e-2, 20]}  # all below the task's stability limit (0.074): no run diverges


def sweep_body(n_seeds: int, epochs: int) -> dict:
    return {"name": "throughput", "learning_rates": LEARNING_RATES, "seeds": list(range(n_seeds)), "epochs": epochs}


def grid(n_seeds: int) -> list[tuple[float, int]]:
    """The (learning rate, seed) of each run, as the API expands the body above."""
    low, high, count = LEARNING_RATES["logspace"]
    rates = np.logspace(math.log10(low), math.log10(high), count).tolist()
    return list(itertools.product(rates, range(n_seeds)))


def train_one(run: tuple[float, int, int]) -> int:
    learning_rate, seed, epochs = run
    return len(linear_regression.train(learning_rate, seed, epochs).losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="runs = 20 learning rates x this")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 runs, 3 repetitions")
    args = parser.parse_args()
    n_seeds, repeats = (5, 3) if args.quick else (args.seeds, args.repeats)
    n_runs, epochs = 20 * n_seeds, args.epochs
    runs = [(rate, seed, epochs) for rate, seed in grid(n_seeds)]

    os.environ.update(ONE_BLAS_THREAD)  # read by the pool's processes when they import numpy
    with database("postgresql") as url, multiprocessing.get_context("spawn").Pool(2) as pool:
        use_service_settings(url)
        from benchmarks.noop_worker import TRAIN_ONLY, app  # the Celery app reads the settings when imported
        from worker.app import QUEUE

        empty_broker()
        broker = redis.Redis.from_url(REDIS_URL)
        storage = Storage(url)
        with processes(service_env(url)) as started:
            api = httpx.Client(base_url=started.api(), timeout=60)
            started.worker(concurrency=2, app="benchmarks.noop_worker")

            def through_the_service(body: dict) -> float:
                """Seconds from POST /sweeps to the last run stored."""
                submitted = time.time()
                sweep_id = api.post("/sweeps", json=body).raise_for_status().json()["id"]
                # Timed by the runs' finished_at, so a slow poll costs no accuracy, and takes
                # less of the two cores from the service it measures.
                while (sweep := storage.get_sweep(sweep_id)).counts["queued"] + sweep.counts["running"]:
                    time.sleep(0.5)
                stored = storage.list_runs(sweep_id)
                if any(run.status != RunStatus.SUCCEEDED for run in stored):
                    raise SystemExit(f"runs did not succeed: {sweep.counts}")
                return max(run.finished_at.timestamp() for run in stored) - submitted

            def as_bare_tasks(count: int = n_runs) -> float:
                """Seconds from the first message sent to the last acknowledged."""
                start = time.perf_counter()
                with app.producer_or_acquire() as producer:
                    for run in runs[:count]:
                        app.send_task(TRAIN_ONLY, args=list(run), producer=producer)
                return wait_until_drained(broker, QUEUE) - start

            through_the_service(sweep_body(2, epochs))  # warm: the worker is up and its processes connected
            as_bare_tasks(4)
            pool.map(train_one, runs[:4], chunksize=1)
            times = interleaved({
                "plain processes": lambda: timed(lambda: pool.map(train_one, runs, chunksize=1)),
                "service": lambda: through_the_service(sweep_body(n_seeds, epochs)),
                "bare Celery tasks": as_bare_tasks,
            }, repeats)
            api.close()
        storage.close()
        broker.close()
        empty_broker()

    header(f"sweep throughput: {n_runs} runs x {epochs} epochs, 2 training processes, Redis + PostgreSQL; "
           f"{repeats} repetitions; seconds (lower is better)")
    report("POST /sweeps to last run stored", median(times["service"]), median(times["plain processes"]),
           "same trainings, 2 processes", "s", target="(target <= 1.3x)")
    report("same trainings as bare Celery tasks", median(times["bare Celery tasks"]), median(times["plain processes"]),
           "same trainings, 2 processes", "s", target="(Celery's share: no storage, no API)")
    print_repetitions(times, "s", 1, 3)
    print(f"  ratio of each repetition: {paired_ratios(times['service'], times['plain processes'])}")
    print("(ratio = service / plain processes)")


if __name__ == "__main__":
    main()
