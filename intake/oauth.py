"""Logging in through GitHub, Google or any OpenID Connect issuer (authlib's Starlette client).

Authorization code flow with PKCE (S256); authlib keeps state, nonce and code verifier in the signed
session, checks the state on return and verifies the ID token (signature from the issuer's JWKS,
issuer, audience, expiry, nonce). A user is found by (provider, subject) and created on first login;
an e-mail is recorded only when the provider says it is verified, and never links or promotes accounts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from authlib.integrations.starlette_client import OAuth
from sqlalchemy import select
from sqlalchemy.orm import Session

from intake.config import OAuthProvider, Settings
from intake.errors import ApiError
from intake.models import Identity as IdentityRow, User, utcnow

GITHUB = {"access_token_url": "https://github.com/login/oauth/access_token",
          "authorize_url": "https://github.com/login/oauth/authorize", "api_base_url": "https://api.github.com/"}


def build_oauth(settings: Settings) -> OAuth:
    oauth = OAuth()
    for p in settings.oauth_providers:
        if p.metadata_url is None:  # GitHub: plain OAuth 2, identity from its API
            oauth.register(p.name, client_id=p.client_id, client_secret=p.client_secret, **GITHUB,
                           client_kwargs={"scope": "read:user user:email", "code_challenge_method": "S256"})
        else:
            oauth.register(p.name, client_id=p.client_id, client_secret=p.client_secret,
                           server_metadata_url=p.metadata_url,
                           client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"})
    return oauth


@dataclass(frozen=True)
class Identity:
    """Who the provider says logged in: ``(provider, subject)`` is the key; ``email`` only when verified."""
    provider: str
    subject: str
    name: str
    email: str | None = None


async def identity_from(provider: OAuthProvider, client, token: dict) -> Identity:
    if provider.metadata_url is not None:
        info = token.get("userinfo") or {}  # from the verified ID token
        subject = info.get("sub")
        if not isinstance(subject, str) or not subject:
            raise ApiError(403, "no_subject", f"{provider.label} did not say who you are (no `sub` claim)")
        # OIDC: an e-mail counts only with `email_verified: true` (absent is not verified).
        email = info.get("email") if info.get("email_verified") is True else None
        name = info.get("preferred_username") or info.get("nickname") or (email or "").split("@")[0] or "user"
        return Identity(provider.name, subject, name, email.lower() if email else None)
    profile = (await client.get("user", token=token)).json()
    if profile.get("id") is None:
        raise ApiError(403, "no_subject", "GitHub did not say who you are (no user id)")
    emails = (await client.get("user/emails", token=token)).json()
    primary = next((e["email"] for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified")),
                   None)  # only GitHub's verified primary address counts
    return Identity(provider.name, str(profile["id"]), profile.get("login") or "user",
                    primary.lower() if primary else None)


def user_for_identity(session: Session, who: Identity) -> User:
    """The user of ``(provider, subject)``, created on first login. Never found by e-mail (no linking),
    never made admin here: admin is granted only by `arena admin set-admin`."""
    row = session.scalar(select(IdentityRow).where(IdentityRow.provider == who.provider,
                                                   IdentityRow.subject == who.subject))
    now = utcnow()
    if row is None:
        email_free = who.email is not None and session.scalar(
            select(User.id).where(User.email == who.email)) is None
        user = User(name=unique_name(session, who.name), email=who.email if email_free else None)
        session.add(user)
        session.flush()
        row = IdentityRow(user_id=user.id, provider=who.provider, subject=who.subject, created_at=now)
        session.add(row)
    row.verified_email = who.email
    row.last_login_at = now
    session.flush()
    return session.get(User, row.user_id)


def unique_name(session: Session, wanted: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted).strip("-")[:60] or "user"
    name, n = base, 1
    while session.scalar(select(User.id).where(User.name == name)) is not None:
        n += 1
        name = f"{base}-{n}"
    return name
