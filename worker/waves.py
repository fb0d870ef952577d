"""A Bayesian search's next wave, proposed when its wave before has ended.

By the worker that ended the wave's last run, right after; and, in case that worker
died first, by the reaper of any worker, which checks for searches left waiting.
Either may die half-way: the proposal is made again from the database, the same
(see service/domain/bayes.py), and stored once.
"""

from __future__ import annotations

import logging

from gradsweep.service.domain import bayes
from gradsweep.service.domain.batching import batch_sizes
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import Enqueue, Storage

log = logging.getLogger(__name__)


def propose_next_wave(storage: Storage, sweep_id: int, enqueue: Enqueue) -> list[int]:
    """Stores and enqueues the sweep's next wave if it is due; returns the new runs' ids ([] if none was due)."""
    overview = storage.sweep_overview(sweep_id)
    sweep, search = overview.sweep, overview.search
    if not sweep.searching or search is None or sweep.counts["queued"] + sweep.counts["running"]:
        return []
    planned = bayes.next_wave(search, storage.list_runs(sweep_id), overview.task.mode)
    if not planned:
        raise ValueError(f"sweep {sweep_id} is searching but has made all {search.run_cap} points")
    points, configs = zip(*planned)
    sizes = batch_sizes(configs, get_settings(), batched=search.batched, points=points)
    runs = storage.add_runs(sweep_id, configs, points, enqueue, batch_sizes=sizes,
                            searching=search.searching_after(max(points) + 1))
    if runs:
        log.info("sweep %s: proposed points %s-%s", sweep_id, min(points), max(points))
    return [run.id for run in runs]
