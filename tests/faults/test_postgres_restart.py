"""PostgreSQL restarts while uploads go on: intake reconnects, and no upload is lost or duplicated.

The cluster is the test's own (initdb + pg_ctl on a free port), never the shared one."""
from __future__ import annotations

import threading
import time

import httpx
import psycopg

from lake.tables import Lake

from faultkit import make_user, make_zip, wait_for

UPLOADERS = 2
PER_UPLOADER = 5
RETRY_FOR_S = 120


def upload_until_answered(url: str, token: str, zip_bytes: bytes, log: list) -> dict:
    """What a client does: retry on a connection error or a 5xx until intake answers for real."""
    deadline = time.monotonic() + RETRY_FOR_S
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        while True:
            try:
                r = http.post("/api/v1/submissions", files={"file": ("s.zip", zip_bytes, "application/zip")})
                if r.status_code < 500:
                    log.append(r.status_code)
                    return r.json() | {"http": r.status_code}
                log.append(r.status_code)
            except httpx.TransportError as exc:
                log.append(type(exc).__name__)
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer within {RETRY_FOR_S} s: {log[-5:]}")
            time.sleep(0.3)


def test_uploads_survive_a_postgres_restart(pg_cluster, intake_process, tmp_path):
    intake = intake_process(database_url=pg_cluster.url)
    tokens = [make_user(pg_cluster.url, f"user{i}") for i in range(UPLOADERS)]
    zips = {(u, k): make_zip(tmp_path, f"{u}-{k}").read_bytes() for u in range(UPLOADERS) for k in range(PER_UPLOADER)}
    answers: dict = {}
    logs: dict = {u: [] for u in range(UPLOADERS)}
    errors: list = []

    def uploader(u: int):
        try:
            for k in range(PER_UPLOADER):
                answers[(u, k)] = upload_until_answered(intake.url, tokens[u], zips[(u, k)], logs[u])
        except BaseException as exc:   # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=uploader, args=(u,)) for u in range(UPLOADERS)]
    for t in threads:
        t.start()
    wait_for(lambda: len(answers) >= 2, 120, "the first uploads")
    during = len(answers)
    pg_cluster.restart()                        # pg_ctl restart -m fast: every connection is cut
    for t in threads:
        t.join(RETRY_FOR_S + 60)
    print("answers during the restart:", logs)
    assert not errors, errors
    assert during < len(zips), "the restart came after every upload: it tested nothing"

    # every upload answered, each with its own id; a retried one that got through is answered once
    assert len(answers) == len(zips)
    ids = {key: a["id"] for key, a in answers.items()}
    assert len(set(ids.values())) == len(zips), answers
    assert all(a["http"] in (200, 202) for a in answers.values()), answers

    # intake's database, the bucket and the lake agree: one row, one marker, one zip per upload
    with psycopg.connect(pg_cluster.url.replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT id, sha256 FROM submissions").fetchall()
    markers = list(intake.bucket.markers())
    assert sorted(r[0] for r in rows) == sorted(ids.values())
    assert sorted(m.id for m in markers) == sorted(ids.values())
    for m in markers:
        assert intake.bucket.has_zip(m.challenge, m.id)
    lake = Lake(intake.home / "lake")
    lake_rows = sorted(k.rsplit("/", 1)[1].removesuffix(".parquet") for k in lake.storage.list_after("submissions/"))
    assert lake_rows == sorted(ids.values())

    # and intake still works on the restarted cluster without being restarted itself
    after = upload_until_answered(intake.url, tokens[0], make_zip(tmp_path, "after").read_bytes(), [])
    assert after["http"] == 202
