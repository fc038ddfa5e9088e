"""Logging in through a real OpenID Connect provider (built from authlib's server parts) over HTTP."""
from __future__ import annotations

import re
from contextlib import contextmanager

import httpx
from oidc_provider import ProviderUser


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


def test_admin_role_comes_from_admin_emails(oidc_arena, oidc_provider):
    with log_in(oidc_arena, oidc_provider, email="admin@example.org", name="boss") as browser:
        assert "boss (admin)" in browser.landed.text
    with log_in(oidc_arena, oidc_provider, email="user@example.org", name="user") as browser:
        assert "(admin)" not in browser.landed.text


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


def test_an_unverified_email_is_refused(oidc_arena, oidc_provider):
    with log_in(oidc_arena, oidc_provider, verified=False) as browser:
        assert browser.landed.status_code == 403 and "verify your e-mail" in browser.landed.text


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
