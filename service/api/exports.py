"""Loss curves as CSV, one row per (run, epoch), the same for a sweep and for one run."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import numpy as np

from service.downsampling import min_max
from service.storage import Run

COLUMNS = ["run_id", "learning_rate", "seed", "optimizer", "epoch", "loss"]


def losses_csv(curves: Iterable[tuple[Run, np.ndarray]], points: int | None = None) -> str:
    """Every epoch's loss; with `points`, each curve down-sampled as `min_max` does."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for run, losses in curves:
        config = run.config
        epochs, losses = min_max(losses, points) if points else (range(len(losses)), losses)
        for epoch, loss in zip(epochs, losses.tolist(), strict=True):
            # repr: the shortest text that reads back as the same float64
            writer.writerow([run.id, repr(config.learning_rate), config.seed, config.optimizer, int(epoch), repr(loss)])
    return out.getvalue()
