"""The API layer's fixtures: the app in process on a SQLite file, its queue a list.

Hundreds of requests run in a second this way; tests/integration repeats the key
cases against the real processes, Redis and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gradsweep.service.api.deps import get_enqueue, get_storage
from gradsweep.service.api.main import create_app
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import Storage


@pytest.fixture
def queued() -> list:
    """The jobs the API enqueued, in order."""
    return []


@pytest.fixture
def api_storage(tmp_path: Path) -> Iterator[Storage]:
    """The storage the in-process API writes to (SQLite, upgraded)."""
    storage = Storage(f"sqlite:///{tmp_path}/api.sqlite")
    storage.upgrade()
    yield storage
    storage.close()


@pytest.fixture
def api(api_storage: Storage, queued: list) -> Iterator[TestClient]:
    """The app as `gradsweep api` serves it, on `api_storage`, enqueueing into `queued`."""
    app = create_app()
    app.dependency_overrides[get_storage] = lambda: api_storage
    app.dependency_overrides[get_enqueue] = lambda: queued.extend
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """GRADSWEEP_API_TOKEN set to the returned token for this test."""
    monkeypatch.setenv("GRADSWEEP_API_TOKEN", "s3cret")
    get_settings.cache_clear()
    yield "s3cret"
    monkeypatch.undo()
    get_settings.cache_clear()
