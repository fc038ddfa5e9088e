"""Intake settings: one object, read once from the environment (DESIGN.md, "Configuration").

| variable | default | meaning |
|---|---|---|
| `ARENA_HOME` | `./.arena` | where the embedded platform keeps its files (bucket, lake, SQLite, secret key) |
| `ARENA_BUCKET_URL` | `file://$ARENA_HOME/bucket` | the intake bucket shared with orchestration (`lake.config`) |
| `ARENA_LAKE_URL` | `file://$ARENA_HOME/lake` | the Parquet lake (`lake.config`) |
| `ARENA_DATABASE_URL` | `sqlite:///$ARENA_HOME/arena.db` | users, API tokens, submissions; production: `postgresql+psycopg://user:pw@host/db` |
| `ARENA_SECRET_KEY` | generated once into `$ARENA_HOME/secret_key` (mode 0600, atomically) | signs session cookies and CSRF tokens; at least 32 characters |
| `ARENA_HOST` | `127.0.0.1` | address the intake server binds (`python -m intake`) |
| `ARENA_PORT` | `8000` | port of the intake API and web form |
| `ARENA_PUBLIC_URL` | `http://$ARENA_HOST:$ARENA_PORT` | base URL users reach (links in answers, OAuth redirect URIs) |
| `ARENA_MAX_UPLOAD_BYTES` | `52428800` (50 MiB) | largest accepted zip; larger uploads are cut off while streaming (413) |
| `ARENA_DAILY_QUOTA` | `20` | upload attempts per user in any 24 hours, refused ones included (429 beyond) |
| `ARENA_UPLOAD_RATE_LIMIT` / `ARENA_UPLOAD_RATE_WINDOW_S` | `10` / `60` | upload attempts per user per window (429) |
| `ARENA_MAX_REQUEST_BYTES` | max upload + 1 MiB | total body of any request (413) |
| `ARENA_MAX_MULTIPART_PARTS` | `8` | parts of an upload (413) |
| `ARENA_MAX_HEADER_BYTES` | `16384` | request headers, and one multipart part's headers (431) |
| `ARENA_WS_PER_USER` / `ARENA_WS_MAX_LIFETIME_S` | `4` / `3600` | open log sockets per user; a socket's lifetime |
| `ARENA_SESSION_MAX_AGE_S` | `1209600` | lifetime of a web session |
| `ARENA_METRICS_TOKEN` | unset (metrics off) | bearer token Prometheus sends to `GET /metrics` |
| `ARENA_MAX_CONCURRENT` | `3` | submissions per user not yet finished (queued…scoring) (429 beyond) |
| `ARENA_DEFAULT_CHALLENGE` | `efficient-decode` | challenge of an upload that names none |
| `ARENA_GITHUB_CLIENT_ID` / `ARENA_GITHUB_CLIENT_SECRET` | unset | enable "Log in with GitHub" |
| `ARENA_GOOGLE_CLIENT_ID` / `ARENA_GOOGLE_CLIENT_SECRET` | unset | enable "Log in with Google" |
| `ARENA_OIDC_ISSUER` / `ARENA_OIDC_CLIENT_ID` / `ARENA_OIDC_CLIENT_SECRET` | unset | enable any OpenID Connect issuer (discovery at `<issuer>/.well-known/openid-configuration`) |
| `ARENA_OIDC_NAME` | `OIDC` | label of that issuer's login button |

With no OAuth provider configured, the only way in is an API token made by `arena admin create-user`.
Admin is granted only by `arena admin set-admin <user>` (or `create-user --admin`), never by e-mail.
"""
from __future__ import annotations

import os
import secrets
import tempfile
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
    bucket: str | Path   # a storage URL (file:// or s3://, lake/storage.py) or a local path
    lake: str | Path
    database_url: str
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    max_upload_bytes: int = 50 * MiB
    daily_quota: int = 20
    max_concurrent: int = 3
    default_challenge: str = DEFAULT_CHALLENGE
    oauth_providers: tuple[OAuthProvider, ...] = field(default_factory=tuple)
    # -- request limits, quota and rate limit, WebSockets (README "Security model: intake") --------
    max_request_bytes: int = 50 * MiB + MiB
    max_multipart_parts: int = 8
    max_header_bytes: int = 16 * 1024
    upload_rate_limit: int = 10
    upload_rate_window_s: int = 60
    ws_per_user: int = 4
    ws_max_lifetime_s: int = 3600
    session_max_age_s: int = 14 * 24 * 3600
    metrics_token: str | None = None
    sweep_age_s: int = 3600       # spool files and unacknowledged rows older than this are removed
    sweep_interval_s: int = 600   # how often intake sweeps (and once at startup)

    def __post_init__(self) -> None:
        check_secret_key(self.secret_key)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        if env.get("ARENA_ADMIN_EMAILS"):
            raise ValueError("ARENA_ADMIN_EMAILS is no longer honoured: an e-mail never makes an admin. "
                             "Grant admin explicitly with `arena admin set-admin <user>` and unset it.")
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
            oauth_providers=_oauth_providers(env),
            max_request_bytes=int(env.get("ARENA_MAX_REQUEST_BYTES")
                                  or int(env.get("ARENA_MAX_UPLOAD_BYTES", 50 * MiB)) + MiB),
            max_multipart_parts=int(env.get("ARENA_MAX_MULTIPART_PARTS", "8")),
            max_header_bytes=int(env.get("ARENA_MAX_HEADER_BYTES", 16 * 1024)),
            upload_rate_limit=int(env.get("ARENA_UPLOAD_RATE_LIMIT", "10")),
            upload_rate_window_s=int(env.get("ARENA_UPLOAD_RATE_WINDOW_S", "60")),
            ws_per_user=int(env.get("ARENA_WS_PER_USER", "4")),
            ws_max_lifetime_s=int(env.get("ARENA_WS_MAX_LIFETIME_S", "3600")),
            session_max_age_s=int(env.get("ARENA_SESSION_MAX_AGE_S", 14 * 24 * 3600)),
            metrics_token=env.get("ARENA_METRICS_TOKEN") or None,
            sweep_age_s=int(env.get("ARENA_SWEEP_AGE_S", "3600")),
            sweep_interval_s=int(env.get("ARENA_SWEEP_INTERVAL_S", "600")),
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


MIN_SECRET_KEY_CHARS = 32


def check_secret_key(key: str) -> None:
    """Refuse a key that would let anyone forge sessions: empty, or shorter than 32 characters."""
    if not isinstance(key, str) or len(key.strip()) < MIN_SECRET_KEY_CHARS:
        raise ValueError(f"the secret key (ARENA_SECRET_KEY or $ARENA_HOME/secret_key) has "
                         f"{len((key or '').strip())} characters; at least {MIN_SECRET_KEY_CHARS} are required "
                         f"(rule: secret_key_length). Remove an empty secret_key file to have one generated.")


def stored_secret_key(home: Path) -> str:
    """The key in ``home/secret_key``, made on first use (0600) so sessions survive restarts.

    Written atomically: a temporary file is filled and fsynced, then hard-linked into place (which fails
    if another process got there first, whose key then wins), so no reader ever sees a partial key."""
    path = home / "secret_key"
    home.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=".secret_key.", dir=home)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # like rename, but never replaces a key another process wrote
            except FileExistsError:
                pass
            dir_fd = os.open(home, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            os.unlink(tmp)
    key = path.read_text().strip()
    check_secret_key(key)
    return key


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
