"""A sweep's search space: each hyperparameter a value, a list of values or a distribution, and the runs it makes.

As W&B sweeps write it (`values`, `value`, `distribution` with `min` and `max`), with the
distributions our users know from Ray Tune and Optuna: `uniform`, `log_uniform`,
`int_uniform` and `choice`. `method: grid` trains every combination of the lists;
`method: random` draws `run_cap` points from `search_seed`, so the same request always
makes the same runs. A parameter with `repeat: true` (seeds, typically) is not drawn but
crossed with every point: each configuration is trained once per value, and the plots
keep their mean ± spread over them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Annotated, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from gradsweep.engine.optimizers import CONSTANTS, OPTIMIZERS
from gradsweep.service.domain.records import RunConfig
from gradsweep.service.settings import get_settings

SEED_LIMIT = 2**32
T = TypeVar("T")

# Each hyperparameter's values. Strict: "0.1" or true is a client's mistake, not a number.
LearningRate = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
Seed = Annotated[int, Strict(), Field(ge=0, lt=SEED_LIMIT)]
Optimizer = Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]
Epochs = Annotated[int, Strict(), Field(ge=1)]  # and at most GRADSWEEP_MAX_EPOCHS, checked with the settings
NSamples = Annotated[int, Strict(), Field(ge=1, le=100_000)]
NFeatures = Annotated[int, Strict(), Field(ge=1, le=10_000)]
Beta = Annotated[float, Strict(), Field(ge=0, lt=1, allow_inf_nan=False)]
Eps = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]

# What a search leaves out is the seed task's: seed 0, sgd, 100 x 50 data of seed 0 (and the optimizer's own constants).
DEFAULTS: dict[str, object] = {"seed": 0, "optimizer": "sgd", "n_samples": 100, "n_features": 50, "data_seed": 0}

Distribution = Literal["uniform", "log_uniform", "int_uniform", "choice"]
FLOATS = {"learning_rate", "beta", "beta1", "beta2", "eps"}  # may be drawn from uniform or log_uniform
INTEGERS = {"seed", "epochs", "n_samples", "n_features", "data_seed"}  # from int_uniform


class Parameter(BaseModel, Generic[T]):
    """One hyperparameter: exactly one of `value`, `values` or `distribution` (with `min` and `max`, or `values`
    for a choice)."""

    model_config = ConfigDict(extra="forbid")

    value: T | None = None
    values: Annotated[list[T], Field(min_length=1, max_length=10_000)] | None = None
    distribution: Distribution | None = None
    min: T | None = None
    max: T | None = None
    repeat: Annotated[bool, Strict()] = False  # crossed with every point, not drawn

    @model_validator(mode="after")
    def _one_form(self) -> Parameter:
        forms = [form for form in ("value", "values", "distribution") if getattr(self, form) is not None]
        if self.distribution == "choice" and forms == ["values", "distribution"]:
            forms = ["distribution"]
        if len(forms) != 1:
            raise ValueError("give exactly one of value, values or distribution")
        bounded = self.distribution in ("uniform", "log_uniform", "int_uniform")
        if bounded:
            if self.min is None or self.max is None:
                raise ValueError(f"{self.distribution} needs min and max")
            if not self.min < self.max:
                raise ValueError(f"min ({self.min}) must be below max ({self.max})")
            if self.distribution == "log_uniform" and self.min <= 0:
                raise ValueError(f"log_uniform needs min > 0, got {self.min}")
        elif self.min is not None or self.max is not None:
            raise ValueError("min and max belong to uniform, log_uniform and int_uniform")
        if self.distribution == "choice" and self.values is None:
            raise ValueError("choice needs values")
        if self.repeat and self.values is None:
            raise ValueError("repeat needs values")
        return self

    def choices(self) -> list | None:
        """The values a grid goes through, or a random search draws one of; None for a range."""
        if self.value is not None:
            return [self.value]
        return self.values

    def draw(self, rng: np.random.Generator) -> object:
        """One value, drawn from `rng`; a draw takes the same numbers from `rng` whatever the bounds."""
        if self.distribution in (None, "choice"):
            options = self.choices()
            return options[int(rng.integers(len(options)))]
        if self.distribution == "uniform":
            return float(rng.uniform(self.min, self.max))
        if self.distribution == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.min), math.log(self.max))))
        return int(rng.integers(self.min, self.max, endpoint=True))


class SearchSpace(BaseModel):
    """The swept hyperparameters by name: the learning rate and the epochs must be given, the others default
    to a single value (seed 0, sgd, the seed task's 100 × 50 data of seed 0, the optimizers' own constants)."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: Parameter[LearningRate]
    epochs: Parameter[Epochs]
    seed: Parameter[Seed] | None = None
    optimizer: Parameter[Optimizer] | None = None
    n_samples: Parameter[NSamples] | None = None
    n_features: Parameter[NFeatures] | None = None
    data_seed: Parameter[Seed] | None = None
    beta: Parameter[Beta] | None = None  # momentum's
    beta1: Parameter[Beta] | None = None  # Adam's
    beta2: Parameter[Beta] | None = None
    eps: Parameter[Eps] | None = None

    @field_validator("*")
    @classmethod
    def _distribution_fits(cls, parameter: Parameter | None, info: ValidationInfo) -> Parameter | None:
        if parameter is None or parameter.distribution in (None, "choice"):
            return parameter
        name = info.field_name
        if parameter.distribution == "int_uniform" and name not in INTEGERS:
            raise ValueError(f"int_uniform is for whole numbers ({', '.join(sorted(INTEGERS))}), not {name}")
        if parameter.distribution != "int_uniform" and name not in FLOATS:
            raise ValueError(f"{parameter.distribution} is for {', '.join(sorted(FLOATS))}, not {name}")
        return parameter

    @field_validator("epochs")
    @classmethod
    def _epochs_within_limit(cls, epochs: Parameter) -> Parameter:
        limit = get_settings().max_epochs
        if max(epochs.choices() or [epochs.max]) > limit:
            raise ValueError(f"epochs must be at most {limit}")
        return epochs

    def given(self) -> dict[str, Parameter]:
        """The parameters the request named, in the order of the fields (the order draws are made in)."""
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}

    def drawn_and_repeated(self) -> tuple[dict[str, Parameter], dict[str, Parameter]]:
        given = self.given()
        return ({name: p for name, p in given.items() if not p.repeat},
                {name: p for name, p in given.items() if p.repeat})


# What a grid of the first form (learning_rates × seeds × optimizers) sweeps.
FIRST_FORM_PARAMETERS = ("learning_rate", "seed", "optimizer")


def grid_size(space: SearchSpace) -> int:
    """Runs of a grid over `space`; refused before building it when too large."""
    return math.prod(len(parameter.choices()) for parameter in space.given().values())


def points(space: SearchSpace, method: str, run_cap: int | None, search_seed: int) -> Iterator[dict[str, object]]:
    """The configurations `method` picks from `space` (without the repeated parameters), in order."""
    drawn, _ = space.drawn_and_repeated()
    if method == "grid":
        names = list(drawn)
        for values in itertools.product(*(drawn[name].choices() for name in names)):
            yield dict(zip(names, values))
        return
    rng = np.random.default_rng(search_seed)
    for _ in range(run_cap or 0):
        yield {name: parameter.draw(rng) for name, parameter in drawn.items()}


def planned_runs(space: SearchSpace, method: str, run_cap: int | None, search_seed: int,
                 mode: str) -> list[tuple[int, RunConfig]]:
    """The runs of a grid or random search: see `runs_of_points`."""
    return runs_of_points(space, list(points(space, method, run_cap, search_seed)), mode)


def runs_of_points(space: SearchSpace, chosen: list[dict[str, object]], mode: str,
                   first: int = 0) -> list[tuple[int, RunConfig]]:
    """One run per point and value of the repeated parameters, each with every hyperparameter set, and the index
    of its point (counted from `first`).

    Runs that can train as one batch (the same optimizer, epochs and data) are put next
    to each other, in the order their first point came, so that the grid of the first
    form keeps its order and a random search makes as few batches as it can.
    """
    _, repeated = space.drawn_and_repeated()
    names = list(repeated)
    crossed = list(itertools.product(*(repeated[name].choices() for name in names)))
    groups: dict[tuple, list[tuple[int, RunConfig]]] = {}
    for index, point in enumerate(chosen, start=first):
        for values in crossed:
            config = config_of({**point, **dict(zip(names, values))}, mode)
            key = (config.optimizer, config.epochs, config.n_samples, config.n_features, config.data_seed)
            groups.setdefault(key, []).append((index, config))
    return [run for group in groups.values() for run in group]


def config_of(values: dict[str, object], mode: str) -> RunConfig:
    """The run of these hyperparameters, the others at their defaults; the optimizer's constants always set."""
    values = DEFAULTS | values
    constants = {name: values.get(name, default) for name, default in CONSTANTS[values["optimizer"]].items()}
    return RunConfig(learning_rate=values["learning_rate"], seed=values["seed"], optimizer=values["optimizer"],
                     epochs=values["epochs"], n_samples=values["n_samples"], n_features=values["n_features"],
                     data_seed=values["data_seed"], mode=mode, **constants)
