"""Integration fixtures: a real Redis, a real PostgreSQL, and the service's real processes.

    redis_broker    a Redis database of this session's own, emptied before and after
    stack           the API and a 2-process worker (tests.support.processes.Stack), once on
                    Redis + PostgreSQL and once on the embedded defaults, per module
    settings_for    (a function) the settings of either backend, for tests that start their own Stack

A test whose service is missing fails under CI (CI set, e.g. CI=true) and is skipped elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import URL

from tests.support.databases import empty_redis, new_schema
from tests.support.processes import Stack, embedded_settings, running_stack
from tests.support.services import unavailable

REDIS_URL = os.environ.get("GRADSWEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379")
BACKENDS = ["redis+postgresql", "embedded"]



@pytest.fixture(scope="session")
def redis_broker() -> Iterator[str]:
    """A Redis database number of this session's own, emptied before and after.

    GRADSWEEP_TEST_REDIS_DB picks another, so that two test sessions can share one server.
    """
    database = int(os.environ.get("GRADSWEEP_TEST_REDIS_DB", "9"))
    url = f"{REDIS_URL}/{database}"
    try:
        empty_redis(url, connect_timeout=3)
    except redis.RedisError as error:
        unavailable(f"Redis is unreachable at {REDIS_URL}: {error}")
    yield url
    empty_redis(url, connect_timeout=3)


def settings_for(backend: str, request: pytest.FixtureRequest, workdir: Path) -> dict[str, str]:
    if backend == "embedded":
        return embedded_settings(workdir)
    postgres: URL = request.getfixturevalue("postgres_database")
    broker = request.getfixturevalue("redis_broker")
    empty_redis(broker)  # no message left by another module's stack
    database = new_schema(postgres).render_as_string(hide_password=False)
    return {"GRADSWEEP_DATABASE_URL": database, "GRADSWEEP_BROKER_URL": broker}


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API and a 2-process worker, on Redis + PostgreSQL or on the embedded defaults."""
    workdir = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    with running_stack(settings_for(request.param, request, workdir), workdir) as running:
        running.backend = request.param
        yield running
