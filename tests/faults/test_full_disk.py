"""A full disk under the lake: writes fail with ENOSPC, no partial Parquet is ever visible, readers keep
the old state, and the evaluation surfaces it as a platform failure (never a participant's failure).

The lake root is a size-limited tmpfs mounted by the test (root only; CI runs as root)."""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from lake.bucket import Bucket, Marker
from lake.operator import OperatorStore
from lake.tables import Lake
from lake.views import connect
from lake.vocabulary import utc_iso
from orchestration.evaluation import Collaborators, evaluate_submission
from orchestration.sensors import close_unfinished
from sandbox.config import SandboxSettings

CHALLENGE = "efficient-decode"
SIZE = 4 * 1024 * 1024


@pytest.fixture
def small_disk():
    """A 4 MiB tmpfs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where = Path(tempfile.mkdtemp(prefix="arena-faults-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` until at most ``leave`` bytes are free; returns the filler (delete it to free)."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as fh:
        try:
            while True:
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                if free <= leave:
                    break
                fh.write(chunk[:max(4096, min(len(chunk), free - leave))])
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def every_file(root: Path) -> set[str]:
    """Everything on disk under the lake, hidden temporaries included."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def request_rows(sid: str, n: int) -> list[dict]:
    # random-looking values, so that Parquet cannot compress the file below the free space
    rows = []
    for i in range(n):
        v = int.from_bytes(os.urandom(7), "little")
        rows.append({"run": "timed-1", "request_id": f"{sid}-r{i}-{v:x}", "prompt_index": i, "prompt_set": None,
                     "sent_ns": v, "first_token_ns": v + 1, "done_ns": v + 2, "ttft_ms": v / 1e9,
                     "tpot_ms": v / 3e9, "latency_ms": v / 7e9, "tokens": i, "correct_tokens": i,
                     "expected_tokens": i})
    return rows


def submission_row(sid: str) -> dict:
    return {"id": sid, "challenge": CHALLENGE, "user": "alice", "display_name": "alice", "sha256": "0" * 64,
            "created_at": utc_iso(), "size_bytes": 1}


def test_a_full_lake_disk_fails_writes_cleanly_and_readers_keep_the_old_state(small_disk):
    lake = Lake(small_disk / "lake")
    old, new = "01JFULLDISK00000000000OLD0", "01JFULLDISK00000000000NEW0"
    lake.write_submission(submission_row(old))
    lake.write_requests(CHALLENGE, old, 1, request_rows(old, 50))
    before = every_file(small_disk / "lake")

    filler = fill(small_disk, leave=64 * 1024)       # room for a little, not for the new file
    with pytest.raises(OSError) as raised:
        lake.write_requests(CHALLENGE, new, 1, request_rows(new, 20000))
    assert raised.value.errno == errno.ENOSPC       # the error says what happened: no space left on device
    fill(small_disk, leave=0)
    for write in (lambda: lake.write_submission(submission_row(new)),
                  lambda: lake.write_requests(CHALLENGE, new, 1, request_rows(new, 10))):
        with pytest.raises(OSError) as raised:
            write()
        assert raised.value.errno == errno.ENOSPC

    # no partial file, no temporary left behind: the lake holds exactly what it held before
    assert every_file(small_disk / "lake") == before
    assert lake.read_run("requests", CHALLENGE, new, 1) is None
    con = connect(lake)
    assert con.execute("SELECT id FROM submissions").fetchall() == [(old,)]
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (50,)

    # space again: the same writes succeed, whole
    filler.unlink()
    (small_disk / "filler").unlink(missing_ok=True)
    lake.write_submission(submission_row(new))
    lake.write_requests(CHALLENGE, new, 1, request_rows(new, 20000))
    con = connect(lake)
    assert sorted(r[0] for r in con.execute("SELECT id FROM submissions").fetchall()) == sorted([old, new])
    assert con.execute("SELECT count(*) FROM requests WHERE submission_id = ?", [new]).fetchone() == (20000,)


def test_a_full_lake_disk_is_a_platform_failure_not_the_participants(small_disk, tmp_path, monkeypatch):
    bucket_root = tmp_path / "bucket"                 # the bucket is elsewhere: only the lake's disk is full
    monkeypatch.setenv("ARENA_BUCKET_URL", f"file://{bucket_root}")
    monkeypatch.setenv("ARENA_LAKE_URL", f"file://{small_disk / 'lake'}")
    bucket, lake = Bucket(bucket_root), Lake(small_disk / "lake")
    sid = "01JFULLDISKEVALUATION00001"
    bucket.storage.put_json(Bucket.marker_key(CHALLENGE, sid),
                            Marker(id=sid, challenge=CHALLENGE, user="alice", sha256="0" * 64,
                                   created_at=utc_iso()).__dict__)
    bucket.set_status(sid, "building")
    # a build that failed: the participant's outcome is failed/build, once the platform can store it
    image = {"ok": False, "challenge": CHALLENGE, "tag": None, "image_id": None, "base_image": "arena/python-cpu:1",
             "error": "the Dockerfile's RUN step exited 1"}
    settings = SandboxSettings.from_env()
    c = Collaborators(bucket=bucket, lake=lake, operator=OperatorStore(tmp_path / "operator"),
                      models_dir=tmp_path / "models", settings=settings,
                      devices={"cpuset": settings.cpuset, "gpus": []})

    filler = fill(small_disk, leave=0)
    with pytest.raises(OSError) as raised:            # the run fails: Dagster retries it (platform failure)
        evaluate_submission(sid, image, c)
    assert raised.value.errno == errno.ENOSPC
    assert lake.read_result(CHALLENGE, sid) is None   # nothing half-stored, no participant verdict
    assert bucket.status(sid)["status"] == "building"
    assert not [f for f in every_file(small_disk / "lake")]

    # retries exhausted: the run-failure sensor closes it as failed/platform, naming the error
    close_unfinished(sid, f"platform error after 3 attempt(s): {raised.value}")
    status = bucket.status(sid)
    assert (status["status"], status["reason"]) == ("failed", "platform")
    assert "No space left on device" in status["detail"]

    # a retry once space is back stores the participant's real outcome, whole
    filler.unlink()
    stored = evaluate_submission(sid, image, c)
    assert (stored.result["status"], stored.result["reason"]) == ("failed", "build")
    assert lake.read_result(CHALLENGE, sid)["status"] == "failed"
    assert (bucket.status(sid)["status"], bucket.status(sid)["reason"]) == ("failed", "build")
