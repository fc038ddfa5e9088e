"""The web form in a real browser (Debian's Chromium through Playwright)."""
from __future__ import annotations

from oidc_provider import ProviderUser
from playwright.sync_api import expect


def log_in(page, arena, provider, name="ada"):
    provider.user = ProviderUser(sub=f"sub-{name}", email=f"{name}@example.org", name=name)
    page.goto(arena.url + "/")
    page.click("text=Log in with Test ID")
    expect(page).to_have_url(arena.url + "/submissions")
    expect(page.locator("nav")).to_contain_text(name)


def test_log_in_upload_and_see_it_queued(page, oidc_arena, oidc_provider, make_zip):
    log_in(page, oidc_arena, oidc_provider)
    page.click("text=Upload")
    page.set_input_files("#file", str(make_zip("web")))
    page.click("#submit")
    expect(page.locator("#upload-ok")).to_contain_text("Queued")
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    sid = page.locator("#upload-ok a").inner_text()
    assert oidc_arena.bucket.marker(sid).user == "ada"

    page.click("text=My submissions")
    row = page.locator(f'tr[data-id="{sid}"]')
    expect(row).to_contain_text("queued")
    oidc_arena.bucket.set_status(sid, "building")  # the list follows the status without a reload
    expect(row.locator(".status")).to_have_text("building")


def test_a_refused_upload_shows_every_problem(page, oidc_arena, oidc_provider, make_zip):
    log_in(page, oidc_arena, oidc_provider)
    page.goto(oidc_arena.url + "/upload")
    page.set_input_files("#file", str(make_zip("bad", dockerfile_from="debian:12")))
    page.click("#submit")
    expect(page.locator("#upload-error")).to_contain_text("dockerfile.from_not_allowed")
    assert oidc_arena.bucket_files() == []


def test_submission_page_shows_logs_arriving_and_the_final_status(page, oidc_arena, oidc_provider, make_zip):
    log_in(page, oidc_arena, oidc_provider)
    with oidc_arena.app.state.db.session() as session:
        from sqlalchemy import select
        from intake.models import User
        user_id = session.scalar(select(User.id).where(User.name == "ada"))
    sid = oidc_arena.app.state.submissions.accept(user_id, make_zip("logs")).submission.id
    bucket = oidc_arena.bucket
    bucket.set_status(sid, "building")
    bucket.append_log(sid, "build", "Step 1/3 : FROM arena/python-cpu:1")

    page.goto(f"{oidc_arena.url}/submissions/{sid}")
    log = page.locator("#log")
    expect(log).to_contain_text("[build]")
    expect(log).to_contain_text("Step 1/3")
    expect(page.locator("#status")).to_have_text("building")

    # What orchestration does through the bucket, while the page watches:
    bucket.append_log(sid, "build", "Successfully built 0123abcd")
    bucket.set_status(sid, "running")
    bucket.append_log(sid, "run", '{"ready": true}')
    expect(log).to_contain_text("Successfully built 0123abcd")
    expect(log).to_contain_text('[run]')
    expect(page.locator("#status")).to_have_text("running")
    bucket.set_status(sid, "rejected", reason="accuracy")
    expect(page.locator("#status")).to_have_text("rejected (accuracy)")
    expect(page.locator("#status")).to_have_attribute("data-final", "true")


def test_tokens_page_in_the_browser(page, oidc_arena, oidc_provider):
    log_in(page, oidc_arena, oidc_provider)
    page.click("text=API tokens")
    page.fill("#token-name", "ci")
    page.click("#create-token")
    token = page.locator("#new-token").inner_text()
    assert token.startswith("arena_")
    with oidc_arena.http(token) as api:
        assert api.get("/api/v1/submissions").status_code == 200
    page.goto(oidc_arena.url + "/tokens")
    expect(page.locator("#tokens")).to_contain_text("ci")
    expect(page.locator("#new-token")).to_have_count(0)


def test_log_in_with_an_api_token_when_no_provider_is_configured(page, arena):
    token = arena.user("grace")
    page.goto(arena.url + "/")
    expect(page.locator("main")).to_contain_text("No login provider is configured")
    page.fill("#token-login input[name=token]", "arena_not-a-real-token")
    page.click("#token-login button")
    expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
    page.fill("#token-login input[name=token]", token)
    page.click("#token-login button")
    expect(page).to_have_url(arena.url + "/submissions")
    expect(page.locator("nav")).to_contain_text("grace")
