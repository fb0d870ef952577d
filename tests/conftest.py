"""Fixtures for every test: a PostgreSQL database of the session's own (`postgres_database`), a fresh schema in
it (`postgres_schema`), an empty database on each backend (`database`, SQLite then PostgreSQL), a Storage on it
with no tables (`empty_storage`) or migrated (`storage`). Hooks: the deployment suite beside the rest under
`pytest -n 2`; the reliability figures the fault and deployment tests measured, printed at the end."""

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import URL, make_url
from sqlalchemy.exc import OperationalError

from gradsweep.service.storage import Storage
from gradsweep.service.storage.engine import database_url
from tests.support.databases import new_database, new_schema
from tests.support.services import unavailable

DEPLOY_TESTS = "tests/deploy/"  # node ids start so
POSTGRES_URL = os.environ.get("GRADSWEEP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A database of this session's own on the test server, dropped at the end.

    If the server cannot be reached the PostgreSQL tests are skipped, except in CI,
    where they fail: there a skip would hide a broken setup.
    """
    server = database_url(POSTGRES_URL)
    with ExitStack() as cleanup:
        try:
            database = cleanup.enter_context(new_database(server, "gradsweep_test"))
        except OperationalError as exc:
            unavailable(f"PostgreSQL is unreachable at {server.render_as_string()}: {exc.orig}")
        yield database


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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`pytest -n 2` (the README's command): the deployment suite, which mostly waits for Docker, in one
    process, everything else in the other, each in its own order. (xdist's own `--dist loadgroup`
    spreads a group over both processes with pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class DeployBesideTheRest(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "deploy" if nodeid.startswith(DEPLOY_TESTS) else "local"

    return DeployBesideTheRest(config, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a worker process of pytest-xdist: hand its figures to the controller, which prints them."""
    from tests.integration.faults import FIGURES

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["figures"] = dict(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    from tests.integration.faults import count

    for figure, value in getattr(node, "workeroutput", {}).get("figures", {}).items():
        count(figure, value)


def pytest_terminal_summary(terminalreporter) -> None:
    """The reliability figures the fault and deployment tests measured, for the README's table."""
    from tests.integration.faults import FIGURES

    if FIGURES and not hasattr(terminalreporter.config, "workeroutput"):
        terminalreporter.section("reliability figures")
        for figure, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{figure}: {value}")
