"""Searches on the seed task: the best point each method finds, the epochs it trains to find it, and its wall time.

    python -m benchmarks.search_bench [--epochs 1000] [--points 30] [--search-seeds 0 1 2] [--backend postgresql]
                                      [--min-epochs 8] [--eta 4] [--wave-size N] [--methods random bayes ...]

The space: learning rate ~ log_uniform(1e-3, 1) x optimizer in {sgd, momentum, adam}; each
point (one drawn configuration) trains with seeds 0, 1 and 2 (`repeat: true`), 1,000 epochs.
Through `gradsweep api` and one worker of 2 processes, on Redis and PostgreSQL:
- grid: 10 learning rates log-spaced over [1e-3, 1] x the 3 optimizers (30 points, 90 runs);
- random: 30 points drawn from the search seed;
- bayes: 30 points proposed in waves by Optuna's TPE inside the service;
- random + hyperband: random's points, with `early_stopping` hyperband (min_epochs, eta as given);
- waves: bayes's floor, random points in one sweep per wave (wave_size points), each submitted
  as soon as the one before has ended (polled every 10 ms): a sequential method's wall time
  with nothing proposed between its waves.
Without the service, in this process, Optuna alone: `study.optimize` of 30 trials with
`TPESampler(seed)`, with its `HyperbandPruner` (the same min_epochs and eta) and without a
pruner; each trial trains its 3 seeds with `train_batch` and reports their mean loss every epoch.

A point's score is the mean of its 3 seeds' final losses when all three trained every epoch
(succeeded): a point with a diverged run scores inf, one with a run stopped early nothing. A
method's best is its best point's, against the least-squares optimum and the grid's best.
Epochs trained: the runs' epochs_done, summed. Wall time: from POST /sweeps to the last run
stored (its finished_at), and per run. Targets: random + hyperband within 1 % of the grid's best
with at most a third of its epochs; bayes at least as good as Optuna's TPE for the same run_cap;
random's and bayes's wall time per run at most 1.10x the grid's.

Each search seed is a repetition of every method. The grid gives the same runs every time but
runs in every repetition anyway: it is the baseline that repetition's wall times are compared
with, so that a slow moment of the machine hits both.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from benchmarks.common import against, database, empty_broker, header, processes, service_env
from gradsweep.engine.tasks import linear_regression
from gradsweep.service.client import ApiError, Client
from gradsweep.service.domain.search import DEFAULT_WAVE_SIZE

OPTIMIZERS = ["sgd", "momentum", "adam"]
SEEDS = [0, 1, 2]  # each point's repeated seeds
LOW, HIGH = 1e-3, 1.0  # the learning rate's range
SERVICE_METHODS = ["grid", "random", "bayes", "hyperband", "waves"]
OPTUNA_METHODS = ["optuna-tpe", "optuna-hyperband"]
LABELS = {"grid": "grid", "random": "random", "bayes": "bayes (TPE, in waves)", "hyperband": "random + hyperband",
          "waves": "waves, none proposed",
          "optuna-tpe": "Optuna TPE", "optuna-hyperband": "Optuna TPE + Hyperband"}
# What makes runs the same point: every hyperparameter but the repeated seed.
POINT_FIELDS = ("learning_rate", "optimizer", "beta", "beta1", "beta2", "eps", "epochs", "n_samples", "n_features",
                "data_seed")
POLL_SECONDS = 0.5  # sweeps are timed by their runs' finished_at, so a slow poll costs no accuracy
SWEEP_TIMEOUT = 1800


@dataclass(frozen=True)
class Outcome:
    """What one search found and what it cost."""

    best: float  # the best point's mean final loss; inf if no point trained all its runs to the end
    epochs: int  # trained, over all runs
    wall: float  # seconds, submitted to the last run stored (Optuna: study.optimize)
    runs: int
    statuses: dict[str, int]  # runs by status (Optuna: trials by state)
    scored: int  # points whose every seed trained every epoch, so that they have a score

    @property
    def per_run(self) -> float:
        return self.wall / self.runs


class Refused(Exception):
    """The API answered 422 to a search: it does not take this method (yet)."""


# ---- through the service ----


def parameters(method: str, epochs: int, n_points: int) -> dict:
    """The search space of `method`: the grid's lists, or the distributions the others draw from."""
    seed = {"values": SEEDS, "repeat": True}
    if method == "grid":
        rates = np.logspace(math.log10(LOW), math.log10(HIGH), n_points // len(OPTIMIZERS)).tolist()
        return {"learning_rate": {"values": rates}, "optimizer": {"values": OPTIMIZERS}, "seed": seed,
                "epochs": {"value": epochs}}
    return {"learning_rate": {"distribution": "log_uniform", "min": LOW, "max": HIGH},
            "optimizer": {"distribution": "choice", "values": OPTIMIZERS}, "seed": seed, "epochs": {"value": epochs}}


def search_options(method: str, args: argparse.Namespace, search_seed: int) -> dict:
    """The rest of the body of POST /sweeps: how the points are chosen, and how runs are stopped early."""
    if method == "grid":
        return {"method": "grid"}
    options: dict = {"method": "bayes" if method == "bayes" else "random", "run_cap": args.points,
                     "search_seed": search_seed}
    if method == "bayes" and args.wave_size is not None:
        options["wave_size"] = args.wave_size
    if method == "hyperband":
        options["early_stopping"] = {"type": "hyperband", "min_epochs": args.min_epochs, "eta": args.eta}
    return options


def through_the_service(client: Client, method: str, args: argparse.Namespace, search_seed: int) -> Outcome:
    """Submits the search, waits for all its runs and scores them; raises Refused on a 422."""
    body = {"name": f"search-bench {method}", "parameters": parameters(method, args.epochs, args.points),
            **search_options(method, args, search_seed)}
    submitted = time.time()
    try:
        sweep = client.post("/sweeps", json=body).json()
    except ApiError as error:
        if "HTTP 422" in str(error):
            raise Refused(str(error)) from None
        raise
    runs = finished_runs(client, sweep["id"], args.points * len(SEEDS))
    return outcome_of(runs, submitted, args.epochs)


def outcome_of(runs: list[dict], submitted: float, epochs: int) -> Outcome:
    """What a search submitted at `submitted` (time.time()) found in its finished `runs`, and what it cost."""
    wall = max(datetime.fromisoformat(run["finished_at"]).timestamp() for run in runs) - submitted
    scores = point_scores(runs, epochs)
    return Outcome(min(scores, default=math.inf), sum(run["epochs_done"] for run in runs), wall, len(runs),
                   dict(Counter(run["status"] for run in runs)), sum(map(math.isfinite, scores)))


def in_waves(client: Client, args: argparse.Namespace, search_seed: int) -> Outcome:
    """`waves` (see the top): random points, a sweep of wave_size points at a time, each after the one before."""
    wave = args.wave_size or DEFAULT_WAVE_SIZE
    submitted, runs = time.time(), []
    for number in range(math.ceil(args.points / wave)):
        body = {"name": "search-bench waves", "parameters": parameters("random", args.epochs, args.points),
                "method": "random", "run_cap": min(wave, args.points - number * wave),
                "search_seed": 1000 * search_seed + number}
        sweep = client.post("/sweeps", json=body).json()
        runs += finished_runs(client, sweep["id"], sweep["n_runs"], poll=0.01)
    return outcome_of(runs, submitted, args.epochs)


def finished_runs(client: Client, sweep_id: int, n_runs: int, poll: float = POLL_SECONDS) -> list[dict]:
    """The sweep's runs once all `n_runs` exist and none is queued or running.

    A bayes search creates its runs wave by wave, so the sweep may look finished between two waves.
    """
    deadline = time.monotonic() + SWEEP_TIMEOUT
    while (sweep := client.sweep(sweep_id))["status"] != "finished" or sweep["n_runs"] < n_runs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep {sweep_id} is not done after {SWEEP_TIMEOUT} s: {sweep['n_runs']} runs, "
                               f"{sweep['counts']}")
        time.sleep(poll)
    return client.runs(sweep_id)


def point_scores(runs: list[dict], epochs: int) -> list[float]:
    """Each point's mean final loss over its seeds; inf for a point that has one that did not train all `epochs`."""
    points: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        points[tuple(run[field] for field in POINT_FIELDS)].append(run)
    return [point_score(point, epochs) for point in points.values()]


def point_score(runs: list[dict], epochs: int) -> float:
    """The mean of the runs' final losses; inf if one diverged, failed or was stopped early (it has no final loss
    of `epochs` epochs to compare)."""
    complete = len(runs) == len(SEEDS) and all(run["status"] == "succeeded" and run["epochs_done"] == epochs
                                               for run in runs)
    return statistics.mean(run["final_loss"] for run in runs) if complete else math.inf


# ---- Optuna alone ----


def optuna_alone(n_trials: int, epochs: int, search_seed: int, pruner_settings: tuple[int, int] | None) -> Outcome:
    """`study.optimize` with TPE (and Optuna's Hyperband pruner at (min_resource, reduction_factor)), training
    each trial's seeds with our `train_batch`; its best is the best trial that trained every epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner_settings is None:
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()  # None would be Optuna's MedianPruner
    else:
        pruner = optuna.pruners.HyperbandPruner(min_resource=pruner_settings[0], reduction_factor=pruner_settings[1],
                                                max_resource=epochs)
    # Named: the Hyperband pruner puts a trial in a bracket by a hash of the study's name, which is random otherwise.
    study = optuna.create_study(study_name=f"search-bench-{search_seed}",
                                sampler=optuna.samplers.TPESampler(seed=search_seed), pruner=pruner)
    trained = 0

    def objective(trial: optuna.Trial) -> float:
        learning_rate = trial.suggest_float("learning_rate", LOW, HIGH, log=True)
        optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)

        def on_epoch(epoch: int, losses: np.ndarray) -> set[int]:
            nonlocal trained
            live = ~np.isnan(losses)  # NaN: a run that diverged, whose mean is then inf
            trained += int(live.sum())
            trial.report(float(np.where(live, losses, np.inf).mean()), step=epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
            return set()

        results = linear_regression.train_batch([learning_rate] * len(SEEDS), SEEDS, epochs, optimizer=optimizer,
                                                on_epoch=on_epoch)
        return math.inf if any(r.diverged for r in results) else statistics.mean(r.losses[-1] for r in results)

    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    wall = time.perf_counter() - start
    scores = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return Outcome(min(scores, default=math.inf), trained, wall, n_trials * len(SEEDS),
                   dict(Counter(t.state.name.lower() for t in study.trials)), sum(map(math.isfinite, scores)))


# ---- the report ----


def percent_over(value: float, reference: float) -> float:
    return (value - reference) / reference * 100


def summary(results: dict[str, list[Outcome]], optimum: float, args: argparse.Namespace) -> None:
    header(f"searches of {args.points} points x {len(SEEDS)} seeds, {args.epochs} epochs, search seeds "
           f"{args.search_seeds}: means over the search seeds, wall times their medians (lower is better)")
    grid = results["grid"]
    grid_best, grid_epochs = grid[0].best, grid[0].epochs
    grid_per_run = statistics.median(o.per_run for o in grid)
    print(f"least-squares optimum: {optimum:.8g}")
    print(f"{'method':<24} {'best mean final loss':>20} {'vs optimum':>11} {'vs grid best':>12} "
          f"{'epochs trained':>14} {'epochs vs grid':>14} {'wall s':>7} {'per-run ms':>10} {'per-run vs grid':>15}")
    for method, outcomes in results.items():
        best, epochs = statistics.mean(o.best for o in outcomes), statistics.mean(o.epochs for o in outcomes)
        wall, per_run = statistics.median(o.wall for o in outcomes), statistics.median(o.per_run for o in outcomes)
        per_run_columns = (f"{per_run * 1000:>10.2f} {per_run / grid_per_run:>14.2f}x" if method in SERVICE_METHODS
                           else f"{'-':>10} {'-':>15}")
        print(f"{LABELS[method]:<24} {best:>20.8g} {percent_over(best, optimum):>+9.4f} % "
              f"{percent_over(best, grid_best):>+10.4f} % {epochs:>14,.0f} {epochs / grid_epochs:>13.3f}x "
              f"{wall:>7.2f} {per_run_columns}")
    print("(Optuna trains in this process, one trial at a time, without the service: its time is not compared)")
    every_repetition(results)
    targets(results, grid_best, grid_epochs, grid_per_run)


def every_repetition(results: dict[str, list[Outcome]]) -> None:
    """Each search seed's figures, for the reader to see the spread, and why a best is inf."""
    grid = results["grid"]
    for method, outcomes in results.items():
        print(f"  every search seed, {LABELS[method]}: best {[float(f'{o.best:.8g}') for o in outcomes]}, "
              f"epochs {[o.epochs for o in outcomes]}, wall s {[round(o.wall, 2) for o in outcomes]}")
        if method in SERVICE_METHODS and method != "grid":
            ratios = [o.per_run / g.per_run for o, g in zip(outcomes, grid)]  # each against its repetition's grid
            print(f"      per-run vs that repetition's grid {[round(r, 2) for r in ratios]}")
        print(f"      points scored {[o.scored for o in outcomes]}, {'trials' if method in OPTUNA_METHODS else 'runs'} "
              f"{[', '.join(f'{n} {status}' for status, n in o.statuses.items()) for o in outcomes]}")
    if len({o.best for o in grid}) > 1:
        print(f"  NOTE: the grid's best differs between repetitions: {[o.best for o in grid]}")


def targets(results: dict[str, list[Outcome]], grid_best: float, grid_epochs: int, grid_per_run: float) -> None:
    header("targets")

    def mean(method: str, of: Callable[[Outcome], float]) -> float | None:
        return statistics.mean(of(o) for o in results[method]) if method in results else None

    hyperband_best, hyperband_epochs = mean("hyperband", lambda o: o.best), mean("hyperband", lambda o: o.epochs)
    if hyperband_best is None or hyperband_epochs is None:
        print("random + hyperband vs grid: not measured")
    else:
        print(f"random + hyperband vs grid: best {percent_over(hyperband_best, grid_best):+.4f} % "
              f"{against(percent_over(hyperband_best, grid_best), 1, unit=' %')}, epochs "
              f"{hyperband_epochs / grid_epochs:.3f}x {against(hyperband_epochs / grid_epochs, round(1 / 3, 3))}")
        if math.isinf(hyperband_best):
            print("  (best inf: in some search, no point kept all its seeds to the last epoch; see 'points scored')")
    bayes, tpe = mean("bayes", lambda o: o.best), mean("optuna-tpe", lambda o: o.best)
    if bayes is None or tpe is None:
        print("bayes vs Optuna TPE, same run_cap: not measured")
    else:
        print(f"bayes vs Optuna TPE, same run_cap: best {bayes:.8g} vs {tpe:.8g}, {percent_over(bayes, tpe):+.4f} % "
              f"{against(percent_over(bayes, tpe), 0, unit=' %')}")
    for method in ("random", "bayes", "hyperband", "waves"):
        per_run = statistics.median(o.per_run for o in results[method]) if method in results else None
        if per_run is None:
            print(f"{method} wall time per run vs grid: not measured")
        else:
            print(f"{method} wall time per run vs grid: {per_run * 1000:.2f} ms vs {grid_per_run * 1000:.2f} ms, "
                  f"{per_run / grid_per_run:.2f}x {against(per_run / grid_per_run, 1.10)}")


# ---- the command line ----


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000, help="per run")
    parser.add_argument("--points", type=int, default=30, help="per search, a multiple of 3 (the grid's optimizers)")
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2], help="one repetition each")
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    # 8 and 4: of (10, 3), (5, 3), (4, 4) and (8, 4), the first to meet both hyperband targets (docs/benchmarks.md).
    parser.add_argument("--min-epochs", type=int, default=8, help="hyperband's first rung (ours and Optuna's)")
    parser.add_argument("--eta", type=int, default=4, help="hyperband's reduction factor (ours and Optuna's)")
    parser.add_argument("--wave-size", type=int, default=None, help="bayes's points per wave (default: the API's)")
    parser.add_argument("--methods", nargs="+", choices=SERVICE_METHODS[1:] + OPTUNA_METHODS,
                        default=SERVICE_METHODS[1:] + OPTUNA_METHODS, help="besides the grid, always run")
    args = parser.parse_args()
    if args.points % len(OPTIMIZERS):
        raise SystemExit(f"--points must be a multiple of {len(OPTIMIZERS)} (the grid's optimizers), not {args.points}")
    rungs = [args.min_epochs * args.eta**k for k in range(20) if args.min_epochs * args.eta**k < args.epochs]
    print(f"random + hyperband: early_stopping hyperband, min_epochs {args.min_epochs}, eta {args.eta} (rungs at "
          f"{args.min_epochs} x {args.eta}^k epochs: {rungs}); Optuna: HyperbandPruner(min_resource="
          f"{args.min_epochs}, reduction_factor={args.eta}, max_resource={args.epochs})", flush=True)
    results = run_all(args)
    summary(results, linear_regression.least_squares_loss(), args)


def run_all(args: argparse.Namespace) -> dict[str, list[Outcome]]:
    """Every method once per search seed, the grid first; a method the API refuses is left out."""
    methods = ["grid", *(m for m in SERVICE_METHODS[1:] + OPTUNA_METHODS if m in args.methods)]
    results: dict[str, list[Outcome]] = {}
    refused: set[str] = set()
    with database(args.backend) as url, processes(service_env(url)) as started:
        empty_broker()
        client = Client(base_url=started.api(), timeout=120)
        started.worker(concurrency=2)
        warm_up(client)
        for search_seed in args.search_seeds:
            for method in (m for m in methods if m not in refused):
                try:
                    outcome = measure(client, method, args, search_seed)
                except Refused as error:
                    print(f"  {LABELS[method]}: the API refuses this search, left out: {error}", flush=True)
                    refused.add(method)
                    continue
                results.setdefault(method, []).append(outcome)
                print(f"  search seed {search_seed}, {LABELS[method]}: best {outcome.best:.8g}, {outcome.epochs:,} "
                      f"epochs, {outcome.wall:.2f} s, {outcome.scored} points scored, {outcome.statuses}", flush=True)
        client.http.close()
    empty_broker()
    return results


def measure(client: Client, method: str, args: argparse.Namespace, search_seed: int) -> Outcome:
    if method == "optuna-tpe":
        return optuna_alone(args.points, args.epochs, search_seed, None)
    if method == "optuna-hyperband":
        return optuna_alone(args.points, args.epochs, search_seed, (args.min_epochs, args.eta))
    if method == "waves":
        return in_waves(client, args, search_seed)
    return through_the_service(client, method, args, search_seed)


def warm_up(client: Client) -> None:
    """A small sweep of two jobs, so that both of the worker's processes have connected and imported the engine."""
    space = {"learning_rate": {"value": 0.01}, "optimizer": {"values": ["sgd", "adam"]},
             "seed": {"values": SEEDS, "repeat": True}, "epochs": {"value": 10}}
    sweep = client.search(space, method="grid", name="search-bench warm-up")
    finished_runs(client, sweep["id"], 2 * len(SEEDS))


if __name__ == "__main__":
    main()
