"""Storage fixtures: each storage test runs once on SQLite and once on PostgreSQL; the reliability figures."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from service.storage import Storage
from service.storage.engine import database_url
from tests.services import new_schema, unavailable

POSTGRES_URL = os.environ.get("GRADSWEEP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A database of this session's own on the test server, dropped at the end.

    If the server cannot be reached the PostgreSQL tests are skipped, except in CI,
    where they fail: there a skip would hide a broken setup.
    """
    server = database_url(POSTGRES_URL)
    admin = create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"gradsweep_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        message = f"PostgreSQL is unreachable at {server.render_as_string()}: {exc.orig}"
        unavailable(message)
    yield server.set(database=name)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def postgres_schema(postgres_database: URL) -> URL:
    return new_schema(postgres_database)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        return make_url(f"sqlite:///{tmp_path}/gradsweep.sqlite")
    return request.getfixturevalue("postgres_schema")


@pytest.fixture
def empty_storage(database: URL) -> Iterator[Storage]:
    """A Storage on a database that has no tables yet."""
    storage = Storage(database)
    yield storage
    storage.close()


@pytest.fixture
def storage(empty_storage: Storage) -> Storage:
    empty_storage.upgrade()
    return empty_storage


def pytest_terminal_summary(terminalreporter) -> None:
    """The reliability figures the fault and deployment tests measured, for the README's table."""
    from tests.integration.faults import FIGURES

    if FIGURES:
        terminalreporter.section("reliability figures")
        for figure, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{figure}: {value}")
