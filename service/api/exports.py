"""Loss curves as CSV, one row per (run, epoch), the same for a sweep and for one run.

Each row names its run's hyperparameters, so that a search's CSV can be grouped by any
of them; a constant the run's optimizer does not have is empty, as is a grid's point.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import numpy as np

from service.downsampling import min_max
from service.storage import Run
from service.storage.records import CONSTANT_NAMES

COLUMNS = ["run_id", "point", "learning_rate", "seed", "optimizer", "beta", "beta1", "beta2", "eps", "status",
           "epoch", "loss"]


def losses_csv(curves: Iterable[tuple[Run, np.ndarray]], points: int | None = None) -> str:
    """Every epoch's loss; with `points`, each curve down-sampled as `min_max` does."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for run, losses in curves:
        config = run.config
        # repr: the shortest text that reads back as the same float64
        head = [run.id, _text(run.point), repr(config.learning_rate), config.seed, config.optimizer,
                *(_text(getattr(config, name)) for name in CONSTANT_NAMES), run.status.value]
        epochs, losses = min_max(losses, points) if points else (range(len(losses)), losses)
        for epoch, loss in zip(epochs, losses.tolist(), strict=True):
            writer.writerow([*head, int(epoch), repr(loss)])
    return out.getvalue()


def _text(value: float | int | None) -> str:
    return "" if value is None else repr(value)
