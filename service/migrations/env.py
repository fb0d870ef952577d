"""Alembic's entry point. Our code names the database in "sqlalchemy.url"; otherwise the settings do."""

from alembic import context

from gradsweep.service.settings import get_settings
from gradsweep.service.storage.engine import make_engine
from gradsweep.service.storage.models import Base

url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things; batch mode copies the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
