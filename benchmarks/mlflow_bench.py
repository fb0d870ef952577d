"""Against MLflow: the same loss curves logged to MLflow's tracking store and to our storage layer, both on SQLite.

    python -m benchmarks.mlflow_bench [--runs 100] [--epochs 1000] [--repeats 3] [--quick]

R runs x E epochs of losses. MLflow (the `bench` extra): a tracking URI
sqlite:///...; per run `create_run`, `log_batch` of the run's losses (1,000
metrics a call, MLflow's limit) and `set_terminated`. Ours: a sweep of R runs
(`create_sweep`, in the batches the API makes of them: 100 runs, 2 jobs of 50),
then per job the transactions its worker makes: `start_job`, and one
`Storage.record` of every run's losses and outcome. Reported beside it: the
same with a job per run (`"batched": false`): `start_job` of the one run, then
one `record` of its losses and outcome. Figure: points (losses) per second, run
creation included on both sides. Target: >= 20x MLflow.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import against, header, interleaved, median, print_repetitions, report, seed_task_runs, timed
from gradsweep.service.domain.batching import batch_sizes
from gradsweep.service.settings import Settings
from gradsweep.service.storage import LossWrite, Outcome, RunStatus, Storage

MLFLOW_BATCH = 1000  # MLflow refuses more metrics in one log_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 runs, 3 repetitions")
    args = parser.parse_args()
    n_runs, epochs, repeats = (20 if args.quick else args.runs), args.epochs, args.repeats
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise SystemExit("MLflow is not installed: pip install -e '.[bench]'")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    rng = np.random.default_rng(0)
    curves = [rng.random(epochs) for _ in range(n_runs)]
    with tempfile.TemporaryDirectory(prefix="gradsweep-bench-") as folder:
        mlflow = MlflowClient(tracking_uri=f"sqlite:///{Path(folder) / 'mlflow.db'}")
        experiment = mlflow.create_experiment("losses", artifact_location=str(Path(folder) / "artifacts"))
        storage = Storage(f"sqlite:///{Path(folder) / 'gradsweep.sqlite'}")
        storage.upgrade()
        configs = seed_task_runs(n_runs, epochs)

        def log_to_mlflow() -> None:
            for values in curves:
                run_id = mlflow.create_run(experiment).info.run_id
                now = int(time.time() * 1000)
                metrics = [Metric("loss", value, now, step) for step, value in enumerate(values.tolist())]
                for start in range(0, len(metrics), MLFLOW_BATCH):
                    mlflow.log_batch(run_id, metrics=metrics[start:start + MLFLOW_BATCH])
                mlflow.set_terminated(run_id)

        def store_in_gradsweep(sizes: list[int]) -> None:
            _, runs = storage.create_sweep("losses", configs, lambda jobs: None, batch_sizes=sizes)
            first = 0
            for size in sizes:
                job = storage.start_job([run.id for run in runs[first:first + size]], "bench")
                storage.record([LossWrite(run.id, 0, values, run.attempts, Outcome(RunStatus.SUCCEEDED, values[-1]))
                                for run, values in zip(job.batch, curves[first:first + size], strict=True)])
                first += size

        batched = batch_sizes(configs, Settings())
        points = n_runs * epochs
        rates = interleaved({"mlflow": lambda: points / timed(log_to_mlflow),
                             "gradsweep": lambda: points / timed(lambda: store_in_gradsweep(batched)),
                             "gradsweep, a job per run": lambda: points / timed(
                                 lambda: store_in_gradsweep([1] * n_runs))}, repeats)
        history = mlflow.get_metric_history(mlflow.search_runs([experiment], max_results=1)[0].info.run_id, "loss")
        assert len(history) == epochs
        unfinished = [run for sweep in storage.list_sweeps() for run in storage.list_runs(sweep.id)
                      if run.status != RunStatus.SUCCEEDED or run.epochs_done != epochs]
        storage.close()
    if unfinished:
        raise SystemExit(f"{len(unfinished)} runs were not stored whole, e.g. {unfinished[0]}")

    header(f"{n_runs} runs x {epochs} epochs logged, SQLite for both; {repeats} repetitions; points/s "
           f"(higher is better)")
    ours, theirs = median(rates["gradsweep"]), median(rates["mlflow"])
    report(f"gradsweep, {len(batched)} jobs", ours, theirs, "MLflow log_batch", "points/s",
           target=against(ours / theirs, 20, higher=True))
    report("gradsweep, a job per run", median(rates["gradsweep, a job per run"]), theirs, "MLflow log_batch",
           "points/s", target="(reported)")
    print_repetitions(rates, "points/s", 1, 0)
    print("(ratio = ours / MLflow, in points/s)")


if __name__ == "__main__":
    main()
