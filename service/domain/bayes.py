"""Bayesian search: waves of points proposed by Optuna's TPE sampler, told the mean final loss of the points before.

Optuna is used through its ask-and-tell interface only, with an in-memory study made
afresh for each wave from the runs in our database: their parameters and losses are
the search's whole state, and Optuna's storage is never used. A wave's proposals
depend only on that history and on the search seed (the sampler is seeded per wave),
so whatever proposes a wave can be killed and run again: it proposes the same wave,
and `Storage.add_runs` stores a wave once. Within a wave, TPE's constant liar spreads
the points it proposes before any of them is told.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import groupby
from statistics import fmean

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from gradsweep.service.domain import search_space
from gradsweep.service.domain.records import Run, RunConfig, RunStatus
from gradsweep.service.domain.search import DEFAULT_WAVE_SIZE, SearchSpec
from gradsweep.service.domain.search_space import Parameter, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a worker's log is for our events

def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna's distribution for each searched parameter (not the repeated ones, nor those of one value)."""
    drawn, _ = space.drawn_and_repeated()
    return {name: _distribution(parameter) for name, parameter in drawn.items() if parameter.value is None}


def _distribution(parameter: Parameter) -> BaseDistribution:
    if parameter.distribution == "uniform":
        return FloatDistribution(parameter.min, parameter.max)
    if parameter.distribution == "log_uniform":
        return FloatDistribution(parameter.min, parameter.max, log=True)
    if parameter.distribution == "int_uniform":
        return IntDistribution(parameter.min, parameter.max)
    return CategoricalDistribution(parameter.choices())


def next_wave(search: SearchSpec, runs: Sequence[Run], mode: str) -> list[tuple[int, RunConfig]]:
    """The runs of the search's next wave, each with the index of its point; none once run_cap points are made."""
    space, wave_size = search.parameters, search.wave_size or DEFAULT_WAVE_SIZE
    told = points_of(runs)
    size = min(wave_size, (search.run_cap or 0) - len(told))
    if size <= 0:
        return []
    proposed = propose(space, search.search_seed, len(told) // wave_size, told, size)
    return search_space.runs_of_points(space, proposed, mode, first=len(told))


def propose(space: SearchSpace, search_seed: int, wave: int, told: list[tuple[dict, TrialState, float | None]],
            size: int) -> list[dict[str, object]]:
    """`size` new points, TPE's proposals after the `told` points (their parameters, state and value)."""
    searched = distributions(space)
    drawn, _ = space.drawn_and_repeated()
    fixed = {name: parameter.value for name, parameter in drawn.items() if parameter.value is not None}
    seed = int(np.random.SeedSequence([search_seed, wave]).generate_state(1)[0])
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))
    for params, state, value in told:
        study.add_trial(optuna.trial.create_trial(
            params={name: params[name] for name in searched}, distributions=searched, state=state,
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values={} if state != TrialState.PRUNED else {0: value}))
    return [fixed | study.ask(searched).params for _ in range(size)]


def points_of(runs: Sequence[Run]) -> list[tuple[dict, TrialState, float | None]]:
    """Each point's parameters, how it ended and its value, in point order: the mean final loss over its runs.

    A point with a diverged run is worth +inf (it can only be avoided); one with a run
    stopped early is pruned, with its mean loss where its runs stopped; one with a failed
    or cancelled run tells TPE nothing. A wave is proposed once every run has ended.
    """
    told = []
    ordered = sorted(runs, key=lambda run: (run.point, run.id))
    for _, group in groupby(ordered, key=lambda run: run.point):
        group = list(group)
        statuses = {run.status for run in group}
        params = vars(group[0].config)
        if not all(status.is_finished for status in statuses):
            raise ValueError(f"point {group[0].point} is still training: a wave follows the one before")
        if statuses & {RunStatus.FAILED, RunStatus.CANCELLED}:
            told.append((params, TrialState.FAIL, None))
        elif RunStatus.DIVERGED in statuses:
            told.append((params, TrialState.COMPLETE, math.inf))
        else:
            value = fmean(run.final_loss for run in group)
            stopped = RunStatus.STOPPED_EARLY in statuses
            told.append((params, TrialState.PRUNED if stopped else TrialState.COMPLETE, value))
    return told
