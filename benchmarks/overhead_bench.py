"""Per-run overhead: what the service adds to a run beyond training, against a bare Celery no-op task.

    python -m benchmarks.overhead_bench [--runs 1000] [--repeats 9] [--quick]

One worker of 2 prefork processes (gradsweep's Celery app and configuration:
JSON, late acknowledgement, prefetch 1) on Redis, results in PostgreSQL. Each
repetition sends N no-op tasks to the worker (one producer, as `enqueue_runs`
sends), then submits N runs of 1 epoch as the API does (`Storage.create_sweep`
with the real `enqueue_runs`: rows and messages) to the same worker, and waits
each time until the last task is done and acknowledged; a run is done once
started, trained, its loss stored and its outcome recorded. Figure: wall time
per task, from the first message sent to the last acknowledgement. Target:
runs <= 3x the no-op task.
"""

from __future__ import annotations

import argparse
import time

import redis

from benchmarks.common import (
    REDIS_URL,
    database,
    empty_broker,
    header,
    interleaved,
    median,
    paired_ratios,
    processes,
    report,
    seed_task_runs,
    service_env,
    spread,
    use_service_settings,
    wait_until_drained,
)
from service.storage import RunStatus, Storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="500 runs, 3 repetitions")
    args = parser.parse_args()
    n, repeats = (500, 3) if args.quick else (args.runs, args.repeats)

    with database("postgresql") as url:
        use_service_settings(url)
        from benchmarks.noop_worker import NOOP, app  # the Celery app reads the settings when imported
        from worker.app import QUEUE
        from worker.queue import RETRY_POLICY, enqueue_runs

        empty_broker()
        broker = redis.Redis.from_url(REDIS_URL)
        storage = Storage(url)
        configs = seed_task_runs(n, epochs=1)
        submitted: dict[str, list[float]] = {"runs": [], "no-op": []}

        def runs(count: int = n) -> float:
            start = time.perf_counter()
            storage.create_sweep("overhead", configs[:count], enqueue_runs)
            submitted["runs"].append((time.perf_counter() - start) / count)
            return (wait_until_drained(broker, QUEUE) - start) / count

        def noops(count: int = n) -> float:
            start = time.perf_counter()
            with app.producer_or_acquire() as producer:  # as enqueue_runs sends
                for i in range(count):
                    app.send_task(NOOP, args=[i], producer=producer, retry=True, retry_policy=RETRY_POLICY)
            submitted["no-op"].append((time.perf_counter() - start) / count)
            return (wait_until_drained(broker, QUEUE) - start) / count

        with processes(service_env(url)) as started:
            started.worker(concurrency=2, app="benchmarks.noop_worker")
            noops(50), runs(50)  # the worker is up, its processes have connected and imported the engine
            for times in submitted.values():
                times.clear()
            times = interleaved({"no-op": noops, "runs": runs}, repeats)
        unfinished = [run for sweep in storage.list_sweeps() for run in storage.list_runs(sweep.id)
                      if run.status != RunStatus.SUCCEEDED]
        storage.close()
        broker.close()
        empty_broker()
    if unfinished:
        raise SystemExit(f"{len(unfinished)} runs did not succeed, e.g. {unfinished[0]}")

    header(f"per-run overhead: {n} runs of 1 epoch vs {n} no-op tasks, 1 worker x 2 processes, Redis + PostgreSQL; "
           f"{repeats} repetitions")
    ours, base = median(times["runs"]), median(times["no-op"])
    report("run of 1 epoch, submit to stored", ours * 1e3, base * 1e3, "no-op Celery task", "ms/task",
           target="(target <= 3x)")
    print(f"  throughput: runs {1 / ours:,.0f}/s, no-op tasks {1 / base:,.0f}/s")
    print(f"  submitting alone: create_sweep + enqueue {median(submitted['runs']) * 1e3:.3f} ms/run, "
          f"send_task {median(submitted['no-op']) * 1e3:.3f} ms/message")
    print(f"  every repetition, ms/task: runs {spread(times['runs'], 1e3, 3)}, no-op {spread(times['no-op'], 1e3, 3)}")
    print(f"  ratio of each repetition: {paired_ratios(times['runs'], times['no-op'])}")


if __name__ == "__main__":
    main()
