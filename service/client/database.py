"""Migrating the results database and saying what that did, for `gradsweep db upgrade` and the demo alike."""

from __future__ import annotations

from sqlalchemy import URL

from gradsweep.service.storage import Storage

__all__ = ["upgrade_database"]


def upgrade_database(url: str | URL) -> str:
    """Migrates the database at `url` to this version's schema; returns what was done, in a sentence: created the
    schema, upgraded it from one revision to another, or found it at the newest already.

    Raises StorageError if the database cannot be reached or refuses.
    """
    storage = Storage(url)
    try:
        before = ", ".join(sorted(storage.schema_revision())) or None
        storage.upgrade()
        after = ", ".join(sorted(storage.schema_revision()))
    finally:
        storage.close()
    where = f"the database at {storage.url.render_as_string(hide_password=True)}"
    if before is None:
        return f"created the schema at revision {after} in {where}"
    if before != after:
        return f"upgraded {where} from revision {before} to {after}"
    return f"{where} is already at revision {after}, the newest"
