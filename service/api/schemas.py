"""Request and response bodies, apart from the storage records they are made from.

Families as in the FastAPI template: `SweepCreate` comes in (a grid of the first
form, or a search over any hyperparameter), `SweepPublic`, `RunPublic` and `RunDetail` go out.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Strict, StringConstraints, Tag, ValidationInfo,
    field_validator,
    model_validator,
)

from gradsweep.service.domain import search_space
from gradsweep.service.domain.early_stopping import EarlyStopping
from gradsweep.service.domain.planning import SweepPlan, plan_grid, plan_search
from gradsweep.service.domain.search import DEFAULT_WAVE_SIZE, SearchSpec
from gradsweep.service.domain.search_space import LearningRate, Optimizer, SearchSpace, Seed
from gradsweep.service.domain.text import first_hidden
from gradsweep.service.settings import Settings, get_settings
from gradsweep.service.storage import ApiToken, AuditEntry, Role, Run, RunConfig, Sweep
from gradsweep.service.storage.access import TOKEN_NAME_PATTERN

TASK_SIZE_LIMITS = {"tensor": 10_000_000, "scalar": 100_000}


def _without_hidden_characters(text: str) -> str:
    """Refused here, where the user can fix the name, rather than shown to every terminal and page later."""
    character = first_hidden(text)
    if character is not None:
        raise ValueError(f"must not hold control or invisible characters, and U+{ord(character):04X} is one")
    return text


# Any free text a sweep carries: see service/text.py for the characters it may not hold.
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_without_hidden_characters)]


class LogSpace(BaseModel):
    """`{"logspace": [low, high, count]}`: count learning rates evenly spaced in log from low to high."""

    model_config = ConfigDict(extra="forbid")
    logspace: tuple[LearningRate, LearningRate, Annotated[int, Strict(), Field(ge=1)]]

    @field_validator("logspace")
    @classmethod
    def _ordered_and_bounded(cls, value: tuple[float, float, int]) -> tuple[float, float, int]:
        low, high, count = value
        if low > high:
            raise ValueError("low must not exceed high")
        if count > get_settings().max_runs_per_sweep:
            raise ValueError(f"count must be at most {get_settings().max_runs_per_sweep}")
        return value

    def values(self) -> list[float]:
        low, high, count = self.logspace
        return np.logspace(math.log10(low), math.log10(high), count).tolist()


class GridSweepCreate(BaseModel):
    """The first form, a grid: every learning rate × every seed × every optimizer becomes one run."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    learning_rates: Annotated[list[LearningRate], Field(min_length=1)] | LogSpace
    seeds: Annotated[list[Seed], Field(min_length=1)]
    epochs: Annotated[int, Strict(), Field(ge=1)]
    optimizers: Annotated[list[Optimizer], Field(min_length=1)] = ["sgd"]
    n_samples: Annotated[int, Strict(), Field(ge=1, le=100_000)] = 100
    n_features: Annotated[int, Strict(), Field(ge=1, le=10_000)] = 50
    data_seed: Seed = 0
    mode: Literal["tensor", "scalar"] = "tensor"
    # False: one run per job, each curve bit-equal to `gradsweep train` of that run (batched
    # curves equal it within 1e-12 relative), at the cost of a job per run.
    batched: Annotated[bool, Strict()] = True

    @field_validator("epochs")
    @classmethod
    def _within_epoch_limit(cls, epochs: int) -> int:
        limit = get_settings().max_epochs
        if epochs > limit:
            raise ValueError(f"epochs must be at most {limit}")
        return epochs

    @field_validator("learning_rates", "seeds")
    @classmethod
    def _not_longer_than_a_sweep(cls, values: list | LogSpace) -> list | LogSpace:
        # Checked per list too, so a million-entry list is refused by name before the grid is built.
        if isinstance(values, list) and len(values) > get_settings().max_runs_per_sweep:
            raise ValueError(f"at most {get_settings().max_runs_per_sweep} entries")
        return values

    @model_validator(mode="after")
    def _task_within_limit(self) -> GridSweepCreate:
        # X takes n_samples × n_features float64s; scalar mode makes a Python object for each, every epoch.
        size, limit = self.n_samples * self.n_features, TASK_SIZE_LIMITS[self.mode]
        if size > limit:
            raise ValueError(f"n_samples × n_features is {size}; {self.mode} mode allows at most {limit}")
        return self

    @model_validator(mode="after")
    def _grid_within_limit(self) -> GridSweepCreate:
        size = len(self.learning_rate_values()) * len(self.seeds) * len(self.optimizers)
        limit = get_settings().max_runs_per_sweep
        if size > limit:
            raise ValueError(f"the grid learning_rates × seeds × optimizers has {size} runs; at most {limit} are allowed")
        _check_losses(size, self.epochs)
        return self

    def plan(self, settings: Settings) -> SweepPlan:
        """Every learning rate × seed × optimizer, in that order, batched."""
        return plan_grid(self.name, [config for _, config in self.planned_runs()], settings, batched=self.batched)

    def learning_rate_values(self) -> list[float]:
        return self.learning_rates.values() if isinstance(self.learning_rates, LogSpace) else self.learning_rates

    def planned_runs(self) -> list[tuple[int | None, RunConfig]]:
        """The runs to store: each with its point (None: a grid of this form has none) and config."""
        grid = itertools.product(self.optimizers, self.learning_rate_values(), self.seeds)
        return [
            (None, search_space.config_of({"learning_rate": lr, "seed": seed, "optimizer": optimizer,
                                           "epochs": self.epochs, "n_samples": self.n_samples,
                                           "n_features": self.n_features, "data_seed": self.data_seed}, self.mode))
            for optimizer, lr, seed in grid
        ]


class SearchSweepCreate(BaseModel):
    """A search: each hyperparameter in `parameters` a value, a list or a distribution (service/domain/search_space.py);
    `method: grid` trains every combination of the lists, `random` draws `run_cap` points from `search_seed`."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    method: Literal["grid", "random", "bayes"] = "grid"
    parameters: SearchSpace
    run_cap: Annotated[int, Strict(), Field(ge=1, description="points a random or bayes search makes")] | None = None
    search_seed: Seed = 0
    wave_size: Annotated[int, Strict(), Field(ge=1, le=100, description="points bayes proposes at a time")] | None = None
    mode: Literal["tensor", "scalar"] = "tensor"
    batched: Annotated[bool, Strict()] = True  # as in the first form
    early_stopping: EarlyStopping | None = None

    @field_validator("run_cap")
    @classmethod
    def _cap_within_limit(cls, run_cap: int | None) -> int | None:
        if run_cap is not None and run_cap > get_settings().max_runs_per_sweep:
            raise ValueError(f"run_cap must be at most {get_settings().max_runs_per_sweep}")
        return run_cap

    @field_validator("early_stopping")
    @classmethod
    def _rungs_before_the_end(cls, early_stopping: EarlyStopping | None, info: ValidationInfo) -> EarlyStopping | None:
        space = info.data.get("parameters")
        if early_stopping is not None and space is not None:
            epochs = _largest(space.epochs, 0)
            if early_stopping.min_epochs >= epochs:
                raise ValueError(f"min_epochs ({early_stopping.min_epochs}) must be below the epochs ({epochs}): "
                                 "the first rung comes after min_epochs")
        return early_stopping

    @model_validator(mode="after")
    def _a_search_of_bounded_size(self) -> SearchSweepCreate:
        if self.wave_size is not None and self.method != "bayes":
            raise ValueError("wave_size is for method bayes")
        if self.method == "grid":
            if self.run_cap is not None:
                raise ValueError("run_cap is for methods random and bayes; a grid trains every combination")
            ranges = [name for name, p in self.parameters.given().items() if p.choices() is None]
            if ranges:
                raise ValueError(f"a grid needs a value or values for each parameter, not a distribution: {ranges}")
            size = search_space.grid_size(self.parameters)
        else:
            if self.run_cap is None:
                raise ValueError(f"method {self.method} needs run_cap, the number of points to draw")
            _, repeated = self.parameters.drawn_and_repeated()
            size = self.run_cap * math.prod(len(p.choices()) for p in repeated.values())
        limit = get_settings().max_runs_per_sweep
        if size > limit:
            raise ValueError(f"the search makes {size} runs; at most {limit} are allowed")
        _check_losses(size, _largest(self.parameters.epochs, 0))
        return self

    @model_validator(mode="after")
    def _task_within_limit(self) -> SearchSweepCreate:
        largest = {name: _largest(getattr(self.parameters, name), search_space.DEFAULTS[name])
                   for name in ("n_samples", "n_features")}
        size, limit = largest["n_samples"] * largest["n_features"], TASK_SIZE_LIMITS[self.mode]
        if size > limit:
            raise ValueError(f"n_samples × n_features reaches {size}; {self.mode} mode allows at most {limit}")
        return self

    def search(self) -> SearchSpec:
        """What is kept with the sweep: how its runs are chosen."""
        wave_size = (self.wave_size or DEFAULT_WAVE_SIZE) if self.method == "bayes" else None
        return SearchSpec(method=self.method, parameters=self.parameters, run_cap=self.run_cap,
                          search_seed=self.search_seed, wave_size=wave_size, batched=self.batched,
                          early_stopping=self.early_stopping)

    def plan(self, settings: Settings) -> SweepPlan:
        """The runs to store now (of bayes, its first wave), batched, with the search."""
        return plan_search(self.name, self.search(), self.mode, settings)


def _check_losses(runs: int, epochs: int) -> None:
    """A sweep's losses are bounded (GRADSWEEP_MAX_LOSSES_PER_SWEEP), as its runs and epochs are each."""
    limit = get_settings().max_losses_per_sweep
    if runs * epochs > limit:
        raise ValueError(f"runs × epochs is {runs} × {epochs} = {runs * epochs} losses; at most {limit} are allowed")


def _largest(parameter: search_space.Parameter | None, default: int) -> int:
    if parameter is None:
        return default
    return max(parameter.choices() or [parameter.max])


def _form(body: object) -> str:
    return "search" if isinstance(body, dict) and "parameters" in body else "grid"


# A body with `parameters` is a search; any other is a grid of the first form, which keeps working as it did.
SweepCreate = Annotated[Annotated[GridSweepCreate, Tag("grid")] | Annotated[SearchSweepCreate, Tag("search")],
                        Discriminator(_form)]


class RunPublic(BaseModel):
    id: int
    sweep_id: int
    learning_rate: float
    seed: int
    optimizer: str
    epochs: int
    n_samples: int
    n_features: int
    data_seed: int
    mode: str
    beta: float | None = None  # the optimizer's constants; null where it has no such constant
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None
    batch: int
    batch_size: int
    point: int | None = None  # of a search: the index of the point (configuration) it trains
    status: str
    attempts: int
    worker: str | None
    epochs_done: int
    final_loss: float | None
    best_loss: float | None
    diverged_at: int | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, run: Run) -> RunPublic:
        config = run.config
        return cls(
            id=run.id, sweep_id=run.sweep_id, learning_rate=config.learning_rate, seed=config.seed,
            optimizer=config.optimizer, epochs=config.epochs, n_samples=config.n_samples,
            n_features=config.n_features, data_seed=config.data_seed, mode=config.mode, beta=config.beta,
            beta1=config.beta1, beta2=config.beta2, eps=config.eps, batch=run.batch,
            batch_size=run.batch_size, point=run.point, status=run.status,
            attempts=run.attempts, worker=run.worker, epochs_done=run.epochs_done, final_loss=run.final_loss,
            best_loss=run.best_loss, diverged_at=run.diverged_at, error=run.error, created_at=run.created_at,
            started_at=run.started_at, finished_at=run.finished_at,
        )


class RunDetail(RunPublic):
    final_loss: float | None = None
    best_loss: float | None = None
    diverged_at: int | None = None
    losses: list[float]
    sampled_epochs: list[int] | None = None  # the epoch of each of `losses` when down-sampled (`?points=`)


class SweepPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    status: Literal["queued", "running", "finished"]
    n_runs: int
    n_finished: int
    counts: dict[str, int]
    created_by: str | None = Field(None, description="the name of the token that submitted it")
    planned_runs: int = Field(description="the runs the sweep will have when done: n_runs, except for a Bayesian "
                                          "search still proposing waves, whose run_cap × its repeated values count "
                                          "from the first wave on; progress is n_finished of planned_runs")

    @classmethod
    def of(cls, sweep: Sweep) -> SweepPublic:
        active = sweep.counts["queued"] + sweep.counts["running"]
        return cls(id=sweep.id, name=sweep.name, created_at=sweep.created_at, status=sweep_status(sweep),
                   n_runs=sweep.n_runs, n_finished=sweep.n_runs - active, counts=sweep.counts,
                   created_by=sweep.created_by, planned_runs=sweep.planned_runs)


def sweep_status(sweep: Sweep) -> Literal["queued", "running", "finished"]:
    """Finished once no run is queued or running and no wave is to come; queued while none has started."""
    if sweep.counts["queued"] + sweep.counts["running"] == 0:
        return "running" if sweep.searching else "finished"
    return "queued" if sweep.counts["queued"] == sweep.n_runs else "running"


class SweepSummary(SweepPublic):
    """A sweep without its runs: what a client polls, whatever the sweep's size."""

    n_jobs: int
    best_run: RunPublic | None  # the lowest loss so far, of runs that neither diverged nor failed
    n_samples: int
    n_features: int
    data_seed: int
    least_squares_loss: float | None  # the lowest loss any run can reach (None where too costly to know)
    stability_limit: float | None  # 2/λmax: plain gradient descent diverges above this learning rate
    search: dict | None = None  # how the runs were chosen (method, parameters, run_cap, search_seed, early_stopping); null for a grid of the first form


class RunPagePublic(BaseModel):
    total: int  # runs that match the filter
    offset: int
    limit: int
    runs: list[RunPublic]


class RunCurvePublic(BaseModel):
    run_id: int
    learning_rate: float
    seed: int
    optimizer: str
    status: str
    final_loss: float | None = None
    best_loss: float | None = None
    diverged_at: int | None = None
    losses: list[float]
    sampled_epochs: list[int] | None = None  # the epoch of each of `losses` when down-sampled (`?points=`)


class SweepLosses(BaseModel):
    sweep_id: int
    runs: list[RunCurvePublic]


class ErrorMessage(BaseModel):
    detail: str


# The errors every route may answer with, declared so that the OpenAPI document tells clients (and fuzzers) the truth.
ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorMessage, "description": "the request body could not be read as JSON text"},
    401: {"model": ErrorMessage, "description": "the API has tokens and the bearer token is missing, wrong or revoked"},
    403: {"model": ErrorMessage, "description": "a read token asked for a change: it needs a write token"},
    404: {"model": ErrorMessage, "description": "no sweep or run with that id"},
    413: {"model": ErrorMessage, "description": "the request body is larger than GRADSWEEP_MAX_REQUEST_BYTES"},
    503: {"model": ErrorMessage, "description": "the database or the broker is unavailable; nothing was changed"},
}


class Health(BaseModel):
    database: str
    broker: str


# ---- tokens and the audit log ----

TokenName = Annotated[str, StringConstraints(pattern=TOKEN_NAME_PATTERN)]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TokenName = Field(description="letters, digits, '_', '.' and '-', at most 64: who or what uses it")
    role: Role = Field(Role.READ, description="read: see everything; write: also submit, cancel, retry and delete")


class TokenPublic(BaseModel):
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenPublic:
        return cls(name=token.name, role=token.role, created_at=token.created_at, created_by=token.created_by,
                   revoked_at=token.revoked_at)


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: shown now and never again (only its hash is kept)")


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="the name of the token used (anonymous on an open API)")
    action: str
    sweep_id: int | None
    detail: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryPublic:
        return cls(id=entry.id, at=entry.at, actor=entry.actor, action=entry.action, sweep_id=entry.sweep_id,
                   detail=entry.detail)
