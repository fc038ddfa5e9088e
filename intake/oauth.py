"""Logging in through GitHub, Google or any OpenID Connect issuer (authlib's Starlette client).

Authorization code flow with PKCE (S256); authlib keeps state, nonce and code verifier in the signed
session, checks the state on return and verifies the ID token (signature from the issuer's JWKS,
issuer, audience, expiry, nonce). A user is created on first login, matched by verified e-mail;
ARENA_ADMIN_EMAILS makes admins.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from authlib.integrations.starlette_client import OAuth
from sqlalchemy import select
from sqlalchemy.orm import Session

from intake.config import OAuthProvider, Settings
from intake.errors import ApiError
from intake.models import User

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
    email: str
    name: str


async def identity_from(provider: OAuthProvider, client, token: dict) -> Identity:
    if provider.metadata_url is not None:
        info = token.get("userinfo") or {}
        if not info.get("email"):
            raise ApiError(403, "no_email", f"{provider.label} did not tell us your e-mail address")
        if info.get("email_verified") is False:
            raise ApiError(403, "email_unverified", f"verify your e-mail address with {provider.label} first")
        name = info.get("preferred_username") or info.get("nickname") or info["email"].split("@")[0]
        return Identity(info["email"].lower(), name)
    profile = (await client.get("user", token=token)).json()
    emails = (await client.get("user/emails", token=token)).json()
    primary = next((e["email"] for e in emails if e.get("primary") and e.get("verified")), None)
    if not primary:
        raise ApiError(403, "email_unverified", "your GitHub account has no verified primary e-mail address")
    return Identity(primary.lower(), profile.get("login") or primary.split("@")[0])


def user_for_identity(session: Session, settings: Settings, who: Identity) -> User:
    user = session.scalar(select(User).where(User.email == who.email))
    if user is None:
        user = User(name=unique_name(session, who.name), email=who.email)
        session.add(user)
    if who.email in settings.admin_emails:
        user.is_admin = True
    session.flush()
    return user


def unique_name(session: Session, wanted: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted).strip("-")[:60] or "user"
    name, n = base, 1
    while session.scalar(select(User.id).where(User.name == name)) is not None:
        n += 1
        name = f"{base}-{n}"
    return name
