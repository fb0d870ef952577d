"""Loss curves as CSV, one row per (run, epoch), the same for a sweep and for one run."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import numpy as np

from service.storage import Run

COLUMNS = ["run_id", "learning_rate", "seed", "optimizer", "epoch", "loss"]


def losses_csv(curves: Iterable[tuple[Run, np.ndarray]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for run, losses in curves:
        config = run.config
        for epoch, loss in enumerate(losses.tolist()):
            # repr: the shortest text that reads back as the same float64
            writer.writerow([run.id, repr(config.learning_rate), config.seed, config.optimizer, epoch, repr(loss)])
    return out.getvalue()
