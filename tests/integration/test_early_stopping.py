"""Early stopping driven end to end: searches submitted over HTTP, judged at their rungs by real workers.

On Redis + PostgreSQL and on the embedded defaults, as test_end_to_end.py. A sweep's
batches reach a rung in whatever order the workers get to it, so which runs stop
depends on that order (as in ASHA); what must hold whatever it is, is checked here:
every curve the start of its uninterrupted one, each stop at a rung and recorded
there, the best run trained to the end. The exact decisions of a sweep whose runs
are judged together are checked by the kill test in test_faults.py.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text

from tests.support.curves import assert_each_epoch_stored_once, assert_early_stopping_kept_the_curves

HYPERBAND = {"type": "hyperband", "min_epochs": 10, "eta": 3}
SEARCH = {"name": "hyperband", "method": "random", "run_cap": 24, "search_seed": 5, "early_stopping": HYPERBAND,
          "parameters": {
              "learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1.0},
              "optimizer": {"values": ["sgd", "momentum", "adam"]},
              "epochs": {"value": 300},
              "seed": {"values": [0, 1], "repeat": True},
          }}


def rungs_of(database_url: str, sweep_id: int) -> dict[int, list[tuple[int, bool]]]:
    """Each point's (rung, kept) decisions, in rung order."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT point, rung, kept FROM rungs WHERE sweep_id = :sweep ORDER BY 1, 2"),
                                  {"sweep": sweep_id}).all()
    engine.dispose()
    decisions: dict[int, list[tuple[int, bool]]] = {}
    for point, rung, kept in rows:
        decisions.setdefault(point, []).append((rung, bool(kept)))
    return decisions


def test_a_random_search_with_hyperband_stops_losers_at_their_rungs_and_keeps_every_curve(stack):
    created = stack.http.post("/sweeps", json=SEARCH)
    assert created.status_code == 201, created.text
    sweep = stack.wait_for_sweep(created.json()["id"])

    runs, database = sweep["runs"], stack.env["GRADSWEEP_DATABASE_URL"]
    assert sweep["search"]["early_stopping"] == HYPERBAND
    assert sweep["counts"]["stopped_early"] > 0 and sweep["counts"]["running"] == sweep["counts"]["queued"] == 0
    assert_each_epoch_stored_once(database, sweep["id"], runs)
    stored = {run["id"]: stack.http.get(f"/runs/{run['id']}").json()["losses"] for run in runs}
    assert_early_stopping_kept_the_curves(runs, stored, HYPERBAND)

    decisions = rungs_of(database, sweep["id"])
    for run in runs:  # a point's runs (its two seeds) are judged as one, by their mean loss
        judged = decisions.get(run["point"], [])
        assert all(kept for _, kept in judged[:-1]), "a point judged again after it was stopped"
        if run["status"] == "stopped_early":
            assert judged[-1] == (run["epochs_done"], False)
        elif run["status"] == "succeeded":
            assert all(kept and rung < run["epochs_done"] for rung, kept in judged)
    for point, judged in decisions.items():
        statuses = {run["status"] for run in runs if run["point"] == point}
        assert statuses <= ({"stopped_early", "diverged"} if not judged[-1][1] else {"succeeded", "diverged"})
    # Hyperband's last bracket judges only at its last rung (270 epochs), so some runs of it trained all 300.
    assert sweep["best_run"]["status"] == "succeeded" and sweep["best_run"]["epochs_done"] == 300
    trained = sum(run["epochs_done"] for run in runs)
    assert trained < 0.6 * 300 * len(runs), f"{trained} epochs: early stopping saved little"
