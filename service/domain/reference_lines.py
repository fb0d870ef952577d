"""A task's reference lines: the least-squares optimum (the lowest loss any run can reach) and the
learning rate above which plain gradient descent diverges (2/λmax), drawn in plots and shown in summaries."""

from functools import lru_cache

from gradsweep.engine.tasks.linear_regression import least_squares_loss, stability_limit
from gradsweep.service.domain.records import RunConfig
from gradsweep.service.domain.search import SearchSpec, swept_parameters

# Above this, the optimum (a least-squares solve) and the limit (an eigenvalue problem in
# n_features + 1 dimensions) would cost a request seconds to minutes: they are left out.
REFERENCE_LINES_MAX_FEATURES = 1_000
REFERENCE_LINES_MAX_SIZE = 1_000_000  # n_samples × n_features


@lru_cache(maxsize=64)
def reference_lines(n_samples: int, n_features: int, data_seed: int) -> tuple[float | None, float | None]:
    """(least-squares loss, stability limit) of the task's data, or (None, None) where they are not cheap to know."""
    if n_features > REFERENCE_LINES_MAX_FEATURES or n_samples * n_features > REFERENCE_LINES_MAX_SIZE:
        return None, None
    return least_squares_loss(n_samples, n_features, data_seed), stability_limit(n_samples, n_features, data_seed)


def sweep_reference_lines(task: RunConfig, search: SearchSpec | None) -> tuple[float | None, float | None]:
    """`reference_lines` of a sweep whose first run has `task`: (None, None) if its search varies the data,
    for then each run has data of its own and no one line is every run's."""
    if {"n_samples", "n_features", "data_seed"} & set(swept_parameters(search)):
        return None, None
    return reference_lines(task.n_samples, task.n_features, task.data_seed)
