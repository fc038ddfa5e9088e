"""Intake hardening against a real server (uvicorn), SQLite and PostgreSQL: limits on what one request
may make intake hold, quota and rate limit before validation, WebSocket limits, the secret key."""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import ExitStack

import httpx
import pytest
from datetime import timedelta

from sqlalchemy import select, update
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from intake.config import Settings, check_secret_key, stored_secret_key
from intake.models import ApiToken, UploadAttempt, as_utc


def upload(http: httpx.Client, path, **data) -> httpx.Response:
    with open(path, "rb") as fh:
        return http.post("/api/v1/submissions", files={"file": ("s.zip", fh, "application/zip")}, data=data)


def error(answer: httpx.Response) -> dict:
    return answer.json()["error"]


# -- quota and rate limit ---------------------------------------------------------------------------
def test_refused_uploads_count_against_the_daily_quota(start_arena, make_zip):
    arena = start_arena(daily_quota=2, max_concurrent=10)
    with arena.http(arena.user("alice")) as http:
        bad = upload(http, make_zip("bad", dockerfile_from="debian:12"))
        assert bad.status_code == 422
        assert upload(http, make_zip("a")).status_code == 202
        over = upload(http, make_zip("b"))   # the refused one took the other slot
    assert over.status_code == 429 and error(over)["code"] == "quota_exceeded"
    assert error(over)["details"][0] | {"message": ""} == {"rule": "daily_quota", "value": 2, "message": ""}
    with arena.app.state.db.session() as session:
        outcomes = session.scalars(select(UploadAttempt.outcome).order_by(UploadAttempt.id)).all()
    assert outcomes == ["refused:dockerfile.from_not_allowed", "accepted"]


def test_an_attempt_is_settled_with_its_submission_and_a_duplicate_gives_its_slot_back(start_arena, make_zip):
    arena = start_arena(daily_quota=2, max_concurrent=10)
    zip_path = make_zip("a")
    with arena.http(arena.user("alice")) as http:
        first, again = upload(http, zip_path), upload(http, zip_path)
        other = upload(http, make_zip("b"))      # the duplicate took no slot of the two
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert again.json()["id"] == first.json()["id"]
    with arena.app.state.db.session() as session:
        outcomes = session.scalars(select(UploadAttempt.outcome).order_by(UploadAttempt.id)).all()
    assert outcomes == ["accepted", "duplicate", "accepted"]


def test_a_token_use_is_written_at_most_once_a_minute(start_arena):
    arena = start_arena()
    token = arena.user("alice")

    def last_used():
        with arena.app.state.db.session() as session:
            return session.scalars(select(ApiToken.last_used_at)).one()
    with arena.http(token) as http:
        assert http.get("/api/v1/submissions").status_code == 200
        first = last_used()
        assert first is not None
        assert http.get("/api/v1/submissions").status_code == 200
        assert last_used() == first                    # a read within the minute writes nothing
        with arena.app.state.db.session() as session, session.begin():
            session.execute(update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
        assert http.get("/api/v1/submissions").status_code == 200
        assert as_utc(last_used()) > as_utc(first) - timedelta(seconds=1)   # older than a minute: written


def test_the_rate_limit_runs_before_validation_and_counts_refusals(start_arena, make_zip):
    arena = start_arena(upload_rate_limit=2, upload_rate_window_s=600, daily_quota=100, max_concurrent=10)
    bad = make_zip("bad", dockerfile_from="debian:12")
    with arena.http(arena.user("alice")) as http:
        assert [upload(http, bad).status_code for _ in range(2)] == [422, 422]
        limited = upload(http, bad)          # invalid, but refused before anyone looked inside
        valid = upload(http, make_zip("ok"))  # valid, refused all the same
    for answer in (limited, valid):
        assert answer.status_code == 429 and error(answer)["code"] == "rate_limited"
        assert error(answer)["details"][0]["rule"] == "upload_rate_limit"
        assert error(answer)["details"][0]["value"] == 2
        assert 0 < int(answer.headers["Retry-After"]) <= 600
    assert arena.bucket_files() == []
    with arena.http(arena.user("bob")) as other:      # per user
        assert upload(other, make_zip("ok")).status_code == 202


def test_two_racing_uploads_cannot_both_take_the_last_slot(start_arena, make_zip):
    arena = start_arena(daily_quota=1, max_concurrent=10)
    token = arena.user("alice")
    zips = [make_zip("r1"), make_zip("r2")]
    answers = []

    def go(path):
        with arena.http(token) as http:
            answers.append(upload(http, path).status_code)
    threads = [threading.Thread(target=go, args=(z,)) for z in zips]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [202, 429]


# -- request limits ---------------------------------------------------------------------------------
def multipart(boundary: str, parts: list[tuple[str, bytes, dict]]) -> bytes:
    out = b""
    for name, value, extra in parts:
        headers = f'Content-Disposition: form-data; name="{name}"'
        headers += "".join(f"\r\n{k}: {v}" for k, v in extra.items())
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_the_number_of_multipart_parts_is_bounded(start_arena, make_zip):
    arena = start_arena(max_multipart_parts=3)
    boundary = uuid.uuid4().hex
    body = multipart(boundary, [(f"f{i}", b"x", {}) for i in range(20)] + [("file", make_zip().read_bytes(), {})])
    with arena.http(arena.user("alice")) as http:
        answer = http.post("/api/v1/submissions", content=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413 and error(answer)["code"] == "too_many_parts"
    assert error(answer)["details"][0] | {"message": ""} == {"rule": "max_multipart_parts", "value": 3, "message": ""}
    assert arena.bucket_files() == []


def test_multipart_part_headers_are_bounded(start_arena, make_zip):
    arena = start_arena(max_header_bytes=4096)
    boundary = uuid.uuid4().hex
    body = multipart(boundary, [("file", make_zip().read_bytes(), {"X-Padding": "p" * 100_000})])
    with arena.http(arena.user("alice")) as http:
        answer = http.post("/api/v1/submissions", content=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 431 and error(answer)["code"] == "part_headers_too_large"
    assert error(answer)["details"][0]["rule"] == "max_header_bytes"
    assert error(answer)["details"][0]["value"] == 4096


def test_request_headers_are_bounded(start_arena):
    arena = start_arena(max_header_bytes=4096)
    with arena.http(arena.user("alice")) as http:
        ok = http.get("/api/v1/submissions")
        big = http.get("/api/v1/submissions", headers={"X-Padding": "p" * 6000})
    assert ok.status_code == 200
    assert big.status_code == 431 and error(big)["code"] == "headers_too_large"
    assert "max_header_bytes = 4096" in error(big)["message"]


def test_the_total_body_is_bounded_declared_or_streamed(start_arena):
    arena = start_arena(max_request_bytes=50_000)
    token = arena.user("alice")
    boundary = uuid.uuid4().hex
    body = multipart(boundary, [("challenge", b"c" * 40_000, {}), ("note", b"n" * 40_000, {})])
    ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    with arena.http(token) as http:
        declared = http.post("/api/v1/submissions", content=body, headers=ctype)

        def chunks():  # no Content-Length: counted while it streams
            for i in range(0, len(body), 8192):
                yield body[i:i + 8192]
        streamed = http.post("/api/v1/submissions", content=chunks(), headers=ctype)
        form = http.post("/login/token", content=b"token=" + b"a" * 60_000,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    for answer in (declared, streamed, form):
        assert answer.status_code == 413, answer.text
        assert error(answer)["details"][0] | {"message": ""} == {"rule": "max_request_bytes", "value": 50_000,
                                                                  "message": ""}


# -- WebSockets -------------------------------------------------------------------------------------
def ws_url(arena, sid: str, token: str) -> str:
    return arena.url.replace("http", "ws", 1) + f"/api/v1/submissions/{sid}/logs?token={token}"


def test_log_sockets_are_limited_per_user(start_arena, make_zip):
    arena = start_arena(ws_per_user=2)
    token = arena.user("alice")
    with arena.http(token) as http:
        sid = upload(http, make_zip()).json()["id"]
    stack = ExitStack()
    first = stack.enter_context(connect(ws_url(arena, sid, token)))
    stack.enter_context(connect(ws_url(arena, sid, token)))
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(arena, sid, token), open_timeout=10)
        assert refused.value.response.status_code == 429
        body = json.loads(refused.value.response.body)["error"]
        assert body["code"] == "too_many_sockets" and "ws_per_user = 2" in body["message"]
        bob = arena.user("bob")                       # another user is not affected: own count
        with arena.http(bob) as http:
            bob_sid = upload(http, make_zip("bob")).json()["id"]
        with connect(ws_url(arena, bob_sid, bob)):
            pass
    finally:
        first.close()
    deadline = time.monotonic() + 10
    while True:                                        # a slot frees once a socket closes
        try:
            with connect(ws_url(arena, sid, token), open_timeout=10):
                break
        except InvalidStatus:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    stack.close()


def test_a_log_socket_ends_at_its_lifetime(start_arena, make_zip):
    arena = start_arena(ws_max_lifetime_s=1)
    token = arena.user("alice")
    with arena.http(token) as http:
        sid = upload(http, make_zip()).json()["id"]
    started = time.monotonic()
    with connect(ws_url(arena, sid, token)) as ws:
        messages = [json.loads(m) for m in ws]         # ends when the server closes it
    assert messages[-1]["closed"] == "lifetime" and messages[-1]["rule"] == "ws_max_lifetime_s"
    assert messages[-1]["value"] == 1
    assert messages[0]["status"] == "queued"           # it did stream before the end
    assert 1 <= time.monotonic() - started < 10


def test_the_client_follows_logs_across_socket_lifetimes(start_arena, make_zip):
    from intake.client import ArenaClient

    arena = start_arena(ws_max_lifetime_s=1)
    token = arena.user("alice")
    with arena.http(token) as http:
        sid = upload(http, make_zip()).json()["id"]
    arena.bucket.append_log(sid, "build", "line one")

    def later():
        time.sleep(2.5)   # two socket lifetimes later
        arena.bucket.append_log(sid, "build", "line two")
        arena.bucket.set_status(sid, "success")
    threading.Thread(target=later, daemon=True).start()
    with ArenaClient(arena.url, token) as client:
        events = list(client.logs(sid, follow=True))
    assert [e["line"].split(" ", 1)[1] for e in events if "line" in e] == ["line one", "line two"]
    assert events[-1]["status"] == "success" and events[-1]["final"] is True


# -- the secret key ---------------------------------------------------------------------------------
def test_the_stored_secret_key_is_made_once_atomically_and_private(tmp_path):
    keys = []
    threads = [threading.Thread(target=lambda: keys.append(stored_secret_key(tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys[0]) >= 32      # every racer read the one complete key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]   # no temporary file left


@pytest.mark.parametrize("bad", ["", "   \n", "short-key"])
def test_an_empty_or_short_secret_key_is_refused_at_startup(tmp_path, bad):
    (tmp_path / "secret_key").write_text(bad)
    with pytest.raises(ValueError, match="at least 32"):
        Settings.from_env({"ARENA_HOME": str(tmp_path)})
    with pytest.raises(ValueError, match="secret_key_length"):
        Settings.from_env({"ARENA_HOME": str(tmp_path / "other"), "ARENA_SECRET_KEY": bad or "x"})
    with pytest.raises(ValueError):
        check_secret_key(bad)


def test_admin_emails_are_refused_with_the_way_to_grant_admin(tmp_path):
    with pytest.raises(ValueError, match="set-admin"):
        Settings.from_env({"ARENA_HOME": str(tmp_path), "ARENA_ADMIN_EMAILS": "boss@example.org"})


# -- Prometheus metrics -----------------------------------------------------------------------------
def scrape(arena, token: str | None = "metrics-token") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{arena.url}/metrics", headers=headers, timeout=30)


def sample(text: str, name: str, **labels) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_metrics_count_uploads_refusals_by_rule_and_the_queue(start_arena, make_zip):
    arena = start_arena(metrics_token="metrics-token", upload_rate_limit=3, upload_rate_window_s=600,
                        daily_quota=100, max_concurrent=10, max_request_bytes=200_000)
    with arena.http(arena.user("alice")) as http:
        assert upload(http, make_zip("a")).status_code == 202
        assert upload(http, make_zip("a")).status_code == 200
        assert upload(http, make_zip("bad", dockerfile_from="debian:12")).status_code == 422
        assert upload(http, make_zip("b")).status_code == 429            # the rate limit
        big = http.post("/api/v1/submissions", content=b"x" * 300_000,
                        headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert big.status_code == 413
    sid = next(arena.bucket.markers()).id
    text = scrape(arena).text
    assert sample(text, "arena_uploads_total", outcome="accepted") == 1
    assert sample(text, "arena_uploads_total", outcome="duplicate") == 1
    assert sample(text, "arena_uploads_total", outcome="refused") == 2
    assert sample(text, "arena_refusals_total", rule="dockerfile.from_not_allowed", status="422") == 1
    assert sample(text, "arena_refusals_total", rule="upload_rate_limit", status="429") == 1
    assert sample(text, "arena_refusals_total", rule="max_request_bytes", status="413") == 1
    assert sample(text, "arena_queue_depth", queue="cpu", status="queued") == 1
    assert sample(text, "arena_queue_oldest_seconds", queue="cpu") >= 0
    arena.bucket.set_status(sid, "running")
    text = scrape(arena).text
    assert sample(text, "arena_queue_depth", queue="cpu", status="queued") == 0
    assert sample(text, "arena_queue_depth", queue="cpu", status="running") == 1


def test_metrics_need_the_metrics_token(start_arena):
    closed = start_arena()
    assert scrape(closed).status_code == 404                          # off without ARENA_METRICS_TOKEN
    arena = start_arena(metrics_token="metrics-token")
    assert scrape(arena, None).status_code == 401
    assert scrape(arena, "wrong").status_code == 401
    assert scrape(arena).status_code == 200
