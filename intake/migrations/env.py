"""Alembic environment: run on the connection ``intake.db.migrate`` hands over, or on ARENA_DATABASE_URL."""
from alembic import context
from sqlalchemy import create_engine

from intake.models import Base

target_metadata = Base.metadata


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from intake.config import Settings

    with create_engine(Settings.from_env().database_url).begin() as conn:
        run(conn)
