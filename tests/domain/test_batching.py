"""How POST /sweeps groups a sweep's runs into batches (service/domain/batching.py)."""

from dataclasses import replace

from gradsweep.service.domain.batching import batch_sizes, bytes_per_run
from gradsweep.service.settings import Settings
from gradsweep.service.storage import RunConfig

RUN = RunConfig(learning_rate=0.01, seed=0, optimizer="sgd", epochs=1000, n_samples=100, n_features=50,
                data_seed=0, mode="tensor")


def runs(n: int, **changes) -> list[RunConfig]:
    return [replace(RUN, seed=seed, **changes) for seed in range(n)]


def test_a_100_run_sweep_keeps_every_worker_process_busy() -> None:
    assert batch_sizes(runs(100), Settings()) == [50, 50]  # the default, 2: a 2-process worker's
    assert batch_sizes(runs(100), Settings(min_jobs_per_sweep=4)) == [25] * 4


def test_jobs_are_at_most_max_runs_per_job_and_split_evenly() -> None:
    assert batch_sizes(runs(1000), Settings(max_runs_per_job=300)) == [250] * 4
    assert batch_sizes(runs(10_000), Settings()) == [500] * 20
    assert batch_sizes(runs(10), Settings(min_jobs_per_sweep=3)) == [4, 3, 3]
    assert batch_sizes(runs(3), Settings(min_jobs_per_sweep=4)) == [1, 1, 1]  # fewer runs than jobs: a run a job


def test_only_runs_that_differ_in_learning_rate_and_seed_share_a_batch() -> None:
    sweep = runs(4) + runs(4, optimizer="adam") + runs(2, mode="scalar")
    assert batch_sizes(sweep, Settings(min_jobs_per_sweep=1)) == [4, 4, 1, 1]
    assert batch_sizes(runs(4), Settings(min_jobs_per_sweep=1), batched=False) == [1, 1, 1, 1]


def test_a_points_runs_are_kept_in_one_batch() -> None:
    points = [p for p in range(10) for _ in range(3)]  # ten points of three seeds
    assert batch_sizes(runs(30), Settings(min_jobs_per_sweep=4), points=points) == [6, 6, 6, 6, 6]
    assert batch_sizes(runs(30), Settings(min_jobs_per_sweep=2), points=points) == [15, 15]
    assert batch_sizes(runs(7), Settings(max_runs_per_job=2, min_jobs_per_sweep=1), points=[0] * 5 + [1, 1]) == [
        2, 2, 1, 2]  # a point larger than a job is the only one split


def test_a_job_of_a_large_task_is_bounded_by_memory() -> None:
    budget = 2**20 * 64
    large = runs(100, n_samples=20_000, n_features=500, epochs=100_000)
    sizes = batch_sizes(large, Settings(job_memory_bytes=budget, min_jobs_per_sweep=1))
    assert max(sizes) * bytes_per_run(100_000, 20_000, 500) <= budget and sum(sizes) == 100
