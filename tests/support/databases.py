"""Databases of a test session's (or a benchmark's) own: a PostgreSQL database or schema, a Redis database emptied."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import URL, create_engine, text
from sqlalchemy.pool import NullPool


@contextmanager
def new_database(server: URL, prefix: str) -> Iterator[URL]:
    """A new, empty database `<prefix>_<random>` on the PostgreSQL `server`, dropped on the way out
    (connections left to it or not). Entering raises SQLAlchemy's OperationalError if the server
    does not answer within 5 seconds."""
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 5})
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except BaseException:
        admin.dispose()
        raise
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def new_schema(database: URL) -> URL:
    """A URL whose connections see only a new, empty schema: a fresh database, cheaply."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return database.update_query_dict({"options": f"-csearch_path={schema}"})


def empty_redis(url: str, connect_timeout: float | None = None) -> None:
    """Empties the Redis database of `url`, and only it: no message of an earlier test or repetition is left.
    Raises redis.RedisError if the server does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout)
    try:
        client.flushdb()
    finally:
        client.close()
