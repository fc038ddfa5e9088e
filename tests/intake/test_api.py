"""The REST API over a real uvicorn server, on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

from intake.cli import main as arena_main
from intake.client import ArenaClient
from intake.models import Submission
from lake.bucket import Marker
from lake.tables import Lake

REPO = Path(__file__).resolve().parents[2]


def upload(client: httpx.Client, path: Path, **data) -> httpx.Response:
    with open(path, "rb") as fh:
        return client.post("/api/v1/submissions", files={"file": (path.name, fh, "application/zip")}, data=data)


def submission_rows(arena) -> int:
    with arena.app.state.db.session() as session:
        return session.scalar(select(func.count()).select_from(Submission))


def test_upload_lands_zip_marker_and_status_in_the_bucket(arena, make_zip):
    token = arena.user("alice")
    zip_path = make_zip("a")
    with arena.http(token) as http:
        answer = upload(http, zip_path)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        sid = body["id"]
        assert body["status"] == "queued" and body["challenge"] == "efficient-decode"
        assert set(body["urls"]) >= {"self", "logs", "web"}

        assert arena.bucket.read_zip("efficient-decode", sid) == zip_path.read_bytes()
        marker = Marker.from_dict(arena.bucket.storage.get_json(arena.bucket.marker_key("efficient-decode", sid)))
        assert (marker.id, marker.user, marker.challenge) == (sid, "alice", "efficient-decode")
        assert arena.bucket.status(sid)["status"] == "queued"
        assert Lake(arena.settings.lake).storage.exists(Lake.submission_key("efficient-decode", sid))

        detail = http.get(f"/api/v1/submissions/{sid}").json()
        assert detail["status"] == "queued" and detail["result"] is None and "queued" in detail["timings"]
        assert [s["id"] for s in http.get("/api/v1/submissions").json()["items"]] == [sid]


def test_status_and_result_come_from_orchestration(arena, make_zip):
    token = arena.user("alice")
    with arena.http(token) as http:
        sid = upload(http, make_zip("a")).json()["id"]
        arena.bucket.set_status(sid, "building")
        assert http.get(f"/api/v1/submissions/{sid}").json()["status"] == "building"
        arena.bucket.set_status(sid, "rejected", reason="accuracy")
        detail = http.get(f"/api/v1/submissions/{sid}").json()
        assert (detail["status"], detail["reason"]) == ("rejected", "accuracy")
        assert set(detail["timings"]) == {"queued", "building", "rejected"}


def test_rejected_upload_leaves_nothing_behind(arena, tmp_path):
    token = arena.user("alice")
    not_a_zip = tmp_path / "notes.zip"
    not_a_zip.write_text("this is not a zip archive")
    with arena.http(token) as http:
        answer = upload(http, not_a_zip)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "submission_rejected"
    assert [d["rule"] for d in error["details"]] == ["zip.not_a_zip"]
    assert arena.bucket_files() == []
    assert submission_rows(arena) == 0
    assert not (arena.settings.lake / "submissions").exists()
    assert list((arena.settings.home / "tmp").iterdir()) == []  # the upload's temp file is gone


def test_every_problem_is_listed(arena, make_zip):
    token = arena.user("alice")
    bad = make_zip("bad", dockerfile_from="ubuntu:24.04")
    with arena.http(token) as http:
        answer = upload(http, bad)
    assert answer.status_code == 422
    details = answer.json()["error"]["details"]
    assert "dockerfile.from_not_allowed" in [d["rule"] for d in details]
    assert any("ubuntu:24.04" in str(d["value"]) for d in details)
    assert arena.bucket_files() == []


def test_unknown_challenge_is_refused(arena, make_zip):
    token = arena.user("alice")
    with arena.http(token) as http:
        answer = upload(http, make_zip("a"), challenge="no-such-challenge")
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "unknown_challenge"
    assert arena.bucket_files() == []


def test_oversized_upload_is_refused_with_413(start_arena, make_zip, tmp_path):
    arena = start_arena(max_upload_bytes=4096)
    token = arena.user("alice")
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(200_000))
    with arena.http(token) as http:
        answer = upload(http, big)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"
    assert arena.bucket_files() == []


def test_size_cap_holds_while_streaming_without_content_length(start_arena, tmp_path):
    arena = start_arena(max_upload_bytes=4096)
    token = arena.user("alice")
    boundary = uuid.uuid4().hex

    def body():  # chunked: the server cannot know the size up front
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.zip\"\r\n"
               "Content-Type: application/zip\r\n\r\n").encode()
        for _ in range(50):
            yield os.urandom(4096)
        yield f"\r\n--{boundary}--\r\n".encode()

    with arena.http(token) as http:
        answer = http.post("/api/v1/submissions", content=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413
    assert arena.bucket_files() == []
    assert list((arena.settings.home / "tmp").iterdir()) == []


def test_authentication_is_required(arena, make_zip):
    arena.user("alice")
    with arena.http() as http:
        assert upload(http, make_zip("a")).status_code == 401
        answer = http.get("/api/v1/submissions")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    with arena.http("arena_not-a-real-token") as http:
        assert http.get("/api/v1/submissions").status_code == 401
    assert arena.bucket_files() == []


def test_users_see_only_their_own_submissions_admins_see_all(arena, make_zip):
    alice, bob, admin = arena.user("alice"), arena.user("bob"), arena.user("root", admin=True)
    with arena.http(alice) as http:
        sid = upload(http, make_zip("a")).json()["id"]
    with arena.http(bob) as http:
        answer = http.get(f"/api/v1/submissions/{sid}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        assert http.get("/api/v1/submissions").json()["items"] == []
        assert http.get("/api/v1/submissions", params={"all": "true"}).json()["items"] == []
        assert http.post(f"/api/v1/admin/submissions/{sid}/rerun").status_code == 403
    with arena.http(admin) as http:
        assert http.get(f"/api/v1/submissions/{sid}").json()["user"] == "alice"
        assert [s["id"] for s in http.get("/api/v1/submissions", params={"all": "true"}).json()["items"]] == [sid]
        rerun = http.post(f"/api/v1/admin/submissions/{sid}/rerun")
        assert rerun.status_code == 202
    assert [r["requested_by"] for r in arena.bucket.reruns()] == ["root"]


def test_the_same_zip_twice_is_the_same_submission(arena, make_zip):
    token = arena.user("alice")
    zip_path = make_zip("a")
    with arena.http(token) as http:
        first = upload(http, zip_path)
        second = upload(http, zip_path)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"] and second.json()["duplicate"] is True
    assert submission_rows(arena) == 1
    assert len(list(arena.bucket.markers())) == 1


def test_the_same_zip_from_two_users_is_two_submissions(arena, make_zip):
    zip_path = make_zip("a")
    ids = set()
    for name in ("alice", "bob"):
        with arena.http(arena.user(name)) as http:
            ids.add(upload(http, zip_path).json()["id"])
    assert len(ids) == 2


def test_daily_quota_answers_429_with_retry_after(start_arena, make_zip):
    arena = start_arena(daily_quota=2, max_concurrent=10)
    token = arena.user("alice")
    with arena.http(token) as http:
        codes = [upload(http, make_zip(m)).status_code for m in "aab"]
        assert codes == [202, 200, 202]  # the duplicate answered 200 gave its quota slot back
        answer = upload(http, make_zip("c"))
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "quota_exceeded"
    assert 0 < int(answer.headers["Retry-After"]) <= 24 * 3600
    assert len(list(arena.bucket.markers())) == 2


def test_unfinished_submissions_are_capped(start_arena, make_zip):
    arena = start_arena(daily_quota=10, max_concurrent=1)
    token = arena.user("alice")
    with arena.http(token) as http:
        first = upload(http, make_zip("a")).json()["id"]
        refused = upload(http, make_zip("b"))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_unfinished"
        assert int(refused.headers["Retry-After"]) > 0
        arena.bucket.set_status(first, "success")
        assert upload(http, make_zip("b")).status_code == 202


def test_errors_have_one_shape(arena):
    token = arena.user("alice")
    with arena.http(token) as http:
        for answer in (http.get("/api/v1/submissions/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                       http.get("/api/v1/nowhere"),
                       http.get("/api/v1/submissions", params={"limit": "-3"}),
                       http.post("/api/v1/submissions", content=b"x", headers={"Content-Type": "text/plain"}),
                       http.get("/api/v1/leaderboard/no-such-challenge")):
            assert 400 <= answer.status_code < 500
            assert set(answer.json()["error"]) == {"code", "message", "details"}


def test_leaderboard_and_health_are_public(arena):
    with arena.http() as http:
        board = http.get("/api/v1/leaderboard/efficient-decode")
        assert board.status_code == 200 and board.json() == {"challenge": "efficient-decode", "rows": []}
        health = http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


def test_cli_submit_status_logs_against_the_server(arena, make_source, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARENA_URL", arena.url)
    monkeypatch.setenv("ARENA_TOKEN", arena.user("alice"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    src = make_source(tmp_path / "mine", arena_toml='display_name = "Alice\'s decoder"\n')

    assert arena_main(["submit", str(src)]) == 0
    sid = capsys.readouterr().out.split()[0]
    assert arena.bucket.marker(sid).display_name == "Alice's decoder"

    assert arena_main(["submit", str(src)]) == 0  # same directory, same bytes: the same submission
    assert capsys.readouterr().out.startswith(f"{sid} queued (already submitted")

    arena.bucket.append_log(sid, "build", "Step 1/3 : FROM arena/python-cpu:1")
    assert arena_main(["logs", sid]) == 0
    assert "[build]" in capsys.readouterr().out

    assert arena_main(["status", sid]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"

    assert arena_main(["status", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]) == 1
    assert capsys.readouterr().err.startswith("error: not_found: ")


def test_client_reports_upload_progress_up_to_the_whole_zip(arena, make_source, tmp_path):
    src = make_source(tmp_path / "mine")
    seen = []
    with ArenaClient(arena.url, arena.user("alice")) as client:
        answer = client.submit(src, on_progress=lambda sent, total: seen.append((sent, total)))
    assert answer["status"] == "queued"
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


def test_cli_prints_every_problem_and_exits_1(arena, make_source, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARENA_URL", arena.url)
    monkeypatch.setenv("ARENA_TOKEN", arena.user("alice"))
    src = make_source(tmp_path / "mine", dockerfile_from="python:3.12")
    (src / "requirements.txt").unlink()
    assert arena_main(["submit", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: submission_rejected: ")
    assert "dockerfile.from_not_allowed" in err and "files.missing" in err


def test_cli_console_script_and_login(arena, make_source, tmp_path):
    """The installed `arena` script, a stored login (0600), and create-user straight on the database."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "ARENA_HOME": str(arena.settings.home),
           "ARENA_DATABASE_URL": arena.settings.database_url}
    env.pop("ARENA_URL", None), env.pop("ARENA_TOKEN", None)
    arena_bin = Path(sys.executable).parent / "arena"
    made = subprocess.run([arena_bin, "admin", "create-user", "carol"], env=env, capture_output=True, text=True,
                          check=True)
    token = made.stdout.strip()
    assert token.startswith("arena_")

    login = subprocess.run([arena_bin, "login", "--url", arena.url, "--token", token], env=env,
                           capture_output=True, text=True)
    assert login.returncode == 0, login.stderr
    stored = tmp_path / "config" / "arena" / "config.toml"
    assert stored.stat().st_mode & 0o777 == 0o600

    src = tmp_path / "sub"
    make_source(src)
    submitted = subprocess.run([arena_bin, "submit", str(src)], env=env, capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    sid = submitted.stdout.split()[0]
    assert arena.bucket.marker(sid).user == "carol"

    board = subprocess.run([arena_bin, "leaderboard"], env=env, capture_output=True, text=True)
    assert board.returncode == 0 and "efficient-decode" in board.stdout


def test_logs_stream_history_then_new_lines_then_the_final_status(arena, make_zip):
    import threading
    from intake.client import ArenaClient

    token = arena.user("alice")
    with arena.http(token) as http:
        sid = upload(http, make_zip("a")).json()["id"]
    arena.bucket.set_status(sid, "building")
    arena.bucket.append_log(sid, "build", "history line")
    seen = []
    events = iter(ArenaClient(arena.url, token).logs(sid, follow=True))
    seen.append(next(events))  # history arrives before anything new is written

    def orchestrate():
        arena.bucket.append_log(sid, "build", "built")
        arena.bucket.set_status(sid, "running")
        arena.bucket.append_log(sid, "run", "ready")
        arena.bucket.set_status(sid, "success")
    threading.Thread(target=orchestrate).start()
    seen += list(events)
    lines = [(e["phase"], e["line"].split(" ", 1)[1]) for e in seen if "line" in e]
    assert lines == [("build", "history line"), ("build", "built"), ("run", "ready")]
    statuses = [e for e in seen if "status" in e]
    assert statuses[0]["status"] == "building" and statuses[-1] == {"status": "success", "reason": None,
                                                                      "final": True}


def test_logs_socket_refuses_strangers(arena, make_zip):
    from intake.client import ArenaClient, ArenaError
    import pytest

    with arena.http(arena.user("alice")) as http:
        sid = upload(http, make_zip("a")).json()["id"]
    for token, code in ((arena.user("bob"), "not_found"), ("arena_wrong", "unauthorized")):
        with pytest.raises(ArenaError) as refused:
            list(ArenaClient(arena.url, token).logs(sid, follow=True))
        assert refused.value.code == code


def test_intake_configured_from_the_environment_serves_storage_urls(tmp_path, make_zip):
    """ARENA_BUCKET_URL / ARENA_LAKE_URL are storage URLs (lake/storage.py): intake starts on them,
    reports a healthy bucket, and hands an upload over through them."""
    from intake_servers import free_socket, serve
    from intake.app import create_app
    from intake.config import Settings
    from intake.security import create_user

    home = tmp_path / "env-home"
    settings = Settings.from_env({"ARENA_HOME": str(home), "ARENA_SECRET_KEY": "s" * 40,
                                  "ARENA_BUCKET_URL": f"file://{tmp_path / 'b'}",
                                  "ARENA_LAKE_URL": f"file://{tmp_path / 'l'}"})
    assert isinstance(settings.bucket, str) and settings.bucket.startswith("file://")
    sock = free_socket()
    app = create_app(settings)
    with serve(app, sock):
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert httpx.get(f"{url}/healthz").json()["checks"]["bucket"] == "ok"
        with app.state.db.session() as session, session.begin():
            _, token = create_user(session, "alice")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            answer = upload(http, make_zip("env"))
    assert answer.status_code == 202, answer.text
    assert (tmp_path / "b" / "incoming" / "efficient-decode" / f"{answer.json()['id']}.json").exists()
