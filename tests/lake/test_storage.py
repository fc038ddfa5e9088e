"""The storage interface on a local disk and on a real S3 server (moto), and the lake and bucket on S3."""
from __future__ import annotations

import fsspec
import pytest

from lake.bucket import Bucket, Marker
from lake.compaction import compact
from lake.leaderboard import build_leaderboard
from lake.storage import Storage
from lake.tables import Lake
from lake.views import connect
from tests.lake.test_compaction import requests
from tests.lake.test_lake import CHALLENGE, add
from tests.s3server import s3_server, s3_url  # noqa: F401


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "file":
        return Storage(f"file://{tmp_path}/store")
    fsspec.config.conf.clear()
    return Storage(request.getfixturevalue("s3_url"))


def test_the_storage_contract_holds_on_disk_and_on_s3(storage, tmp_path):
    storage.put("a/b/1.json", b'{"x": 1}')
    local = tmp_path / "big.bin"
    local.write_bytes(b"z" * 300_000)
    storage.put_file("a/c/2.bin", local)
    assert storage.get_json("a/b/1.json") == {"x": 1} and storage.size("a/c/2.bin") == 300_000
    assert storage.get_json("a/missing.json") is None
    with pytest.raises(FileNotFoundError):
        storage.get("a/missing.json")
    storage.append("logs/x.log", "one\n")
    storage.append("logs/x.log", "two\n")
    assert storage.get("logs/x.log") == b"one\ntwo\n"
    for name in ("01A", "01B", "01C", "01D"):
        storage.put(f"q/{name}.json", b"{}")
    assert storage.list_after("q/") == ["q/01A.json", "q/01B.json", "q/01C.json", "q/01D.json"]
    assert storage.list_after("q/", "q/01B.json") == ["q/01C.json", "q/01D.json"]
    assert storage.list_after("q/", "q/01C") == ["q/01C.json", "q/01D.json"]      # a bare id: at or after
    assert storage.list_after("a/") == ["a/b/1.json", "a/c/2.bin"]
    assert storage.list_dirs("a/") == ["b", "c"]
    with storage.open("a/c/2.bin") as fh:
        assert fh.read(3) == b"zzz"
    storage.delete("a/b/1.json")
    storage.delete("a/b/1.json")                                             # deleting twice is fine
    assert not storage.exists("a/b/1.json") and storage.exists("a/c/2.bin")
    assert not list((tmp_path / "store").rglob("*.tmp")) if storage.is_local else True


def test_the_lake_on_s3_compacts_and_ranks_through_duckdb(s3_url):  # noqa: F811
    fsspec.config.conf.clear()
    lake = Lake(s3_url)
    assert lake.storage.scheme == "s3"
    for i, user in enumerate(["alice", "bob", "carol"]):
        add(lake, f"S{i}", user, f"2026-01-01T00:00:0{i}Z", tps=float(100 * (i + 1)))
        lake.write_requests(CHALLENGE, f"S{i}", 1, requests(5))
    assert [r["participant"] for r in build_leaderboard(lake, CHALLENGE).to_pylist()] == ["carol", "bob", "alice"]
    import os
    os.environ["ARENA_LAKE_COMPACT_GRACE_S"] = "0"
    try:
        reports = {r.table: r for r in compact(lake)}
    finally:
        del os.environ["ARENA_LAKE_COMPACT_GRACE_S"]
    assert reports["requests"].files_compacted == 3
    assert lake.manifest("requests")["parts"][0]["key"].startswith("_compacted/requests/part-")
    add(lake, "S9", "dave", "2026-01-02T00:00:00Z", tps=1000.0)          # the tail, read from S3 too
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM requests").fetchall() == [(15,)]
    assert con.execute("SELECT count(*) FROM evaluations").fetchall() == [(4,)]
    assert build_leaderboard(lake, CHALLENGE).to_pylist()[0]["participant"] == "dave"
    assert lake.read_leaderboard(CHALLENGE)[0]["submission_id"] == "S9"


def test_the_bucket_on_s3_lists_markers_after_an_id(s3_url, tmp_path):  # noqa: F811
    fsspec.config.conf.clear()
    bucket = Bucket(s3_url)
    zip_file = tmp_path / "s.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    ids = ["01KA0000000000000000000001", "01KA0000000000000000000002", "01KB0000000000000000000003"]
    for sid in ids:
        bucket.put_submission(Marker(id=sid, challenge=CHALLENGE, user="u", sha256="0" * 64,
                                     created_at="2026-01-01T00:00:00Z"), zip_file)
    assert [m.id for m in bucket.markers()] == ids
    assert [m.id for m in bucket.markers(since_id="01KB")] == ids[2:]
    assert [m.id for m in bucket.markers(since_id=ids[1])] == ids[1:]       # at or after
    assert bucket.status(ids[0])["status"] == "queued"
    assert bucket.fetch_zip(CHALLENGE, ids[0], tmp_path / "copy.zip").read_bytes() == zip_file.read_bytes()
    bucket.append_log(ids[0], "build", "step 1")
    assert bucket.log_lines(ids[0])[0][1].endswith("step 1")
    bucket.withdraw(CHALLENGE, ids[2])
    assert [m.id for m in bucket.markers()] == ids[:2]
