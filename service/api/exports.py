"""A sweep's loss curves as CSV and JSON, written a page of runs at a time.

A sweep may hold 10,000 runs × 100,000 epochs; read whole, that is 8 GB of float64
in the API's memory before a byte is sent (issue 22). So its curves are read a page of
runs at a time (`Storage.curve_pages`, at most PAGE_LOSSES losses a page) and each page
is encoded and sent before the next is read: the API holds one page, whatever the sweep.

CSV: one row per (run, epoch), the same for a sweep and for one run. Each row names its
run's hyperparameters, so that a search's CSV can be grouped by any of them; a constant
the run's optimizer does not have is empty, as is a grid's point.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import AnyStr

import numpy as np
import orjson

from gradsweep.service.domain.downsampling import min_max, min_max_each
from gradsweep.service.domain.records import CONSTANT_NAMES
from gradsweep.service.storage import Run, Storage

__all__ = ["COLUMNS", "PAGE_LOSSES", "curves_json", "losses_csv", "sweep_pages"]

COLUMNS = ["run_id", "point", "learning_rate", "seed", "optimizer", "beta", "beta1", "beta2", "eps", "status",
           "epoch", "loss"]
# Losses read per database round trip: 8 MB of float64, a few times that while decoded and encoded.
PAGE_LOSSES = 1_000_000
# What a streamed answer is sent in: small runs are joined, so 10,000 of them are not 10,000 sends.
PIECE_BYTES = 1 << 20

Curves = Iterable[tuple[Run, np.ndarray]]


def sweep_pages(storage: Storage, sweep_id: int) -> Iterator[list[tuple[Run, np.ndarray]]]:
    """The sweep's runs with their curves, a page at a time; NotFound is raised here, before any page is read."""
    return storage.curve_pages(storage.loss_counts(sweep_id), PAGE_LOSSES)


def losses_csv(curves: Curves, points: int | None = None) -> str:
    """Every epoch's loss; with `points`, each curve down-sampled as `min_max` does."""
    return "".join(csv_pieces(curves, points))


def csv_pieces(curves: Curves, points: int | None = None) -> Iterator[str]:
    """`losses_csv`'s text, the header first, then a piece per run (or per few short runs)."""
    yield ",".join(COLUMNS) + "\n"
    yield from _batched((_csv_run(run, losses, points) for run, losses in curves), "")


def _csv_run(run: Run, losses: np.ndarray, points: int | None) -> str:
    config = run.config
    # repr: the shortest text that reads back as the same float64
    head = [run.id, _text(run.point), repr(config.learning_rate), config.seed, config.optimizer,
            *(_text(getattr(config, name)) for name in CONSTANT_NAMES), run.status.value]
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(head)  # quoted as csv quotes; an epoch and a loss need none
    prefix = line.getvalue()[:-1] + ","
    epochs, losses = min_max(losses, points) if points else (np.arange(len(losses)), losses)
    return "".join([f"{prefix}{epoch},{loss!r}\n" for epoch, loss in zip(epochs.tolist(), losses.tolist())])


def curves_json(sweep_id: int, pages: Iterable[Curves], points: int | None) -> Iterator[bytes]:
    """`GET /sweeps/{id}/losses` as JSON (schemas.SweepLosses), in pieces whose concatenation is
    byte for byte what orjson gives for the whole answer at once."""
    yield b'{"sweep_id":%d,"runs":[' % sweep_id
    yield from _batched(_json_runs(pages, points), b"")
    yield b"]}"


def _json_runs(pages: Iterable[Curves], points: int | None) -> Iterator[bytes]:
    """Each run's object, a comma before all but the first; a page's curves down-sampled together."""
    separator = b""
    for page in pages:
        runs, losses = [run for run, _ in page], [curve for _, curve in page]
        sampled = min_max_each(losses, points) if points is not None else [(None, curve) for curve in losses]
        for run, (epochs, values) in zip(runs, sampled, strict=True):
            yield separator + _json_run(run, epochs, values)
            separator = b","


def _json_run(run: Run, epochs: np.ndarray | None, values: np.ndarray) -> bytes:
    return orjson.dumps(
        {"run_id": run.id, "learning_rate": run.config.learning_rate, "seed": run.config.seed,
         "optimizer": run.config.optimizer, "status": run.status.value, "final_loss": run.final_loss,
         "best_loss": run.best_loss, "diverged_at": run.diverged_at, "losses": values, "sampled_epochs": epochs},
        option=orjson.OPT_SERIALIZE_NUMPY)


def _batched(pieces: Iterable[AnyStr], empty: AnyStr) -> Iterator[AnyStr]:
    """The pieces joined into pieces of at least PIECE_BYTES (but the last)."""
    batch: list[AnyStr] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= PIECE_BYTES:
            yield empty.join(batch)
            batch, size = [], 0
    if batch:
        yield empty.join(batch)


def _text(value: float | int | None) -> str:
    return "" if value is None else repr(value)
