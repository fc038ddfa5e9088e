"""Who is calling: a Bearer API token, a `?token=` query parameter (WebSockets), or the web session
(a server-side session named by the signed cookie, ``intake.sessions``).

Requests authenticated by the session cookie that change something must also carry the CSRF token
(header `X-CSRF-Token` or form field `csrf_token`), see ``intake.csrf``.
"""
from __future__ import annotations

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from intake.errors import ApiError
from intake.models import User
from intake.security import user_for_token
from intake.sessions import SESSION_KEY, user_for_key

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.query_params.get("token") if conn.scope["type"] == "websocket" else None


def resolve_user(conn: HTTPConnection) -> tuple[User | None, str]:
    """(user, how) where how is "token", "session" or "" (anonymous)."""
    db = conn.app.state.db
    token = bearer_token(conn)
    with db.session() as session:
        if token is not None:
            user = user_for_token(session, token)
            session.commit()
            return user, "token"
        key = conn.session.get(SESSION_KEY) if "session" in conn.scope else None
        if key is not None:
            user = user_for_key(session, key)
            return user, ("session" if user is not None else "")
    return None, ""


def current_user(request: Request) -> User:
    user, how = resolve_user(request)
    if user is None:
        raise ApiError(401, "unauthorized", "a valid API token is required (Authorization: Bearer arena_…)",
                       headers={"WWW-Authenticate": "Bearer"})
    if how == "session" and request.method not in SAFE_METHODS:
        from intake.csrf import check_csrf_header
        check_csrf_header(request)
    return user


def admin_user(user: User = Depends(current_user)) -> User:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "administrators only")
    return user
