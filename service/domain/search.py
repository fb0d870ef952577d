"""A search as it is kept with its sweep: typed when the request is read, stored as JSON, read back typed.

Every layer that needs to know how a sweep's runs were chosen (the planner, Bayesian
proposals, early stopping in the worker, the reference lines, the dashboard) reads a
`SearchSpec`, never the stored JSON by its keys.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from gradsweep.service.domain.early_stopping import EarlyStopping
from gradsweep.service.domain.search_space import FIRST_FORM_PARAMETERS, SearchSpace

__all__ = ["DEFAULT_WAVE_SIZE", "SearchSpec", "swept_parameters"]

DEFAULT_WAVE_SIZE = 5  # points per Bayesian wave: sequential enough for TPE to learn, wide enough to fill a batch


class SearchSpec(BaseModel):
    """How a search chooses its runs: its method, space, cap and seed; of bayes, the points proposed at a time;
    whether runs train in batches; the early-stopping rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["grid", "random", "bayes"]
    parameters: SearchSpace
    run_cap: int | None = None
    search_seed: int = 0
    wave_size: int | None = None  # set for bayes only
    batched: bool = True
    early_stopping: EarlyStopping | None = None

    def stored(self) -> dict[str, Any]:
        """The JSON kept with the sweep (and shown by its summary): what the request said, defaults left out."""
        cap = {} if self.run_cap is None else {"run_cap": self.run_cap}
        waves = {} if self.wave_size is None else {"wave_size": self.wave_size}
        unbatched = {} if self.batched else {"batched": False}
        stopping = {} if self.early_stopping is None else {"early_stopping": self.early_stopping.model_dump()}
        return {"method": self.method, **cap, "search_seed": self.search_seed, **waves, **unbatched,
                "parameters": self.parameters.model_dump(mode="json", exclude_defaults=True), **stopping}

    @classmethod
    def of_stored(cls, stored: dict[str, Any]) -> SearchSpec:
        return cls.model_validate(stored)

    def planned_runs(self, n_runs: int, searching: bool) -> int:
        """The runs its sweep will have once no wave is to come: while a Bayesian search still proposes, its run cap
        × the values of its repeated parameters, from its first wave on (issue 24: its first wave was taken for
        the whole); else, and for a search cancelled before its last wave, the `n_runs` it has."""
        if not searching:
            return n_runs
        _, repeated = self.parameters.drawn_and_repeated()
        runs_per_point = math.prod(len(parameter.choices()) for parameter in repeated.values())
        return max(n_runs, (self.run_cap or 0) * runs_per_point)

    def searching_after(self, points_made: int) -> bool:
        """Whether a Bayesian search has waves to come once it has made this many points."""
        return self.method == "bayes" and points_made < (self.run_cap or 0)


def swept_parameters(search: SearchSpec | None) -> list[str]:
    """The hyperparameters a sweep's runs may differ in: those its search gives a distribution or more than one
    value (a grid of the first form, no search, sweeps learning rates, seeds and optimizers)."""
    if search is None:
        return list(FIRST_FORM_PARAMETERS)
    return [name for name, parameter in search.parameters.given().items()
            if parameter.value is None and (parameter.values is None or len(parameter.values) != 1)]
