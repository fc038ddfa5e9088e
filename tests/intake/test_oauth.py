"""Logging in through a real OpenID Connect provider (built from authlib's server parts) over HTTP."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

import httpx
from oidc_provider import ProviderUser
from sqlalchemy import func, select

from intake.cli import main as arena_main
from intake.models import Identity, User
from intake.security import create_user


@contextmanager
def log_in(arena, provider, email="ada@example.org", name="ada", verified=True):
    """A cookie-keeping client that went through the whole login; ``.landed`` is the page it ended on."""
    provider.user = ProviderUser(sub=f"sub-{name}", email=email, name=name, email_verified=verified)
    with httpx.Client(base_url=arena.url, follow_redirects=True, timeout=30) as browser:
        browser.landed = browser.get("/auth/oidc/login")
        yield browser


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_login_creates_the_user_and_opens_a_session(oidc_arena, oidc_provider, make_zip):
    with log_in(oidc_arena, oidc_provider) as browser:
        page = browser.landed
        assert page.status_code == 200 and page.url.path == "/submissions"
        assert "ada" in page.text
        assert oidc_provider.pkce_challenges == ["S256"]
        assert browser.get("/api/v1/submissions").json()["items"] == []

        zip_path = make_zip("a")
        without_csrf = browser.post("/api/v1/submissions", files={"file": zip_path.open("rb")})
        assert without_csrf.status_code == 403 and without_csrf.json()["error"]["code"] == "csrf"
        assert oidc_arena.bucket_files() == []
        token = csrf_of(page.text)
        with_csrf = browser.post("/api/v1/submissions", files={"file": zip_path.open("rb")},
                                 headers={"X-CSRF-Token": token})
        assert with_csrf.status_code == 202
        assert oidc_arena.bucket.marker(with_csrf.json()["id"]).user == "ada"

    with log_in(oidc_arena, oidc_provider) as again:  # the second login finds the same user
        assert len(again.get("/api/v1/submissions").json()["items"]) == 1


def set_admin(arena, name: str, *flags: str) -> int:
    env = {"ARENA_HOME": str(arena.settings.home), "ARENA_DATABASE_URL": arena.settings.database_url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return arena_main(["admin", "set-admin", name, *flags])
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_admin_is_granted_only_explicitly(oidc_arena, oidc_provider):
    with log_in(oidc_arena, oidc_provider, email="admin@example.org", name="boss") as browser:
        assert "boss" in browser.landed.text and "(admin)" not in browser.landed.text  # no admin by e-mail
        assert set_admin(oidc_arena, "boss") == 0
        assert "boss (admin)" in browser.get("/submissions").text   # read from the database on each request
        assert set_admin(oidc_arena, "boss", "--revoke") == 0
        assert "(admin)" not in browser.get("/submissions").text
    assert set_admin(oidc_arena, "nobody") == 1


def test_identities_are_keyed_by_provider_and_subject_never_by_email(oidc_arena, oidc_provider):
    with oidc_arena.app.state.db.session() as session, session.begin():  # an admin made before, with an e-mail
        create_user(session, "root", admin=True, email="root@example.org")
    with log_in(oidc_arena, oidc_provider, email="root@example.org", name="mallory") as browser:
        assert browser.landed.status_code == 200
        assert "mallory" in browser.landed.text and "(admin)" not in browser.landed.text
        mallory = browser.get("/api/v1/submissions?all=true")
    with log_in(oidc_arena, oidc_provider, email="root@example.org", name="trent") as browser:  # same e-mail
        assert "trent" in browser.landed.text
    with oidc_arena.app.state.db.session() as session:
        users = {u.name: u for u in session.scalars(select(User))}
        identities = session.execute(select(Identity.provider, Identity.subject, Identity.user_id)).all()
    assert set(users) == {"root", "mallory", "trent"}        # three accounts: none linked by e-mail
    assert users["root"].email == "root@example.org" and users["mallory"].email is None
    assert sorted(identities) == [("oidc", "sub-mallory", users["mallory"].id), ("oidc", "sub-trent", users["trent"].id)]
    assert mallory.status_code == 200 and mallory.json()["items"] == []

    with log_in(oidc_arena, oidc_provider, email="new-address@example.org", name="mallory") as browser:
        assert "mallory" in browser.landed.text              # the same subject is the same user, any e-mail
    with oidc_arena.app.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 3


def test_a_forged_state_is_refused(oidc_arena, oidc_provider):
    oidc_provider.user = ProviderUser("sub-eve", "eve@example.org", "eve")
    with httpx.Client(base_url=oidc_arena.url, timeout=30) as browser:
        to_provider = browser.get("/auth/oidc/login")
        assert to_provider.status_code == 302
        back = httpx.get(to_provider.headers["location"])  # the provider answers with code and state
        callback = back.headers["location"]
        forged = re.sub(r"state=[^&]+", "state=forged", callback)
        answer = browser.get(forged)
        assert answer.status_code == 403 and "login failed" in answer.text
        assert browser.get("/api/v1/submissions").status_code == 401


def test_an_id_token_from_the_wrong_issuer_is_refused(oidc_arena, oidc_provider):
    oidc_provider.id_token_issuer = "http://evil.example"
    with log_in(oidc_arena, oidc_provider) as browser:
        assert browser.landed.status_code == 403 and "login failed" in browser.landed.text
        assert browser.get("/api/v1/submissions").status_code == 401


def test_an_unverified_email_never_counts(oidc_arena, oidc_provider):
    with log_in(oidc_arena, oidc_provider, email="ada@example.org", verified=False) as browser:
        assert browser.landed.status_code == 200 and "ada" in browser.landed.text  # logged in by subject
    with oidc_arena.app.state.db.session() as session:
        user = session.scalar(select(User).where(User.name == "ada"))
        identity = session.scalar(select(Identity).where(Identity.user_id == user.id))
    assert user.email is None and identity.verified_email is None and identity.subject == "sub-ada"


def test_logout_ends_the_session_even_for_a_copied_cookie(oidc_arena, oidc_provider):
    with log_in(oidc_arena, oidc_provider) as browser:
        cookie = browser.cookies["arena_session"]
        page = browser.get("/submissions")
        assert browser.post("/logout", data={"csrf_token": csrf_of(page.text)}).url.path == "/login"
    with httpx.Client(base_url=oidc_arena.url, cookies={"arena_session": cookie}) as thief:
        assert thief.get("/api/v1/submissions").status_code == 401
        assert thief.get("/submissions").status_code == 303


@contextmanager
def token_login(arena, token: str):
    with httpx.Client(base_url=arena.url, follow_redirects=True) as browser:
        yield token_login_in(browser, token)


def token_login_in(browser: httpx.Client, token: str) -> httpx.Client:
    login = browser.get("/login")
    page = browser.post("/login/token", data={"token": token, "csrf_token": csrf_of(login.text)})
    assert page.url.path == "/submissions"
    return browser


def test_revoking_an_api_token_ends_the_web_sessions_opened_with_it(arena):
    from intake.security import issue_token
    first = arena.user("alice")
    with arena.app.state.db.session() as session, session.begin():
        _, second = issue_token(session, session.scalar(select(User).where(User.name == "alice")), "laptop")
    with token_login(arena, first) as browser, token_login(arena, second) as laptop:
        assert browser.get("/api/v1/submissions").status_code == 200
        tokens = browser.get("/tokens")
        first_id = re.findall(r'action="/tokens/(\d+)/revoke"', tokens.text)[-1]   # newest first: the first is last
        browser.post(f"/tokens/{first_id}/revoke", data={"csrf_token": csrf_of(tokens.text)})
        assert browser.get("/api/v1/submissions").status_code == 401
        assert browser.get("/tokens", follow_redirects=False).status_code == 303
        assert laptop.get("/api/v1/submissions").status_code == 200   # opened with the other token


def test_a_forged_or_stale_cookie_is_nobody(arena):
    from intake.sessions import decode_cookie, user_for_cookie
    token = arena.user("alice")
    with httpx.Client(base_url=arena.url, follow_redirects=True) as browser:
        login = browser.get("/login")
        browser.post("/login/token", data={"token": token, "csrf_token": csrf_of(login.text)})
        cookie = browser.cookies["arena_session"]
    secret = arena.settings.secret_key
    with arena.app.state.db.session() as session:
        assert user_for_cookie(session, secret, cookie).name == "alice"
        assert user_for_cookie(session, "another-secret-key-of-enough-length!!", cookie) is None
        assert user_for_cookie(session, secret, cookie[:-2] + "xx") is None
        assert user_for_cookie(session, secret, None) is None
    assert decode_cookie(secret, cookie, max_age=-1) is None   # older than allowed


def test_tokens_page_creates_a_token_shown_once_and_revokes_it(oidc_arena, oidc_provider):
    with log_in(oidc_arena, oidc_provider) as browser:
        tokens = browser.get("/tokens")
        refused = browser.post("/tokens", data={"name": "laptop", "csrf_token": "nope"})
        assert refused.status_code == 403
        made = browser.post("/tokens", data={"name": "laptop", "csrf_token": csrf_of(tokens.text)})
        token = re.search(r'id="new-token">(arena_[^<]+)<', made.text).group(1)
        with oidc_arena.http(token) as api:
            assert api.get("/api/v1/submissions").status_code == 200
        listing = browser.get("/tokens")
        assert token not in listing.text  # shown once
        token_id = re.search(r'action="/tokens/(\d+)/revoke"', listing.text).group(1)
        browser.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(listing.text)})
        with oidc_arena.http(token) as api:
            assert api.get("/api/v1/submissions").status_code == 401


def test_login_page_lists_the_configured_providers(oidc_arena):
    with httpx.Client(base_url=oidc_arena.url) as browser:
        page = browser.get("/login")
        assert "Log in with Test ID" in page.text
        assert browser.get("/submissions").status_code == 303


def test_a_user_lists_their_sessions_ends_one_and_logs_out_everywhere(arena):
    token, other = arena.user("alice"), arena.user("bob")
    with token_login(arena, token) as desk, token_login(arena, token) as laptop, \
            token_login(arena, token) as phone, token_login(arena, other) as bob:
        page = desk.get("/sessions")
        handles = re.findall(r'action="/sessions/([0-9a-f]+)/end"', page.text)
        assert len(handles) == 3 and page.text.count("(this browser)") == 1   # bob's session is not listed
        mine = this_browser(desk)
        assert "API token" in page.text and "this browser" in page.text

        # Ending another user's session, or a made-up handle, is refused by name and ends nothing.
        bobs = re.findall(r'action="/sessions/([0-9a-f]+)/end"', bob.get("/sessions").text)[0]
        refused = desk.post(f"/sessions/{bobs}/end", data={"csrf_token": csrf_of(page.text)})
        assert refused.status_code == 404 and bobs in refused.text
        assert bob.get("/api/v1/submissions").status_code == 200

        # Ending the laptop's session logs the laptop out and no one else.
        laptop_handle = this_browser(laptop)
        assert laptop_handle in handles and laptop_handle != mine
        assert desk.post(f"/sessions/{laptop_handle}/end", data={"csrf_token": csrf_of(page.text)}).url.path \
            == "/sessions"
        assert laptop.get("/api/v1/submissions").status_code == 401
        assert desk.get("/api/v1/submissions").status_code == 200 and phone.get("/api/v1/submissions").status_code == 200

        # A POST without the CSRF token ends nothing.
        assert desk.post("/sessions/end-all", data={}).status_code == 403
        assert phone.get("/api/v1/submissions").status_code == 200

        # Log out everywhere: this browser and every other one of alice's, not bob's.
        page = desk.get("/sessions")
        assert desk.post("/sessions/end-all", data={"csrf_token": csrf_of(page.text)}).url.path == "/login"
        assert desk.get("/api/v1/submissions").status_code == 401
        assert phone.get("/api/v1/submissions").status_code == 401
        assert bob.get("/api/v1/submissions").status_code == 200
        # The API token itself still works: sessions ended, token not revoked.
        with httpx.Client(base_url=arena.url, headers={"Authorization": f"Bearer {token}"}) as cli:
            assert cli.get("/api/v1/submissions").status_code == 200


def this_browser(browser: httpx.Client) -> str:
    """The handle the sessions page marks as the browser's own."""
    return re.search(r"<code>([0-9a-f]+)</code> \(this browser\)", browser.get("/sessions").text).group(1)
