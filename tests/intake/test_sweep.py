"""What a killed intake or a lost commit answer leaves behind is swept (Submissions.sweep), nothing else."""
from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import select
from ulid import ULID

from intake.models import Submission, User, utcnow


def test_the_sweep_removes_old_spool_files_and_unacknowledged_rows_only(arena, make_zip):
    token = arena.user("alice")
    with arena.http(token) as http:
        accepted = http.post("/api/v1/submissions", files={"file": ("s.zip", make_zip("1").read_bytes())})
        assert accepted.status_code == 202, accepted.text
    subs = arena.app.state.submissions
    hour_ago = utcnow() - timedelta(hours=2)
    with arena.app.state.db.session() as session, session.begin():
        user = session.scalar(select(User).where(User.name == "alice"))
        # rows whose commit went through while accept() withdrew marker, zip and status (the client got a 5xx)
        old, young = str(ULID()), str(ULID())
        session.add(Submission(id=old, user_id=user.id, challenge="efficient-decode", sha256="a" * 64,
                               display_name="x", size_bytes=1, created_at=hour_ago))
        session.add(Submission(id=young, user_id=user.id, challenge="efficient-decode", sha256="b" * 64,
                               display_name="x", size_bytes=1, created_at=utcnow()))
        # an accepted submission, as old: it has its marker and status, so it stays
        session.get(Submission, accepted.json()["id"]).created_at = hour_ago
    spool = arena.settings.home / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    dead, live = spool / "upload-dead.zip", spool / "upload-live.zip"
    dead.write_bytes(b"half an upload")
    live.write_bytes(b"an upload in progress")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))

    removed = subs.sweep(older_than_s=3600)

    assert removed == {"spool_files": ["upload-dead.zip"], "orphan_rows": [old]}
    assert not dead.exists() and live.exists()
    with arena.app.state.db.session() as session:
        assert sorted(session.scalars(select(Submission.id))) == sorted([accepted.json()["id"], young])
    with arena.http(token) as http:
        listed = [i["id"] for i in http.get("/api/v1/submissions").json()["items"]]
    assert old not in listed and accepted.json()["id"] in listed
    assert subs.sweep(older_than_s=3600) == {"spool_files": [], "orphan_rows": []}     # idempotent
