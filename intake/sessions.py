"""Web sessions, one module for intake and the dashboards.

The browser holds intake's signed cookie ``arena_session`` (Starlette's SessionMiddleware format:
base64 JSON, timestamp-signed with ARENA_SECRET_KEY). The only identity it carries is a random session
key; the user is found through the ``web_sessions`` row stored under the key's sha256, so logout,
revoking the API token a session was opened with, or expiry end the session on the server, whatever
copy of the cookie is still around.

``user_for_cookie`` is the one check both sides use: intake on every request, the Streamlit dashboards
on every page (cookies are scoped by host, not port, so the browser sends intake's cookie to both).
"""
from __future__ import annotations

import hashlib
import json
import secrets
from base64 import b64decode
from datetime import datetime, timedelta

import itsdangerous
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from intake.models import ApiToken, User, WebSession, as_utc, utcnow

COOKIE = "arena_session"
SESSION_KEY = "session_key"  # the field of the signed cookie that names the server-side session
MAX_AGE_S = 14 * 24 * 3600  # cookie signature and server-side session both expire after this


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def decode_cookie(secret_key: str, value: str | None, max_age: int = MAX_AGE_S) -> dict | None:
    """The content of a signed session cookie, or None when it is missing, forged, or too old."""
    if not value:
        return None
    try:
        data = itsdangerous.TimestampSigner(str(secret_key)).unsign(value.encode("utf-8"), max_age=max_age)
        content = json.loads(b64decode(data))
    except (itsdangerous.BadSignature, ValueError, UnicodeError):
        return None
    return content if isinstance(content, dict) else None


def open_session(session: Session, user_id: int, token_id: int | None = None, lifetime_s: int = MAX_AGE_S) -> str:
    """Record a new logged-in session; returns the key to put in the signed cookie."""
    key = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(WebSession(id=_hash(key), user_id=user_id, token_id=token_id, created_at=now,
                           expires_at=now + timedelta(seconds=lifetime_s)))
    session.flush()
    return key


def end_session(session: Session, key: str | None) -> None:
    if key:
        session.execute(update(WebSession).where(WebSession.id == _hash(key), WebSession.revoked_at.is_(None))
                        .values(revoked_at=utcnow()))


def end_sessions_of_token(session: Session, token_id: int) -> int:
    """End every session that was opened by logging in with API token ``token_id``."""
    return session.execute(update(WebSession).where(WebSession.token_id == token_id,
                                                    WebSession.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount


def end_sessions_of_user(session: Session, user_id: int) -> int:
    return session.execute(update(WebSession).where(WebSession.user_id == user_id,
                                                    WebSession.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount


#: Hex characters of a session's id shown on the sessions page and used to end it: enough to tell a
#: user's sessions apart, never the key itself (the id is the key's sha256; the cookie holds the key).
HANDLE_CHARS = 16


def handle_of(key: str | None) -> str | None:
    """The public handle of the session whose cookie carries ``key``."""
    return row_handle(_hash(key)) if isinstance(key, str) and key else None


def row_handle(session_id: str) -> str:
    """The public handle of the ``web_sessions`` row ``session_id``."""
    return session_id[:HANDLE_CHARS]


def live_sessions(session: Session, user_id: int, now: datetime | None = None) -> list[WebSession]:
    """A user's sessions that still log a browser in (not ended, not expired, token not revoked),
    newest first."""
    now = now or utcnow()
    rows = session.scalars(select(WebSession).where(WebSession.user_id == user_id,
                                                    WebSession.revoked_at.is_(None))
                           .order_by(WebSession.created_at.desc())).all()
    revoked = set(session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id,
                                                            ApiToken.revoked_at.is_not(None))))
    return [r for r in rows if as_utc(r.expires_at) > now and r.token_id not in revoked]


def end_session_by_handle(session: Session, user_id: int, handle: str) -> int:
    """End the user's session whose id starts with ``handle``; another user's is never touched."""
    if len(handle) != HANDLE_CHARS or any(c not in "0123456789abcdef" for c in handle):
        return 0
    return session.execute(update(WebSession).where(WebSession.user_id == user_id,
                                                    WebSession.id.startswith(handle),
                                                    WebSession.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount


def user_for_key(session: Session, key: str | None, now: datetime | None = None) -> User | None:
    """The user of a live session: not ended, not expired, and its API token (if any) not revoked."""
    if not isinstance(key, str) or not key:
        return None
    row = session.get(WebSession, _hash(key))
    now = now or utcnow()
    if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= now:
        return None
    if row.token_id is not None:
        revoked = session.scalar(select(ApiToken.revoked_at).where(ApiToken.id == row.token_id))
        if revoked is not None:
            return None
    return row.user


def user_for_cookie(session: Session, secret_key: str, cookie: str | None) -> User | None:
    """Who the browser presenting ``cookie`` is logged in as, or None: the one check intake and the
    dashboards share."""
    content = decode_cookie(secret_key, cookie)
    return user_for_key(session, content.get(SESSION_KEY)) if content else None
