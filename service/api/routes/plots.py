from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from gradsweep.service.api.dashboard import COMPARE_LIMIT
from gradsweep.service.api.deps import CurveCacheDep, Id, StorageDep
from gradsweep.service.api.exports import PAGE_LOSSES
from gradsweep.service.domain.downsampling import min_max_each
from gradsweep.service.domain.reference_lines import reference_lines, sweep_reference_lines
from gradsweep.service.domain.text import human_number
from gradsweep.service.plots import RunCurve, plot_compare, plot_curves, plot_final, plot_run
from gradsweep.service.storage import Run, RunStatus, Storage

router = APIRouter(tags=["plots"])
Format = Literal["png", "svg"]
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
# Points per curve of a plot: a bucket's min and max for every pixel column of the 990-pixel-wide image
# look the same as every epoch. Fewer when many curves share the image, so that it never holds more
# than PLOT_LOSSES (32 MB of float64; 20 sweeps of 10,000 runs would be 200,000 curves), but never below FEWEST_POINTS.
PLOT_POINTS = 2_000
PLOT_LOSSES = 4_000_000
FEWEST_POINTS = 20


@router.get("/sweeps/{sweep_id}/plot.{fmt}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}})
def sweep_plot(
    sweep_id: Id, fmt: Format, storage: StorageDep, cache: CurveCacheDep,
    kind: Annotated[Literal["curves", "final"], Query()] = "curves",
) -> Response:
    """`curves`: loss against epoch per learning rate; `final`: final and best loss against learning rate.

    Drawn once for each state of the sweep (see service/api/curve_cache.py): a 10,000-run
    sweep's curves take seconds to read and draw, and a dashboard asks again while it runs.
    """
    key = (sweep_id, ("plot", kind, fmt), storage.sweep_version(sweep_id))
    image = cache.get_or_compute(key, lambda: _sweep_plot(storage, sweep_id, kind, fmt))
    return Response(image, media_type=MEDIA_TYPES[fmt])


def _sweep_plot(storage: Storage, sweep_id: int, kind: str, fmt: str) -> bytes:
    overview = storage.sweep_overview(sweep_id)
    title = f"Sweep {sweep_id} “{overview.sweep.name}”"
    # The summary's rule: no line where a search varies the data, for then no one line is every run's.
    optimum, limit = sweep_reference_lines(overview.task, overview.search)
    if kind == "curves":
        curves = _curves(storage, storage.loss_counts(sweep_id), _points_per_curve(overview.sweep.n_runs))
        return plot_curves(curves, title=f"{title}: loss curves", optimum=optimum, fmt=fmt)
    # Each finished run's final loss is its last, so this plot needs no curve; but a diverged run's best
    # loss is usually its initial one, which the plot does not ring (issue 24), so their first losses are read.
    runs = [run for run in storage.list_runs(sweep_id) if run.final_loss is not None]
    initial = _initial_losses(storage, [run for run in runs if run.status == RunStatus.DIVERGED])
    finals = [RunCurve(run.config.learning_rate, run.config.seed, run.config.optimizer, np.array([run.final_loss]),
                       diverged=run.status == RunStatus.DIVERGED, best_loss=run.best_loss,
                       stopped_early=run.status == RunStatus.STOPPED_EARLY,
                       epochs=np.array([max(run.epochs_done - 1, 0)]), initial_loss=initial.get(run.id))
              for run in runs]
    return plot_final(finals, title=f"{title}: final loss against learning rate", stability_limit=limit, fmt=fmt)


def _initial_losses(storage: Storage, runs: list[Run]) -> dict[int, float]:
    """The first loss of each of these runs, by id. Meant for diverged runs, whose curves are short (the loss
    grows a millionfold within some epochs), so that reading them whole costs little."""
    pages = storage.curve_pages({run.id: run.epochs_done for run in runs}, PAGE_LOSSES)
    return {run.id: float(losses[0]) for page in pages for run, losses in page if len(losses)}


@router.get("/runs/{run_id}/plot.{fmt}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}})
def run_plot(run_id: Id, fmt: Format, storage: StorageDep) -> Response:
    """One run's loss curve so far, named by its parameters, with the least-squares optimum of its data."""
    run, losses = storage.run_with_curve(run_id)
    config = run.config
    title = f"Run {run.id}: lr = {human_number(config.learning_rate)}, seed {config.seed}, {config.optimizer}"
    optimum = reference_lines(config.n_samples, config.n_features, config.data_seed)[0]  # the run's own data
    curve = RunCurve(config.learning_rate, config.seed, config.optimizer, losses,
                     diverged=run.status == RunStatus.DIVERGED, best_loss=run.best_loss,
                     stopped_early=run.status == RunStatus.STOPPED_EARLY, constants=config.constants)
    image = plot_run(curve, title=title, optimum=optimum, fmt=fmt)
    return Response(image, media_type=MEDIA_TYPES[fmt])


@router.get("/compare/plot.{fmt}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}})
def compare_plot(fmt: Format, storage: StorageDep, sweeps: Annotated[str, Query(examples=["1,2"])]) -> Response:
    """The loss curves of several sweeps on one plot; `sweeps` is a comma-separated list of ids, each drawn once."""
    try:
        ids = list(dict.fromkeys(int(part) for part in sweeps.split(",")))  # in order, without repeats
    except ValueError:
        ids = []
    if not ids or any(not 1 <= i < 2**63 for i in ids) or len(ids) > COMPARE_LIMIT:
        raise HTTPException(422, [{"loc": ["query", "sweeps"], "type": "value_error",
                                   "msg": f"sweeps must be 1 to {COMPARE_LIMIT} different sweep ids separated by "
                                          "commas, e.g. 1,2"}])
    counts = {sweep_id: storage.loss_counts(sweep_id) for sweep_id in ids}
    points = _points_per_curve(sum(len(runs) for runs in counts.values()))
    groups, optima = [], set()
    for sweep_id in ids:
        overview = storage.sweep_overview(sweep_id)
        groups.append((f"{sweep_id} {overview.sweep.name}", _curves(storage, counts[sweep_id], points)))
        optima.add(sweep_reference_lines(overview.task, overview.search)[0])
    optimum = optima.pop() if len(optima) == 1 else None  # one line only when the sweeps share their data
    image = plot_compare(groups, title="Sweeps compared: best learning rate of each", optimum=optimum, fmt=fmt)
    return Response(image, media_type=MEDIA_TYPES[fmt])


def _points_per_curve(n_runs: int) -> int:
    """At most PLOT_POINTS, and fewer when many curves share the image's PLOT_LOSSES."""
    return max(FEWEST_POINTS, min(PLOT_POINTS, PLOT_LOSSES // max(1, n_runs)))


def _curves(storage: Storage, counts: dict[int, int], points: int) -> list[RunCurve]:
    """The curves of the runs of `counts` (`Storage.loss_counts`) that have a loss, each down-sampled to
    about `points` points as its page of runs is read: a plot never holds a sweep's every loss (issue 22)."""
    curves = []
    for page in storage.curve_pages(counts, PAGE_LOSSES):
        drawn = [(run, losses) for run, losses in page if len(losses)]
        for (run, losses), (epochs, sampled) in zip(drawn, _sampled([losses for _, losses in drawn], points)):
            curves.append(RunCurve(run.config.learning_rate, run.config.seed, run.config.optimizer, sampled,
                                   diverged=run.status == RunStatus.DIVERGED, best_loss=run.best_loss,
                                   stopped_early=run.status == RunStatus.STOPPED_EARLY, epochs=epochs))
    return curves


def _sampled(curves: list[np.ndarray], points: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`min_max_each`, each curve keeping its first and last epochs too: the plots mark where a run ended,
    at its last loss, and scale their loss axis by a diverged run's first."""
    sampled = []
    for curve, (epochs, _) in zip(curves, min_max_each(curves, points), strict=True):
        epochs = np.union1d(epochs, [0, len(curve) - 1])
        sampled.append((epochs, curve[epochs]))
    return sampled
