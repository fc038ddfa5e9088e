"""Intake settings: one object, read once from the environment (DESIGN.md, "Configuration").

| variable | default | meaning |
|---|---|---|
| `ARENA_HOME` | `./.arena` | where the embedded platform keeps its files (bucket, lake, SQLite, secret key) |
| `ARENA_BUCKET_URL` | `file://$ARENA_HOME/bucket` | the intake bucket shared with orchestration (`lake.config`) |
| `ARENA_LAKE_URL` | `file://$ARENA_HOME/lake` | the Parquet lake (`lake.config`) |
| `ARENA_DATABASE_URL` | `sqlite:///$ARENA_HOME/arena.db` | users, API tokens, submissions; production: `postgresql+psycopg://user:pw@host/db` |
| `ARENA_SECRET_KEY` | generated once into `$ARENA_HOME/secret_key` (mode 0600) | signs session cookies and CSRF tokens; set it when several replicas serve one site |
| `ARENA_HOST` | `127.0.0.1` | address the intake server binds (`python -m intake`) |
| `ARENA_PORT` | `8000` | port of the intake API and web form |
| `ARENA_PUBLIC_URL` | `http://$ARENA_HOST:$ARENA_PORT` | base URL users reach (links in answers, OAuth redirect URIs) |
| `ARENA_MAX_UPLOAD_BYTES` | `52428800` (50 MiB) | largest accepted zip; larger uploads are cut off while streaming (413) |
| `ARENA_DAILY_QUOTA` | `20` | submissions per user in any 24 hours (429 beyond) |
| `ARENA_MAX_CONCURRENT` | `3` | submissions per user not yet finished (queued…scoring) (429 beyond) |
| `ARENA_DEFAULT_CHALLENGE` | `efficient-decode` | challenge of an upload that names none |
| `ARENA_ADMIN_EMAILS` | empty | comma-separated e-mails that become admins when they log in through OAuth |
| `ARENA_GITHUB_CLIENT_ID` / `ARENA_GITHUB_CLIENT_SECRET` | unset | enable "Log in with GitHub" |
| `ARENA_GOOGLE_CLIENT_ID` / `ARENA_GOOGLE_CLIENT_SECRET` | unset | enable "Log in with Google" |
| `ARENA_OIDC_ISSUER` / `ARENA_OIDC_CLIENT_ID` / `ARENA_OIDC_CLIENT_SECRET` | unset | enable any OpenID Connect issuer (discovery at `<issuer>/.well-known/openid-configuration`) |
| `ARENA_OIDC_NAME` | `OIDC` | label of that issuer's login button |

With no OAuth provider configured, the only way in is an API token made by `arena admin create-user`.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from lake.config import StorageSettings

DEFAULT_CHALLENGE = "efficient-decode"
MiB = 1024 * 1024


@dataclass(frozen=True)
class OAuthProvider:
    """One configured login provider. ``metadata_url`` is set for OpenID Connect providers."""
    name: str  # "github", "google", "oidc": also the path segment of /auth/<name>/…
    label: str
    client_id: str
    client_secret: str
    metadata_url: str | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    bucket: Path
    lake: Path
    database_url: str
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    max_upload_bytes: int = 50 * MiB
    daily_quota: int = 20
    max_concurrent: int = 3
    default_challenge: str = DEFAULT_CHALLENGE
    admin_emails: frozenset[str] = frozenset()
    oauth_providers: tuple[OAuthProvider, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        storage = _storage(env)
        host = env.get("ARENA_HOST", "127.0.0.1")
        port = int(env.get("ARENA_PORT", "8000"))
        return cls(
            home=storage.home,
            bucket=storage.bucket,
            lake=storage.lake,
            database_url=env.get("ARENA_DATABASE_URL") or f"sqlite:///{storage.home / 'arena.db'}",
            secret_key=env.get("ARENA_SECRET_KEY") or stored_secret_key(storage.home),
            host=host,
            port=port,
            public_url=(env.get("ARENA_PUBLIC_URL") or f"http://{host}:{port}").rstrip("/"),
            max_upload_bytes=int(env.get("ARENA_MAX_UPLOAD_BYTES", 50 * MiB)),
            daily_quota=int(env.get("ARENA_DAILY_QUOTA", "20")),
            max_concurrent=int(env.get("ARENA_MAX_CONCURRENT", "3")),
            default_challenge=env.get("ARENA_DEFAULT_CHALLENGE", DEFAULT_CHALLENGE),
            admin_emails=frozenset(e.strip().lower() for e in env.get("ARENA_ADMIN_EMAILS", "").split(",")
                                   if e.strip()),
            oauth_providers=_oauth_providers(env),
        )

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def _storage(env: dict[str, str]) -> StorageSettings:
    # lake.config reads os.environ; hand it exactly the variables we were given.
    saved = {k: os.environ.get(k) for k in ("ARENA_HOME", "ARENA_BUCKET_URL", "ARENA_LAKE_URL")}
    try:
        for key in saved:
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        return StorageSettings.from_env()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stored_secret_key(home: Path) -> str:
    """The key in ``home/secret_key``, made on first use (0600) so sessions survive restarts."""
    path = home / "secret_key"
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _oauth_providers(env: dict[str, str]) -> tuple[OAuthProvider, ...]:
    providers = []
    if env.get("ARENA_GITHUB_CLIENT_ID"):
        providers.append(OAuthProvider("github", "GitHub", env["ARENA_GITHUB_CLIENT_ID"],
                                       env.get("ARENA_GITHUB_CLIENT_SECRET", "")))
    if env.get("ARENA_GOOGLE_CLIENT_ID"):
        providers.append(OAuthProvider("google", "Google", env["ARENA_GOOGLE_CLIENT_ID"],
                                       env.get("ARENA_GOOGLE_CLIENT_SECRET", ""),
                                       "https://accounts.google.com/.well-known/openid-configuration"))
    if env.get("ARENA_OIDC_ISSUER") and env.get("ARENA_OIDC_CLIENT_ID"):
        issuer = env["ARENA_OIDC_ISSUER"].rstrip("/")
        providers.append(OAuthProvider("oidc", env.get("ARENA_OIDC_NAME", "OIDC"), env["ARENA_OIDC_CLIENT_ID"],
                                       env.get("ARENA_OIDC_CLIENT_SECRET", ""),
                                       f"{issuer}/.well-known/openid-configuration"))
    return tuple(providers)
