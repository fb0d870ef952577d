"""gradsweep's Celery app with two more tasks, the bare Celery sides of `overhead_bench` and `sweep_bench`.

    celery -A benchmarks.noop_worker worker ...

The same app, so the same configuration (JSON, late acknowledgement, prefetch 1)
and the same worker process serve both sides.
"""

from engine.tasks import linear_regression
from worker.app import app

NOOP = "gradsweep.bench.noop"
TRAIN_ONLY = "gradsweep.bench.train_only"


@app.task(name=NOOP)
def noop(index: int) -> None:
    """Does nothing: what Celery alone costs a task."""


@app.task(name=TRAIN_ONLY)
def train_only(learning_rate: float, seed: int, epochs: int) -> None:
    """Trains as `train_run` does and stores nothing: what Celery alone adds to a run."""
    linear_regression.train(learning_rate, seed, epochs)


__all__ = ["NOOP", "TRAIN_ONLY", "app"]
