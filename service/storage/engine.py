"""One way to build an engine, shared by `Storage` and the migrations."""

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL

# An execution option: SQLite write transactions start with BEGIN IMMEDIATE.
BEGIN_IMMEDIATE = "gradsweep_begin_immediate"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL ends the session of a client the network lost within about 10 s, instead of the kernel's
# two hours: keepalive probes from 5 s of silence, and at most 10 s for sent data to be acknowledged.
# A worker cut off inside a write transaction would otherwise keep its runs' rows locked, and the
# reaper, which skips locked rows, could not take them back (tests/deploy: a worker cut off the network).
DEAD_CLIENT_SETTINGS = ("tcp_keepalives_idle=5", "tcp_keepalives_interval=1", "tcp_keepalives_count=5",
                        "tcp_user_timeout=10000")


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
    if url.get_backend_name() == "postgresql":
        settings = [*DEAD_CLIENT_SETTINGS, *([] if synchronous_commit else ["synchronous_commit=off"])]
        connect_args["options"] = " ".join(filter(None, [url.query.get("options"), *(f"-c {s}" for s in settings)]))
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
