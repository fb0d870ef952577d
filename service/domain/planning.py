"""The one step from a request to what storage creates: the runs' configs, their points, their batches and
the search, planned here and stored by `Storage.create_planned_sweep` in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gradsweep.service.domain import bayes, search_space
from gradsweep.service.domain.batching import batch_sizes
from gradsweep.service.domain.records import RunConfig
from gradsweep.service.domain.search import SearchSpec
from gradsweep.service.settings import Settings

__all__ = ["SweepPlan", "plan_grid", "plan_search"]


@dataclass(frozen=True)
class SweepPlan:
    """A sweep to store: consecutive `configs` in batches of `batch_sizes` runs, each run with its point of the
    search (`points`, None for a grid of the first form), and whether more waves are to come (`searching`)."""

    name: str
    configs: tuple[RunConfig, ...]
    batch_sizes: tuple[int, ...]
    points: tuple[int, ...] | None = None
    search: SearchSpec | None = None
    searching: bool = False


def plan_grid(name: str, configs: Sequence[RunConfig], settings: Settings, *, batched: bool = True) -> SweepPlan:
    """A grid of the first form: the configs as given, batched."""
    return SweepPlan(name, tuple(configs), tuple(batch_sizes(configs, settings, batched=batched)))


def plan_search(name: str, search: SearchSpec, mode: str, settings: Settings) -> SweepPlan:
    """A search's runs to store now: a grid's or a random search's all, a Bayesian search's first wave."""
    if search.method == "bayes":
        runs = bayes.next_wave(search, [], mode)
    else:
        runs = search_space.planned_runs(search.parameters, search.method, search.run_cap, search.search_seed, mode)
    points, configs = zip(*runs)
    sizes = batch_sizes(configs, settings, batched=search.batched, points=points)
    return SweepPlan(name, tuple(configs), tuple(sizes), tuple(points), search,
                     searching=search.searching_after(max(points) + 1))
