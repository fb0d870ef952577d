"""Migrating the results database and saying what that did, for `gradsweep db upgrade` and the demo alike."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gradsweep.service.storage import DatabaseUnavailable, Storage, StorageError
from gradsweep.service.storage.engine import make_engine

__all__ = ["upgrade_database"]


def upgrade_database(url: str | URL) -> str:
    """Migrates the database at `url` to this version's schema; returns what was done, in a sentence: created the
    schema, upgraded it from one revision to another, or found it at the newest already.

    Raises StorageError if the database cannot be reached or refuses.
    """
    storage = Storage(url)
    try:
        before = _revision(storage.url)
        storage.upgrade()
        after = _revision(storage.url)
    finally:
        storage.close()
    where = f"the database at {storage.url.render_as_string(hide_password=True)}"
    if before is None:
        return f"created the schema at revision {after} in {where}"
    if before != after:
        return f"upgraded {where} from revision {before} to {after}"
    return f"{where} is already at revision {after}, the newest"


def _revision(url: URL) -> str | None:
    """The database's schema revision (its migrations' heads, joined by commas), or None if it has no schema."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
    except (OperationalError, InterfaceError) as error:
        raise DatabaseUnavailable(str(error.orig)) from error
    except DBAPIError as error:
        raise StorageError(str(error.orig)) from error
    finally:
        engine.dispose()
    return ", ".join(sorted(heads)) or None
