"""Intake under test: the real app served by uvicorn on a loopback port, against SQLite and PostgreSQL."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import text

from intake.app import create_app
from intake_servers import free_socket, serve  # noqa: F401 (used here and by the tests)
from intake.config import Settings
from intake.db import Database
from intake.packaging import zip_directory
from intake.security import create_user
from lake.bucket import Bucket

PG_ADMIN = os.environ.get("ARENA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"arena_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'arena.db'}"
    url = request.getfixturevalue("postgres_url")
    db = Database(url)
    db.migrate()
    with db.engine.begin() as conn:  # one database per session: empty it for each test
        conn.execute(text("TRUNCATE upload_attempts, web_sessions, identities, submissions, api_tokens, users "
                          "RESTART IDENTITY CASCADE"))
    db.dispose()
    return url


@dataclass
class Arena:
    """A running intake server and handles on what it writes."""
    url: str
    settings: Settings
    app: object

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.settings.bucket)

    def user(self, name: str, admin: bool = False, email: str | None = None) -> str:
        with self.app.state.db.session() as session, session.begin():
            _, token = create_user(session, name, admin=admin, email=email)
        return token

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def bucket_files(self) -> list[str]:
        root = self.settings.bucket
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def make_settings(tmp_path: Path, database_url: str, port: int, **overrides) -> Settings:
    home = tmp_path / "home"
    return Settings(home=home, bucket=home / "bucket", lake=home / "lake", database_url=database_url,
                    secret_key="test-secret-key-" + "x" * 32, port=port, public_url=f"http://127.0.0.1:{port}",
                    **overrides)


@pytest.fixture
def start_arena(tmp_path, database_url):
    """start_arena(**settings overrides) -> Arena, served until the test ends."""
    stack = []

    def start(**overrides) -> Arena:
        sock = free_socket()
        port = sock.getsockname()[1]
        settings = make_settings(tmp_path, database_url, port, **overrides)
        app = create_app(settings)
        ctx = serve(app, sock)
        ctx.__enter__()
        stack.append(ctx)
        return Arena(f"http://127.0.0.1:{port}", settings, app)

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def arena(start_arena) -> Arena:
    return start_arena()


def write_submission(root: Path, marker: str = "1", dockerfile_from: str = "arena/python-cpu:1",
                     arena_toml: str | None = None) -> Path:
    """A minimal valid submission directory; ``marker`` makes its zip unique."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(f'FROM {dockerfile_from}\nCOPY . /app\nCMD ["python3", "decoder.py"]\n')
    (root / "requirements.txt").write_text("")
    (root / "decoder.py").write_text(f"# submission {marker}\nprint('{{\"ready\": true}}')\n")
    if arena_toml is not None:
        (root / "arena.toml").write_text(arena_toml)
    return root


@pytest.fixture
def make_source():
    """make_source(root, marker, ...) -> a valid submission directory."""
    return write_submission


@pytest.fixture
def make_zip(tmp_path):
    """make_zip(marker, **kw) -> a deterministic, valid submission zip (different marker: different sha256)."""
    def make(marker: str = "1", **kwargs) -> Path:
        src = write_submission(tmp_path / f"src-{marker}", marker, **kwargs)
        return zip_directory(src, tmp_path / f"submission-{marker}.zip")
    return make


@pytest.fixture
def oidc_provider():
    """A running OpenID Connect provider (tests/intake/oidc_provider.py) on a loopback port."""
    from oidc_provider import Provider

    sock = free_socket()
    provider = Provider(f"http://127.0.0.1:{sock.getsockname()[1]}")
    with serve(provider.app(), sock):
        yield provider


@pytest.fixture
def oidc_arena(start_arena, oidc_provider):
    """An arena whose only login provider is the test OIDC provider."""
    from intake.config import OAuthProvider

    config = OAuthProvider("oidc", "Test ID", "arena-client", "arena-secret",
                           f"{oidc_provider.issuer}/.well-known/openid-configuration")
    arena = start_arena(oauth_providers=(config,))
    oidc_provider.add_client("arena-client", "arena-secret", f"{arena.url}/auth/oidc/callback")
    return arena


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()
