"""How a sweep's runs are grouped into batches, each trained as one computation by one job.

Runs batch together when they differ only in learning rate and seed: they then
share their data, optimizer and number of epochs, and `train_batch` trains them
as the columns of one matrix. A batch costs its worker one start and one write
every half second for all its runs, where a run alone cost both per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import groupby

from gradsweep.service.domain.records import RunConfig
from gradsweep.service.settings import Settings


def batch_sizes(configs: Sequence[RunConfig], settings: Settings, *, batched: bool = True,
                points: Sequence[int] | None = None) -> list[int]:
    """The sizes of the batches that consecutive `configs` form, in order; all 1 unless `batched`.

    Batches are at most `max_runs_per_job` runs and `job_memory_bytes` of arrays, and
    small enough that the sweep makes at least `min_jobs_per_sweep` jobs: a 100-run
    sweep keeps every process of a 2-process worker busy. A group of runs is split
    evenly, so no batch is much smaller than the others; with `points` (a search's, one
    per config), between points, so that a point's runs (its seeds) reach each rung of
    early stopping together and are judged as one.
    """
    sizes: list[int] = []
    per_job = min(settings.max_runs_per_job, max(1, math.ceil(len(configs) / settings.min_jobs_per_sweep)))
    start = 0
    for shared, group in groupby(configs, key=_shared):
        n = len(list(group))
        group_points, start = (None if points is None else points[start:start + n]), start + n
        if not batched or shared[-1] != "tensor":
            sizes += [1] * n  # scalar mode is the seed's engine: one run, one graph of Variables
            continue
        _, epochs, n_samples, n_features, _, _ = shared
        largest = min(per_job, max(1, settings.job_memory_bytes // bytes_per_run(epochs, n_samples, n_features)))
        count = math.ceil(n / largest)
        if group_points is None:
            sizes += [n // count + (i < n % count) for i in range(count)]
        else:
            sizes += _between_points(group_points, math.ceil(n / count))
    return sizes


def _between_points(points: Sequence[int], target: int) -> list[int]:
    """Batches of at most `target` runs that split no point's runs, but a point of more runs than that."""
    sizes, current = [], 0
    for _, runs in groupby(points):
        n = len(list(runs))
        if current and current + n > target:
            sizes.append(current)
            current = 0
        while current + n > target:  # one point fills batches of its own
            sizes.append(target)
            n -= target
        current += n
    return sizes + [current] if current else sizes


def bytes_per_run(epochs: int, n_samples: int, n_features: int) -> int:
    """About what one run adds to a job's memory: a few columns of n_samples and of n_features float64s
    in `train_batch`'s arrays, and its curve, as a float64 array and as the list of floats it returns."""
    return 8 * (8 * n_samples + 6 * n_features) + 40 * epochs


def _shared(config: RunConfig) -> tuple:
    """What the runs of a batch have in common."""
    return (config.optimizer, config.epochs, config.n_samples, config.n_features, config.data_seed, config.mode)
