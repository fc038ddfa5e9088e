"""The lake: result schema, atomic tables, the leaderboard's ranking rules, the bucket's statuses."""
from __future__ import annotations

import copy

import jsonschema
import pytest

from lake.bucket import Bucket
from lake.leaderboard import build_leaderboard, read_leaderboard
from lake.results import empty_metrics, validate_result
from lake.tables import Lake
from lake.views import connect

CHALLENGE = "efficient-decode"


def result(sid: str, status="success", reason=None, tps=None, valid=True) -> dict:
    metrics = empty_metrics() | {"tokens_per_second": tps, "accuracy": 1.0 if status == "success" else 0.2}
    return {"schema_version": 1, "submission_id": sid, "challenge": CHALLENGE, "status": status,
            "reason": reason, "metrics": metrics,
            "measurement": {"engine": "mlperf-loadgen 6.0.17", "scenario": "offline", "valid": valid,
                            "repeats": 3, "tokens_per_second_cv": 0.01},
            "environment": {"runtime": "runsc", "image_digest": None, "base_image": "arena/python-cpu:1",
                            "gpu": None, "host": "test", "harness_version": "0"},
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z"}


def add(lake: Lake, sid: str, user: str, created: str, **kw) -> None:
    lake.write_submission({"id": sid, "challenge": CHALLENGE, "user": user, "display_name": None,
                           "sha256": sid, "created_at": created, "size_bytes": 1})
    lake.write_evaluation(result(sid, **kw), attempt=1)


def test_the_schema_refuses_an_invented_field_and_an_unknown_status():
    good = result("S1", tps=1.0)
    validate_result(good)
    for broken in ({"status": "great"}, {"reason": "bad luck"}, {"extra": 1}):
        bad = copy.deepcopy(good) | broken
        with pytest.raises(jsonschema.ValidationError):
            validate_result(bad)
    bad = copy.deepcopy(good)
    del bad["metrics"]["energy_joules"]          # unmeasured is null, never absent
    with pytest.raises(jsonschema.ValidationError):
        validate_result(bad)


def test_leaderboard_ranks_best_valid_run_per_participant_and_lists_the_rest(tmp_path):
    lake = Lake(tmp_path)
    add(lake, "A1", "alice", "2026-01-01T00:00:01Z", tps=100.0)
    add(lake, "A2", "alice", "2026-01-01T00:00:02Z", tps=300.0)          # alice's best
    add(lake, "B1", "bob", "2026-01-01T00:00:03Z", tps=200.0)
    add(lake, "C1", "carol", "2026-01-01T00:00:04Z", status="rejected", reason="accuracy")
    add(lake, "D1", "dave", "2026-01-01T00:00:05Z", tps=999.0, valid=False)  # INVALID: not ranked
    build_leaderboard(tmp_path, CHALLENGE)
    rows = read_leaderboard(tmp_path, CHALLENGE)
    assert [(r["rank"], r["participant"], r["submission_id"]) for r in rows] == [
        (1, "alice", "A2"), (2, "bob", "B1"), (None, "carol", "C1"), (None, "dave", "D1")]
    assert (rows[2]["status"], rows[2]["reason"]) == ("rejected", "accuracy")
    assert rows[3]["reason"] == "invalid measurement"


def test_tables_are_queryable_through_duckdb_views(tmp_path):
    lake = Lake(tmp_path)
    add(lake, "A1", "alice", "2026-01-01T00:00:01Z", tps=100.0)
    con = connect(tmp_path)
    assert con.execute("SELECT submission_id, challenge, m_tokens_per_second FROM evaluations").fetchall() == [
        ("A1", CHALLENGE, 100.0)]
    assert not list(tmp_path.rglob("*.tmp"))     # atomic writes leave no temporary files


def test_bucket_keeps_every_status_time_and_refuses_unknown_ones(tmp_path):
    bucket = Bucket(tmp_path)
    bucket.set_status("S1", "queued")
    bucket.set_status("S1", "building")
    event = bucket.set_status("S1", "failed", "build", detail="docker build exited with status 1")
    assert set(event["timings"]) == {"queued", "building", "failed"}
    assert bucket.status("S1")["detail"].startswith("docker build")
    with pytest.raises(ValueError, match="unknown status 'done'"):
        bucket.set_status("S1", "done")
