"""The API's peak memory while it serves a large sweep's curves: it must not grow with the sweep (issue 22).

    python -m benchmarks.api_memory_bench [--backend sqlite|postgresql|both] [--runs 10000] [--epochs 10000]
                                          [--baseline-runs 100] [--formats json csv] [--quick]

A sweep of runs × epochs losses (10^8 by default: 10,000 runs × 10,000 epochs, the
largest GRADSWEEP_MAX_LOSSES_PER_SWEEP allows), and in the same database a baseline
sweep of baseline-runs × epochs (10^6), written straight through `Storage.record` as
workers write them (random losses, no training). Then `gradsweep api` as its own
process serves each sweep's every-epoch JSON (`GET /sweeps/{id}/losses`) and CSV
(`?format=csv`) to a client that reads and drops them. For each answer: the API's
peak resident memory (VmHWM, reset before each request) and its growth over the
memory it had before the request; the ratio is the large sweep's peak over the
baseline's (target: <= 1.5x: memory that does not grow with the sweep, here 100x larger).
"""

from __future__ import annotations

import argparse
import time

import httpx

from benchmarks.common import (
    against,
    database,
    fill_sweep,
    header,
    peak_rss,
    processes,
    report,
    reset_peak_rss,
    seed_task_runs,
    service_env,
)
from gradsweep.service.storage import Storage

MB = 2**20
PATHS = {"json": "/sweeps/{id}/losses", "csv": "/sweeps/{id}/losses?format=csv"}


def stored_sweep(storage: Storage, name: str, n_runs: int, epochs: int) -> int:
    """A sweep of n_runs × epochs losses, every run's curve written; its id."""
    sweep, runs = storage.create_sweep(name, seed_task_runs(n_runs, epochs), lambda jobs: None)
    fill_sweep(storage, [run.id for run in runs], epochs)
    return sweep.id


def served(api_url: str, pid: int, path: str) -> tuple[int, int, int, float]:
    """(peak RSS, RSS before, bytes, seconds) of the API process while a client reads `path` and drops it."""
    reset_peak_rss(pid)
    before = peak_rss(pid)
    start, size = time.perf_counter(), 0
    with httpx.stream("GET", api_url + path, headers={"Accept-Encoding": "identity"}, timeout=3600) as answer:
        answer.raise_for_status()
        for piece in answer.iter_raw(1 << 20):
            size += len(piece)
    return peak_rss(pid), before, size, time.perf_counter() - start


def bench(backend: str, n_runs: int, baseline_runs: int, epochs: int, formats: list[str]) -> None:
    header(f"{backend}: the API's peak memory serving {n_runs:,} x {epochs:,} = {n_runs * epochs:,} losses, "
           f"against {baseline_runs:,} x {epochs:,} = {baseline_runs * epochs:,}")
    with database(backend) as url:
        storage = Storage(url)
        start = time.perf_counter()
        sweeps = {"baseline": stored_sweep(storage, "baseline", baseline_runs, epochs),
                  "large": stored_sweep(storage, "large", n_runs, epochs)}
        storage.close()
        print(f"  written through Storage.record in {time.perf_counter() - start:.0f} s", flush=True)
        with processes(service_env(url)) as running:
            api_url = running.api()
            pid = running.started[-1].pid
            for fmt in formats:
                measured = {}
                for name, sweep_id in sweeps.items():
                    peak, before, size, seconds = served(api_url, pid, PATHS[fmt].format(id=sweep_id))
                    measured[name] = peak
                    print(f"  {fmt} of the {name} sweep: {size / MB:,.0f} MB in {seconds:.1f} s; API peak "
                          f"{peak / MB:,.0f} MB, {(peak - before) / MB:,.0f} MB above its {before / MB:,.0f} MB "
                          "before", flush=True)
                ratio = measured["large"] / measured["baseline"]
                report(f"{fmt}: API peak RSS", measured["large"] / MB, measured["baseline"] / MB,
                       f"{baseline_runs * epochs:,} losses", "MB", target=against(ratio, 1.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--baseline-runs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--formats", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="1,000 runs (10^7 losses)")
    args = parser.parse_args()
    n_runs = 1_000 if args.quick else args.runs
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        bench(backend, n_runs, args.baseline_runs, args.epochs, args.formats)
    print("ratio: the large sweep's peak over the baseline sweep's, both measured in the same API process")


if __name__ == "__main__":
    main()
