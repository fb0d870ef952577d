"""Migrations on populated databases, on SQLite and on PostgreSQL (see conftest.py)."""

import numpy as np
import pytest
from alembic import command
from sqlalchemy import URL, text

from gradsweep.service.storage import RunStatus, Storage, alembic_config
from gradsweep.service.storage.engine import make_engine

# Two runs' losses as revision 0003 stored them, a row per epoch; run 2 has a gap (epochs 3-4 missing).
CURVES = {1: np.random.default_rng(0).random(2_500), 2: np.array([0.1 + 0.2, 5e-324, 1e300, 0.5, 0.25])}
EPOCHS = {1: list(range(2_500)), 2: [0, 1, 2, 5, 6]}


def populate_at_0003(database: URL) -> None:
    Storage(database).upgrade("0003")
    engine = make_engine(database)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO sweeps (id, name, created_at) VALUES (1, 'old', CURRENT_TIMESTAMP)"))
        for run_id in CURVES:
            connection.execute(text(
                "INSERT INTO runs (id, sweep_id, learning_rate, seed, optimizer, epochs, n_samples, n_features, "
                "data_seed, mode, status, attempts, created_at, epochs_done) VALUES (:id, 1, 0.01, :id, 'sgd', 9, "
                "100, 50, 0, 'tensor', 'succeeded', 1, CURRENT_TIMESTAMP, :done)"),
                {"id": run_id, "done": len(EPOCHS[run_id])})
            connection.execute(text("INSERT INTO losses (run_id, epoch, value) VALUES (:run_id, :epoch, :value)"), [
                {"run_id": run_id, "epoch": epoch, "value": value}
                for epoch, value in zip(EPOCHS[run_id], CURVES[run_id].tolist(), strict=True)])
    engine.dispose()


def test_0004_moves_every_loss_into_chunks_and_back(database: URL) -> None:
    populate_at_0003(database)
    storage = Storage(database)
    storage.upgrade()

    storage.check_schema()
    for run_id, values in CURVES.items():
        assert storage.run_losses(run_id).view(np.uint64).tolist() == values.view(np.uint64).tolist()
        run = storage.get_run(run_id)
        assert (run.status, run.batch_size, run.batch_slot) == (RunStatus.SUCCEEDED, 1, 0)
    engine = make_engine(database)
    with engine.connect() as connection:
        chunks = connection.execute(text("SELECT run_id, first_epoch FROM loss_chunks ORDER BY 1, 2")).all()
        assert chunks == [(1, 0), (2, 0), (2, 5)]  # each stretch of consecutive epochs one chunk
        if engine.dialect.name == "postgresql":  # the old rows, through the view
            rows = connection.execute(text("SELECT run_id, epoch, value FROM losses ORDER BY 1, 2")).all()
            assert rows == [(run_id, epoch, value) for run_id in CURVES
                            for epoch, value in zip(EPOCHS[run_id], CURVES[run_id].tolist(), strict=True)]

    command.downgrade(alembic_config(database), "0003")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT run_id, epoch, value FROM losses ORDER BY 1, 2")).all()
    engine.dispose()
    storage.close()
    assert rows == [(run_id, epoch, value) for run_id in CURVES
                    for epoch, value in zip(EPOCHS[run_id], CURVES[run_id].tolist(), strict=True)]


def test_0007_allows_stopped_early_and_its_downgrade_makes_such_runs_cancelled(database: URL) -> None:
    populate_at_0003(database)
    storage = Storage(database)
    storage.upgrade()
    storage.check_schema()
    assert storage.get_run(1).point is None and not storage.get_sweep(1).searching
    engine = make_engine(database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE runs SET status = 'stopped_early' WHERE id = 1"))
        connection.execute(text("INSERT INTO rungs (sweep_id, point, rung, bracket, loss, kept) "
                                "VALUES (1, 0, 10, 0, 0.5, false)"))
    assert storage.get_run(1).status == RunStatus.STOPPED_EARLY

    command.downgrade(alembic_config(database), "0006")
    with engine.begin() as connection:
        assert connection.execute(text("SELECT status FROM runs ORDER BY id")).scalars().all() == [
            "cancelled", "succeeded"]
        with pytest.raises(Exception, match="(?i)check"):  # the CHECK is back as it was
            connection.execute(text("UPDATE runs SET status = 'stopped_early' WHERE id = 2"))
    engine.dispose()
    storage.close()
