"""What a sweep must have stored, for tests that check it after the service trained it (faults or none)."""

from __future__ import annotations

import math
from itertools import groupby

import numpy as np

from sqlalchemy import create_engine, text

from gradsweep.engine.optimizers import CONSTANTS
from gradsweep.engine.tasks.linear_regression import train, train_batch
from gradsweep.service.domain.early_stopping import EarlyStopping


def expected_curves(runs: list[dict]) -> dict[int, list[float]]:
    """Each run's curve, by run id, from its batch trained again here, uninterrupted.

    The service must have stored exactly these, bit for bit, whatever faults it met:
    a batch of one trained by `train`, a larger batch by `train_batch` in slot order.
    """
    curves = {}
    ordered = sorted(runs, key=lambda run: (run["batch"], run["id"]))
    for _, batch in groupby(ordered, key=lambda run: run["batch"]):
        batch = list(batch)
        assert len(batch) == batch[0]["batch_size"], "a run is missing from its batch"
        first = batch[0]
        shared = dict(epochs=first["epochs"], n_samples=first["n_samples"], n_features=first["n_features"],
                      data_seed=first["data_seed"], optimizer=first["optimizer"])
        names = CONSTANTS[first["optimizer"]]  # each run's own, as stored
        if len(batch) == 1:
            results = [train(first["learning_rate"], first["seed"], mode=first["mode"],
                             constants={name: first[name] for name in names}, **shared)]
        else:
            results = train_batch([run["learning_rate"] for run in batch], [run["seed"] for run in batch],
                                  constants={name: [run[name] for run in batch] for name in names}, **shared)
        curves.update((run["id"], result.losses.tolist()) for run, result in zip(batch, results, strict=True))
    return curves


def stored_epochs(database_url: str, sweep_id: int) -> dict[int, list[tuple[int, int]]]:
    """The (first epoch, count) of each chunk of losses stored for each run of the sweep, in epoch order."""
    engine = create_engine(database_url)
    count = "cardinality(losses)" if engine.dialect.name == "postgresql" else "length(losses) / 8"
    with engine.connect() as connection:
        rows = connection.execute(text(
            f"SELECT run_id, first_epoch, {count} FROM loss_chunks WHERE run_id IN "
            "(SELECT id FROM runs WHERE sweep_id = :sweep) ORDER BY run_id, first_epoch"), {"sweep": sweep_id}).all()
    engine.dispose()
    return {run_id: [(first, n) for _, first, n in chunks] for run_id, chunks in groupby(rows, key=lambda r: r[0])}


def assert_each_epoch_stored_once(database_url: str, sweep_id: int, runs: list[dict]) -> None:
    """Every run's chunks cover epochs 0, 1, ..., epochs_done - 1 once each: none doubled, none missing."""
    chunks = stored_epochs(database_url, sweep_id)
    for run in runs:
        covered = [epoch for first, n in chunks.get(run["id"], []) for epoch in range(first, first + n)]
        assert covered == list(range(run["epochs_done"])), f"run {run['id']}: epochs doubled or missing"


def expected_stops(runs: list[dict], early_stopping: dict) -> dict[int, int]:
    """The epoch after which early stopping ends each run it ends, by run id, for points judged together.

    Right where every point of a bracket reaches each rung in the same batch, as a sweep of
    one batch does: each rung then judges all of them at once against each other, each by
    its runs' mean loss (+inf if one has diverged). (Runs of the same epochs.)
    """
    rule = EarlyStopping(**early_stopping)
    curves = expected_curves(runs)
    points = {point: [run for run in runs if run["point"] == point] for point in sorted({r["point"] for r in runs})}
    stops: dict[int, int] = {}
    for bracket in sorted({rule.bracket(point, runs[0]["epochs"]) for point in points}):
        members = {point: of_point for point, of_point in points.items()
                   if rule.bracket(point, runs[0]["epochs"]) == bracket}
        for rung in rule.rungs(bracket, runs[0]["epochs"]):
            live = {point: of_point for point, of_point in members.items()
                    if not any(run["id"] in stops for run in of_point)
                    and any(len(curves[run["id"]]) >= rung for run in of_point)}
            losses = {point: (math.inf if any(len(curves[run["id"]]) < rung for run in of_point) else
                              float(np.mean([curves[run["id"]][rung - 1] for run in of_point])))
                      for point, of_point in live.items()}
            for point, loss in losses.items():
                if not rule.keeps(loss, list(losses.values())):
                    stops.update((run["id"], rung) for run in live[point] if len(curves[run["id"]]) >= rung)
    return stops


def assert_early_stopping_kept_the_curves(runs: list[dict], stored: dict[int, list[float]],
                                          early_stopping: dict) -> None:
    """Each run's stored curve is the start of its batch's uninterrupted curve, bit for bit, as long as it trained;
    a run stopped early stopped at a rung of its own."""
    rule, expected = EarlyStopping(**early_stopping), expected_curves(runs)
    for run in runs:
        assert stored[run["id"]] == expected[run["id"]][:run["epochs_done"]]
        assert len(stored[run["id"]]) == run["epochs_done"]
        if run["status"] == "stopped_early":
            assert run["epochs_done"] in rule.rungs(rule.bracket(run["point"], run["epochs"]), run["epochs"])
            assert run["final_loss"] == stored[run["id"]][-1]
