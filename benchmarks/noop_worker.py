"""gradsweep's Celery app with two more tasks, the bare Celery sides of `overhead_bench` and `sweep_bench`.

    celery -A benchmarks.noop_worker worker ...

The same app, so the same configuration (JSON, late acknowledgement, prefetch 1)
and the same worker process serve both sides.
"""

from gradsweep.engine.tasks import linear_regression
from gradsweep.worker.app import app

NOOP = "gradsweep.bench.noop"
TRAIN_BATCH_ONLY = "gradsweep.bench.train_batch_only"


@app.task(name=NOOP)
def noop(index: int) -> None:
    """Does nothing: what Celery alone costs a task."""


@app.task(name=TRAIN_BATCH_ONLY)
def train_batch_only(learning_rates: list[float], seeds: list[int], epochs: int) -> None:
    """Trains a batch as `train_job` does and stores nothing: what Celery alone adds to a job."""
    linear_regression.train_batch(learning_rates, seeds, epochs)


__all__ = ["NOOP", "TRAIN_BATCH_ONLY", "app"]
