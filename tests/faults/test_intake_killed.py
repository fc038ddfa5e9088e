"""Kill intake mid-upload: no marker, no zip in the bucket, and the same upload succeeds once afterwards."""
from __future__ import annotations

import socket
import time
import uuid

import httpx

from faultkit import bucket_files, make_user, make_zip, wait_for

PAD = 4 * 1024 * 1024  # incompressible bytes in the zip: the upload is several MiB


def multipart(zip_bytes: bytes) -> tuple[bytes, bytes]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.zip\"\r\n"
            f"Content-Type: application/zip\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return boundary.encode(), head + zip_bytes + tail


def test_intake_killed_mid_upload_leaves_nothing_and_the_retry_is_accepted_once(intake_process, tmp_path):
    intake = intake_process()
    token = make_user(intake.database_url, "alice")
    zip_file = make_zip(tmp_path, "killed", padding=PAD)
    boundary, body = multipart(zip_file.read_bytes())
    spool = intake.home / "tmp"   # where intake streams an upload before validating it

    # a slow upload: headers and the first half of the body, then it stalls
    sock = socket.create_connection(("127.0.0.1", intake.port), timeout=30)
    sock.sendall(f"POST /api/v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                 f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    half = len(body) // 2
    for i in range(0, half, 64 * 1024):
        sock.sendall(body[i:min(i + 64 * 1024, half)])
    # intake is mid-upload: its spool file holds part of the zip
    wait_for(lambda: any(p.stat().st_size > PAD // 4 for p in spool.glob("upload-*")) if spool.exists() else False,
             60, "intake to spool part of the upload")

    intake.kill()
    sock.close()
    left = [p.name for p in spool.glob("upload-*.zip")]
    assert left, "the killed intake left its partial spool file (what the restart sweeps)"

    # nothing was handed over: no marker (the sensor's only input), no zip, no status, no lake row
    assert list(intake.bucket.markers()) == []
    assert intake.bucket.marker_keys() == []
    assert [f for f in bucket_files(intake.home / "bucket") if f.startswith(("incoming/", "status/"))] == []
    assert not list((intake.home / "lake").rglob("*.parquet"))

    # a restarted intake (same home, same database) sweeps the dead upload's spool file at startup
    # (older than ARENA_SWEEP_AGE_S) and takes the same upload, once
    time.sleep(1.5)
    intake.extra_env = {"ARENA_SWEEP_AGE_S": "1"}
    intake.start()
    wait_for(lambda: not any(p.name in left for p in spool.glob("upload-*.zip")), 30,
             f"the startup sweep to remove {left}")
    with httpx.Client(base_url=intake.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        first = http.post("/api/v1/submissions", files={"file": ("s.zip", zip_file.read_bytes(), "application/zip")})
        assert first.status_code == 202, first.text
        again = http.post("/api/v1/submissions", files={"file": ("s.zip", zip_file.read_bytes(), "application/zip")})
        assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
        assert again.json()["id"] == first.json()["id"]
        listed = http.get("/api/v1/submissions").json()["items"]
    sid = first.json()["id"]
    assert [m.id for m in intake.bucket.markers()] == [sid]
    assert [i["id"] for i in listed] == [sid]
    incoming = [f for f in bucket_files(intake.home / "bucket") if f.startswith("incoming/")]
    assert incoming == [f"incoming/efficient-decode/{sid}.json", f"incoming/efficient-decode/{sid}.zip"]
    assert intake.bucket.read_zip("efficient-decode", sid) == zip_file.read_bytes()
