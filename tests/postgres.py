"""A fresh PostgreSQL database for a test, cheaply: a new schema in the session's database."""

import uuid

from sqlalchemy import URL, create_engine, text
from sqlalchemy.pool import NullPool


def new_schema(database: URL) -> URL:
    """A URL whose connections see only a new, empty schema: a fresh database, cheaply."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return database.update_query_dict({"options": f"-csearch_path={schema}"})
