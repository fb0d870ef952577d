"""Per-run overhead: what the service costs a run beyond training, against a bare Celery no-op task.

    python -m benchmarks.overhead_bench [--runs 1000] [--repeats 9] [--quick]

`gradsweep api` and one worker of 2 prefork processes (gradsweep's Celery app
and configuration: JSON, late acknowledgement, prefetch 1) on Redis, results in
PostgreSQL. Each repetition, on the same worker and broker:
- no-op: N bare no-op tasks, sent with one producer as `enqueue_jobs` sends;
  wall time from the first message sent to the last acknowledgement, per task.
- service: POST /sweeps of N runs of 1 epoch (20 learning rates x N/20 seeds),
  which the API stores, batches (1,000 runs: 10 jobs of 100) and enqueues
  before it answers with every run; wall time from the request to the last
  task acknowledged (a job is acknowledged once it has started its runs,
  trained them and recorded their losses and outcomes), per run. Training a
  run for 1 epoch costs next to nothing, so nothing is subtracted: this is
  the service's cost per run. Target: <= 0.5x the no-op task (stretch: <= 0.1x).
- one run per job (reported): the same with `"batched": false`, N jobs of one
  run each, as the service ran every sweep before it batched them.
"""

from __future__ import annotations

import argparse
import time


from benchmarks.common import (
    against,
    header,
    interleaved,
    median,
    paired_ratios,
    print_repetitions,
    report,
    service_on_postgresql,
    sweep_body,
    wait_until_drained,
)
from gradsweep.service.storage import RunStatus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="a multiple of 20")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="500 runs, 3 repetitions")
    args = parser.parse_args()
    n, repeats = (500, 3) if args.quick else (args.runs, args.repeats)

    with service_on_postgresql(api_timeout=120) as service:
        from benchmarks.noop_worker import NOOP, app  # the Celery app reads the settings when imported
        from gradsweep.worker.app import QUEUE
        from gradsweep.worker.queue import RETRY_POLICY

        storage, broker, started, api = service.storage, service.broker, service.started, service.api
        submitted: dict[str, list[float]] = {"service": [], "one run per job": [], "no-op": []}
        started.worker(concurrency=2, app="benchmarks.noop_worker")

        def sweep(side: str, count: int = n, **extra: object) -> float:
            start = time.perf_counter()
            api.post("/sweeps", json=sweep_body("overhead", count, 1, **extra)).raise_for_status()
            submitted[side].append((time.perf_counter() - start) / count)
            return (wait_until_drained(broker, QUEUE) - start) / count

        def noops(count: int = n) -> float:
            start = time.perf_counter()
            with app.producer_or_acquire() as producer:  # as enqueue_jobs sends
                for i in range(count):
                    app.send_task(NOOP, args=[i], producer=producer, retry=True, retry_policy=RETRY_POLICY)
            submitted["no-op"].append((time.perf_counter() - start) / count)
            return (wait_until_drained(broker, QUEUE) - start) / count

        # Warm: the worker is up, its processes have connected and imported the engine.
        noops(40), sweep("service", 40), sweep("one run per job", 40, batched=False)
        for times in submitted.values():
            times.clear()
        times = interleaved({"no-op": noops, "service": lambda: sweep("service"),
                             "one run per job": lambda: sweep("one run per job", batched=False)}, repeats)
        unfinished = [run for sweep_ in storage.list_sweeps() for run in storage.list_runs(sweep_.id)
                      if run.status != RunStatus.SUCCEEDED]
    if unfinished:
        raise SystemExit(f"{len(unfinished)} runs did not succeed, e.g. {unfinished[0]}")

    header(f"per-run overhead: {n} runs of 1 epoch through the API vs {n} no-op tasks, 1 worker x 2 processes, "
           f"Redis + PostgreSQL; {repeats} repetitions; milliseconds a run or task (lower is better)")
    ours, base, alone = median(times["service"]), median(times["no-op"]), median(times["one run per job"])
    report("run of 1 epoch, submit to stored", ours * 1e3, base * 1e3, "no-op Celery task", "ms",
           target=against(ours / base, 0.5, 0.1))
    report("... one run per job", alone * 1e3, base * 1e3, "no-op Celery task", "ms", target="(reported)")
    print(f"  throughput: runs {1 / ours:,.0f}/s ({1 / alone:,.0f}/s one per job), no-op tasks {1 / base:,.0f}/s")
    print(f"  submitting alone: POST /sweeps {median(submitted['service']) * 1e3:.3f} ms/run "
          f"({median(submitted['one run per job']) * 1e3:.3f} one per job), "
          f"send_task {median(submitted['no-op']) * 1e3:.3f} ms/message")
    print_repetitions(times, "ms", 1e3, 3)
    print(f"  ratio of each repetition, service / no-op: {paired_ratios(times['service'], times['no-op'])}")
    print("(ratio = ours / no-op task)")


if __name__ == "__main__":
    main()
