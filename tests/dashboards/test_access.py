"""Closed doors: the dashboards open only to a logged-in intake session, in a real Chromium, against a
real Streamlit and a real intake sharing one secret key and one database."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from conftest import PARTICIPANT, STRANGER, log_in
from seeded_arena import ALICE_OLD, BASELINE, FAST, WRONG
from test_dashboards import open_page

pytestmark = pytest.mark.docker

NOT_LOGGED_IN = "You are not logged in"


def wait_idle(page: Page) -> None:
    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(1)


@pytest.mark.parametrize("path", ["/", "/explorer", f"/explorer?submission={FAST.id}", "/admin"])
def test_an_anonymous_visitor_is_refused_everywhere(browser_page, streamlit_url, intake, path):
    page = browser_page
    page.goto(streamlit_url + path)
    expect(page.get_by_text(NOT_LOGGED_IN)).to_be_visible()
    wait_idle(page)
    expect(page.get_by_role("link", name=f"{intake.url}/login")).to_be_visible()
    body = page.locator('[data-testid="stMain"]').inner_text()
    for leaked in (FAST.name, BASELINE.name, "Cluster", "Tokens/s", FAST.id):
        assert leaked not in body
    expect(page.locator('[data-testid="stTable"]')).to_have_count(0)


def test_a_forged_session_cookie_is_anonymous(browser_page, streamlit_url, intake):
    from intake.sessions import open_session
    import base64
    import itsdangerous
    import json

    with intake.app.state.db.session() as session, session.begin():
        key = open_session(session, 1)           # a real session key, signed with the wrong secret
    payload = base64.b64encode(json.dumps({"session_key": key}).encode())
    forged = itsdangerous.TimestampSigner("not-the-arena-secret-key-but-long-enough").sign(payload).decode()
    browser_page.context.add_cookies([{"name": "arena_session", "value": forged, "url": streamlit_url}])
    browser_page.goto(streamlit_url + "/")
    expect(browser_page.get_by_text(NOT_LOGGED_IN)).to_be_visible()


def test_a_participant_sees_the_leaderboard_and_only_their_own_runs(participant_page, streamlit_url, arena):
    page = participant_page
    open_page(page, f"{streamlit_url}/", "Leaderboard")            # everyone's ranking: any logged-in user
    board = page.locator('[data-testid="stTable"]').nth(0).inner_text()
    assert FAST.name in board and BASELINE.name in board
    expect(page.get_by_text(f"Logged in as {PARTICIPANT}")).to_be_visible()

    open_page(page, f"{streamlit_url}/explorer", "Run explorer")
    page.get_by_test_id("stSelectbox").first.click()   # "Submission" (then "Compare with")
    options = page.get_by_role("option").all_inner_texts()
    assert len(options) == 2 and all(o.split(" · ")[0] in (FAST.id, ALICE_OLD.id) for o in options)
    page.keyboard.press("Escape")
    loadgen = arena.lake.uri(arena.lake.evaluation_prefix("efficient-decode", FAST.id) + "loadgen/")
    assert str(loadgen) not in page.locator('[data-testid="stMain"]').inner_text()   # no host paths

    for other in (BASELINE, WRONG):                                # someone else's, by its id
        open_page(page, f"{streamlit_url}/explorer?submission={other.id}", "Run explorer")
        expect(page.get_by_text(f"No submission {other.id} that you may see.")).to_be_visible()
        main = page.locator('[data-testid="stMain"]').inner_text()
        assert other.name not in main and "12.5" not in main
        expect(page).to_have_url(re.compile(f"submission=({FAST.id}|{ALICE_OLD.id})"))


def test_a_participant_with_no_runs_sees_none(browser_page, streamlit_url, intake):
    log_in(browser_page, intake, STRANGER)
    open_page(browser_page, f"{streamlit_url}/explorer", "Run explorer")
    expect(browser_page.get_by_text(f"No evaluation of yours ({STRANGER}) yet.")).to_be_visible()
    expect(browser_page.locator('[data-testid="stTable"]')).to_have_count(0)


def test_the_admin_page_is_refused_to_a_participant(participant_page, streamlit_url):
    page = participant_page
    page.goto(f"{streamlit_url}/admin")
    expect(page.get_by_text("The admin page is for administrators only")).to_be_visible()
    wait_idle(page)
    assert "Cluster" not in page.locator('[data-testid="stMain"]').inner_text()
    expect(page.locator('[data-testid="stMetric"]')).to_have_count(0)


@pytest.mark.parametrize("who", ["admin", "participant"])
def test_the_explorer_reads_no_file_by_path(request, streamlit_url, arena, who):
    page = request.getfixturevalue("page" if who == "admin" else "participant_page")
    secret = arena.home / "private-status.json"     # a JSON file outside the bucket's status folder
    secret.write_text('{"status": "LEAKED-BY-PATH", "updated_at": "now"}')
    traversal = "../" * 1 + "../private-status"      # bucket/status/<this>.json -> ARENA_HOME/private-status.json
    assert (arena.home / "bucket" / "status" / f"{traversal}.json").resolve() == secret.resolve()
    for attempt in (traversal, "..%2F..%2Fprivate-status", "/etc/passwd", FAST.id.lower()):
        open_page(page, f"{streamlit_url}/explorer?submission={attempt}", "Run explorer")
        expect(page.get_by_text("rule: submission_id")).to_be_visible()
        assert "LEAKED-BY-PATH" not in page.locator('[data-testid="stMain"]').inner_text()


def test_logging_out_of_intake_closes_the_dashboards(participant_page, streamlit_url, intake):
    page = participant_page
    open_page(page, f"{streamlit_url}/", "Leaderboard")
    page.goto(f"{intake.url}/submissions")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{intake.url}/login")
    page.goto(f"{streamlit_url}/")
    expect(page.get_by_text(NOT_LOGGED_IN)).to_be_visible()
