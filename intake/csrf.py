"""CSRF protection by signed double submit: a random value in a cookie, and the same value signed
with ARENA_SECRET_KEY in every form (or the `X-CSRF-Token` header of the page's scripts).

A cross-site page can make the browser send the cookie but can neither read it nor forge its signature.
"""
from __future__ import annotations

import hmac
import secrets

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import Response

from intake.errors import ApiError

COOKIE = "arena_csrf"


def _signer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(request.app.state.settings.secret_key, salt="arena-csrf")


def csrf_token(request: Request) -> str:
    """The token for forms on this page; sets the cookie on the response via ``request.state``."""
    nonce = request.cookies.get(COOKIE) or getattr(request.state, "csrf_nonce", None)
    if not nonce:
        nonce = secrets.token_urlsafe(24)
        request.state.csrf_nonce = nonce
    return _signer(request).dumps(nonce)


def set_csrf_cookie(request: Request, response: Response) -> None:
    nonce = getattr(request.state, "csrf_nonce", None)
    if nonce:
        response.set_cookie(COOKIE, nonce, httponly=True, samesite="lax",
                            secure=request.app.state.settings.public_url.startswith("https"))


def check_csrf(request: Request, submitted: str | None) -> None:
    nonce = request.cookies.get(COOKIE)
    try:
        signed = _signer(request).loads(submitted or "")
    except BadSignature:
        signed = None
    if not nonce or not isinstance(signed, str) or not hmac.compare_digest(signed, nonce):
        raise ApiError(403, "csrf", "the form's CSRF token is missing or does not match; reload the page")


def check_csrf_header(request: Request) -> None:
    check_csrf(request, request.headers.get("x-csrf-token"))
