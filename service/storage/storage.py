"""`Storage`: every read and write of sweeps, runs and losses, each in one transaction.

One public class over its aggregates, as Optuna's storage is: sweeps and their runs
(`_sweeps.py`), jobs and leases (`_jobs.py`), losses (`_losses.py`), early stopping's
rungs (`_rungs.py`) and tokens and the audit log (`access.py`), over the tables
(`models.py`) and the migrations. This module keeps the schema and the transactions.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gradsweep.service.storage._jobs import Jobs
from gradsweep.service.storage._losses import Losses
from gradsweep.service.storage._rows import _RUNS, _SWEEP_CREATION_LOCK, Enqueue
from gradsweep.service.storage._rungs import Rungs
from gradsweep.service.storage._sweeps import Sweeps
from gradsweep.service.storage.access import Access
from gradsweep.service.storage.engine import BEGIN_IMMEDIATE, database_url, make_engine
from gradsweep.service.storage.errors import DatabaseUnavailable, SchemaOutOfDate, StorageError

__all__ = ["Enqueue", "MIGRATIONS_DIR", "Storage", "alembic_config"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | URL) -> Config:
    """Alembic's configuration, built in code so that no alembic.ini has to be found at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config is a ConfigParser, which would read the "%" of URL escapes as interpolation.
    rendered = database_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


class Storage(Sweeps, Jobs, Losses, Rungs, Access):
    """Sweeps, runs and loss curves in SQLite or PostgreSQL.

    Each public method is one transaction and returns frozen records, never rows.
    Methods that take `enqueue` call it inside their transaction, so that runs are
    stored and queued together or not at all; `enqueue` gets the runs as jobs, one
    per batch (see `Job`), and is never called with none.
    """
    def __init__(self, url: str | URL, *, pre_ping: bool = True, synchronous_commit: bool = True) -> None:
        """`pre_ping=False` saves a round trip per transaction, for callers that retry on DatabaseUnavailable.

        `synchronous_commit=False` (PostgreSQL) lets a commit return before it is on
        disk. A database crash may then forget the last commits, up to about 0.6 s
        of them; nothing else is at risk. It is for the workers, whose every write
        can be lost that way without losing a run: a forgotten start or finish
        leaves the run queued or running, which the reaper takes back; a forgotten
        batch of losses stops the attempt at its next write (see `_may_write`); and
        the redone run is bit-identical.
        """
        self.url = database_url(url)
        self._engine = make_engine(self.url, pre_ping=pre_ping, synchronous_commit=synchronous_commit)
        backend = self._engine.dialect.name
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"gradsweep stores results in SQLite or PostgreSQL, not {backend}")
        self._is_postgresql = backend == "postgresql"

    def close(self) -> None:
        """Closes the pooled connections."""
        self._engine.dispose()

    def schema_revision(self) -> set[str]:
        """The database's schema revision: its migrations' heads (empty: no schema yet)."""
        with self._transaction() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())

    def check_schema(self) -> None:
        """Raises SchemaOutOfDate unless the database is at the newest revision: better than a missing column later."""
        heads = set(ScriptDirectory.from_config(alembic_config(self.url)).get_heads())
        current = self.schema_revision()
        if current != heads:
            raise SchemaOutOfDate(
                f"the database is at revision {sorted(current) or 'none'}, gradsweep needs {sorted(heads)}: "
                "run `gradsweep db upgrade`"
            )

    def upgrade(self, revision: str = "head") -> None:
        """Migrates the database to the newest schema (what `gradsweep db upgrade` runs), or to `revision`."""
        with _translated_errors():
            command.upgrade(alembic_config(self.url), revision)

    def ping(self) -> None:
        """Raises DatabaseUnavailable if the database cannot be reached; for health checks."""
        with self._transaction() as connection:
            connection.execute(select(1))

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One transaction: committed if the block returns, rolled back if it raises.

        `write` makes SQLite take its write lock at BEGIN, so the transaction cannot
        fail half-way for want of it; PostgreSQL locks rows instead.
        """
        with _translated_errors(), self._engine.connect() as connection:
            connection.execution_options(**{BEGIN_IMMEDIATE: write})
            with connection.begin():
                yield connection

    def _wait_for_runs(self, connection: Connection, run_ids: Sequence[int]) -> bool:
        """Whether any of the runs exists, waiting on PostgreSQL for sweeps still being created.

        `create_sweep` enqueues before it commits, so a worker can be handed runs
        that PostgreSQL does not show it yet. Taking the lock that every
        `create_sweep` holds shared waits for those to end. (SQLite needs no such
        step: its writers take turns, so the worker's BEGIN IMMEDIATE already waited.)
        """
        exists = select(_RUNS.c.id).where(_RUNS.c.id.in_(run_ids)).limit(1)
        if connection.execute(exists).first() is not None:
            return True
        if self._is_postgresql:
            connection.execute(select(func.pg_advisory_xact_lock(_SWEEP_CREATION_LOCK)))
            return connection.execute(exists).first() is not None
        return False


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turns SQLAlchemy's exceptions into ours, so callers depend on the storage layer only."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc.orig)) from exc
    except DBAPIError as exc:
        raise StorageError(str(exc.orig)) from exc
