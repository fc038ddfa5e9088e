"""The web form: login, upload with progress, my submissions, a submission's live logs, API tokens.

Pages are rendered on the server (Jinja2); the little script on them calls the same REST API as the
CLI, authenticated by the session cookie plus the CSRF header.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from intake.auth import resolve_user
from intake.csrf import check_csrf, csrf_token, set_csrf_cookie
from intake.errors import ApiError
from intake.models import ApiToken, User
from intake.oauth import identity_from, user_for_identity
from intake.security import hash_token, issue_token, revoke_token, user_for_token
from intake.sessions import (SESSION_KEY, end_session, end_session_by_handle, end_sessions_of_user,
                             handle_of, live_sessions, open_session, row_handle)

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
router = APIRouter(include_in_schema=False)


def page(request: Request, name: str, user: User | None, status_code: int = 200, **context) -> Response:
    settings = request.app.state.settings
    response = templates.TemplateResponse(request, name, {
        "user": user, "csrf": csrf_token(request), "providers": settings.oauth_providers,
        "default_challenge": settings.default_challenge, **context}, status_code=status_code)
    set_csrf_cookie(request, response)
    return response


def web_user(request: Request) -> User | None:
    user, _ = resolve_user(request)
    return user


def login_required(request: Request) -> User:
    user = web_user(request)
    if user is None:
        raise LoginRequired()
    return user


class LoginRequired(Exception):
    pass


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/submissions" if web_user(request) else "/login", 303)


@router.get("/login")
def login_page(request: Request) -> Response:
    return page(request, "login.html", web_user(request), error=request.query_params.get("error"))


@router.post("/login/token")
def token_login(request: Request, token: str = Form(""), csrf_token: str = Form("")) -> Response:
    """Log in to the web form with a personal API token (the only way in without an OAuth provider)."""
    check_csrf(request, csrf_token)
    with request.app.state.db.session() as session, session.begin():
        user = user_for_token(session, token.strip())
        key = None
        if user is not None:
            token_id = session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token.strip())))
            key = open_session(session, user.id, token_id=token_id,
                               lifetime_s=request.app.state.settings.session_max_age_s)
    if key is None:
        return page(request, "login.html", None, status_code=401,
                    error="login failed: that API token is unknown or revoked")
    request.session.clear()  # a fresh session on login: nothing from before survives
    request.session[SESSION_KEY] = key  # revoking this token ends this session
    return RedirectResponse("/submissions", 303)


@router.get("/auth/{provider}/login")
async def oauth_login(provider: str, request: Request) -> Response:
    client = request.app.state.oauth.create_client(provider)
    if client is None:
        raise ApiError(404, "not_found", f"no login provider {provider!r}")
    redirect_uri = f"{request.app.state.settings.public_url}/auth/{provider}/callback"
    return await client.authorize_redirect(request, redirect_uri)


@router.get("/auth/{provider}/callback")
async def oauth_callback(provider: str, request: Request) -> Response:
    import httpx
    from authlib.integrations.base_client import OAuthError
    from joserfc.errors import JoseError

    settings = request.app.state.settings
    client = request.app.state.oauth.create_client(provider)
    config = next((p for p in settings.oauth_providers if p.name == provider), None)
    if client is None or config is None:
        raise ApiError(404, "not_found", f"no login provider {provider!r}")
    try:
        token = await client.authorize_access_token(request)
        who = await identity_from(config, client, token)
    except (OAuthError, ApiError, JoseError, httpx.HTTPError, ValueError) as exc:
        message = getattr(exc, "message", None) or getattr(exc, "description", None) or str(exc)
        return page(request, "login.html", None, status_code=403, error=f"login failed: {message}")

    def store():
        with request.app.state.db.session() as session, session.begin():
            return open_session(session, user_for_identity(session, who).id, lifetime_s=settings.session_max_age_s)
    from fastapi.concurrency import run_in_threadpool
    request.session.clear()  # a fresh session on login: nothing from before survives
    request.session[SESSION_KEY] = await run_in_threadpool(store)
    return RedirectResponse("/submissions", 303)


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    check_csrf(request, csrf_token)
    with request.app.state.db.session() as session, session.begin():
        end_session(session, request.session.get(SESSION_KEY))  # a copied cookie is dead too
    request.session.clear()
    return RedirectResponse("/login", 303)


@router.get("/sessions")
def sessions_page(request: Request) -> Response:
    """The browsers (and token logins) logged in as this user, each with a button that ends it, and
    "Log out everywhere"."""
    user = login_required(request)
    with request.app.state.db.session() as session:
        rows = live_sessions(session, user.id)
        names = dict(session.execute(select(ApiToken.id, ApiToken.name).where(ApiToken.user_id == user.id)).all())
        shown = [{"handle": row_handle(r.id), "created_at": r.created_at, "expires_at": r.expires_at,
                  "how": f"API token “{names.get(r.token_id, r.token_id)}”" if r.token_id is not None
                  else "OAuth login"} for r in rows]
    return page(request, "sessions.html", user, sessions=shown,
                current=handle_of(request.session.get(SESSION_KEY)))


@router.post("/sessions/{handle}/end")
def end_one_session(handle: str, request: Request, csrf_token: str = Form("")) -> Response:
    user = login_required(request)
    check_csrf(request, csrf_token)
    with request.app.state.db.session() as session, session.begin():
        if not end_session_by_handle(session, user.id, handle):
            raise ApiError(404, "not_found", f"no live session {handle!r} of yours")
    if handle == handle_of(request.session.get(SESSION_KEY)):
        request.session.clear()
        return RedirectResponse("/login", 303)
    return RedirectResponse("/sessions", 303)


@router.post("/sessions/end-all")
def log_out_everywhere(request: Request, csrf_token: str = Form("")) -> Response:
    """End every session of this user, this browser's too: any copy of any of its cookies is dead."""
    user = login_required(request)
    check_csrf(request, csrf_token)
    with request.app.state.db.session() as session, session.begin():
        end_sessions_of_user(session, user.id)
    request.session.clear()
    return RedirectResponse("/login", 303)


@router.get("/upload")
def upload_page(request: Request) -> Response:
    from intake.submissions import known_challenges
    return page(request, "upload.html", login_required(request), challenges=known_challenges())


@router.get("/submissions")
def submissions_page(request: Request) -> Response:
    return page(request, "submissions.html", login_required(request))


@router.get("/submissions/{sid}")
def submission_page(sid: str, request: Request) -> Response:
    user = login_required(request)
    service = request.app.state.submissions
    with request.app.state.db.session() as session:
        sub = service.describe(service.visible(session, user, sid))
    return page(request, "submission.html", user, sub=sub)


@router.get("/tokens")
def tokens_page(request: Request, new_token: str | None = None) -> Response:
    user = login_required(request)
    with request.app.state.db.session() as session:
        tokens = session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                 .order_by(ApiToken.id.desc())).all()
    return page(request, "tokens.html", user, tokens=tokens, new_token=new_token)


@router.post("/tokens")
def create_token(request: Request, name: str = Form("web"), csrf_token: str = Form("")) -> Response:
    user = login_required(request)
    check_csrf(request, csrf_token)
    with request.app.state.db.session() as session, session.begin():
        _, clear = issue_token(session, session.get(User, user.id), name.strip()[:100] or "web")
    # Shown in this answer only, never stored in clear text.
    return tokens_page(request, new_token=clear)


@router.post("/tokens/{token_id}/revoke")
def revoke(token_id: int, request: Request, csrf_token: str = Form("")) -> Response:
    user = login_required(request)
    check_csrf(request, csrf_token)
    with request.app.state.db.session() as session, session.begin():
        revoke_token(session, user, token_id)  # also ends the sessions opened by logging in with it
    return RedirectResponse("/tokens", 303)


def install(app) -> None:
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _to_login(_request: Request, _exc: LoginRequired) -> Response:
        return RedirectResponse("/login", 303)
