"""Migration 0002 on a database that already has 0001's tables and rows (SQLite and PostgreSQL)."""
from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from intake.db import MIGRATIONS, Database
from intake.security import user_for_token


def upgrade_to(db: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def test_0002_keeps_existing_users_tokens_and_submissions(database_url):
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:   # the postgres fixture migrated to head: start again from 0001
            for table in ("upload_attempts", "web_sessions", "identities", "submissions", "api_tokens", "users",
                          "alembic_version"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        upgrade_to(db, "0001")
        assert "identities" not in inspect(db.engine).get_table_names()
        from intake.security import hash_token
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO users (id, name, email, is_admin, created_at) "
                              "VALUES (1, 'old', 'old@example.org', false, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at) "
                              "VALUES (1, 't', :h, 'arena_old', CURRENT_TIMESTAMP)"), {"h": hash_token("arena_old-token")})
            conn.execute(text("INSERT INTO submissions (id, user_id, challenge, sha256, size_bytes, created_at) "
                              "VALUES ('01JZ8K3M01QRSTVWXYZ0ABCDEF', 1, 'efficient-decode', :s, 10, CURRENT_TIMESTAMP)"),
                         {"s": "0" * 64})
        db.migrate()
        tables = set(inspect(db.engine).get_table_names())
        assert {"identities", "web_sessions", "upload_attempts", "users", "api_tokens", "submissions"} <= tables
        with db.session() as session:
            user = user_for_token(session, "arena_old-token")
            assert user is not None and user.name == "old" and user.email == "old@example.org"
            assert session.execute(text("SELECT count(*) FROM submissions")).scalar() == 1
            assert session.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
        db.migrate()   # idempotent
    finally:
        db.dispose()
