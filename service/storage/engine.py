"""One way to build an engine, shared by `Storage` and the migrations."""

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL

# An execution option: SQLite write transactions start with BEGIN IMMEDIATE.
BEGIN_IMMEDIATE = "gradsweep_begin_immediate"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(url: str | URL) -> URL:
    """Pins PostgreSQL to psycopg 3: a bare "postgresql://" would make SQLAlchemy look for psycopg2."""
    url = make_url(url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def make_engine(url: str | URL, *, pre_ping: bool = True, synchronous_commit: bool = True) -> Engine:
    """`pre_ping` tests each pooled connection before use, so that a restarted database costs no failed call.

    `synchronous_commit=False` sets PostgreSQL's setting of that name to off for
    every connection (see `Storage`); SQLite ignores it.
    """
    url = database_url(url)
    connect_args = {}
    if url.get_backend_name() == "postgresql" and not synchronous_commit:
        connect_args["options"] = " ".join(filter(None, [url.query.get("options"), "-c synchronous_commit=off"]))
    engine = create_engine(url, pool_pre_ping=pre_ping, connect_args=connect_args)
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """WAL lets readers run beside the one writer; workers wait for the write lock instead of failing.

    sqlite3 would otherwise issue BEGIN itself, lazily, at the first write: a
    transaction that read first could then fail to take the write lock at once
    (SQLITE_BUSY, whatever the busy timeout). So we issue BEGIN ourselves, and
    write transactions take the write lock up front with BEGIN IMMEDIATE. See
    "Serializable isolation" in SQLAlchemy's pysqlite documentation.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(BEGIN_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
