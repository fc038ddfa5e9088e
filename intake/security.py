"""API tokens and users: tokens are shown once, stored only as their sha256."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from intake.models import ApiToken, User, as_utc, utcnow

TOKEN_PREFIX = "arena_"
#: ``last_used_at`` is written at most this often per token: a read-only request then commits no write
#: (one WAL flush fewer per API call), and the time stays exact to the minute.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, name: str = "default") -> tuple[ApiToken, str]:
    """A new token for ``user``; the clear text is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:12])
    session.add(row)
    session.flush()
    return row, token


def user_for_token(session: Session, token: str) -> User | None:
    """The owner of a live token, or None (unknown, revoked, or not an arena token)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).options(joinedload(ApiToken.user))   # one query, not two
                         .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_RESOLUTION:
        row.last_used_at = now
    return row.user


def revoke_token(session: Session, user: User, token_id: int) -> bool:
    row = session.scalar(select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    from intake.sessions import end_sessions_of_token
    end_sessions_of_token(session, row.id)  # a web login made with this token ends with it
    return True


def create_user(session: Session, name: str, admin: bool = False, email: str | None = None,
                token_name: str = "created by arena admin") -> tuple[User, str]:
    """Create a user with one API token; returns the user and the token's clear text."""
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} already exists")
    user = User(name=name, email=email, is_admin=admin)
    session.add(user)
    session.flush()
    _, token = issue_token(session, user, token_name)
    return user, token
