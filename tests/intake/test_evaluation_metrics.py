"""Evaluation metrics on intake's /metrics: sandbox outcomes from the lake's evaluations table and phase
durations from the bucket's status timings (a real bucket and lake on disk, prometheus-client's parser)."""
from __future__ import annotations

import zipfile
from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families
from ulid import ULID

from intake.metrics import IntakeMetrics, phase_durations
from lake.bucket import Bucket, Marker
from lake.results import empty_metrics
from lake.tables import Lake
from lake.vocabulary import utc_iso

CHALLENGE = "efficient-decode"


def result(sid: str, status: str, reason: str | None) -> dict:
    return {"schema_version": 1, "submission_id": sid, "challenge": CHALLENGE, "status": status, "reason": reason,
            "metrics": empty_metrics(), "measurement": {"engine": "none", "scenario": "offline", "valid": None,
                                                        "repeats": 0, "tokens_per_second_cv": None},
            "environment": {"runtime": "runsc", "image_digest": None, "base_image": None, "gpu": None,
                            "host": "h", "harness_version": "0.1.0"},
            "started_at": utc_iso(), "finished_at": utc_iso()}


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_phase_durations_follow_the_recorded_timings():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    iso = lambda s: utc_iso(t0 + timedelta(seconds=s))  # noqa: E731
    assert phase_durations(iso(0), {"building": iso(10), "running": iso(70), "scoring": iso(100),
                                     "success": iso(101)}) == {"queued": 10, "building": 60, "running": 30,
                                                               "scoring": 1}
    # a build failure: no running/scoring phase; building ends at the terminal status
    assert phase_durations(iso(0), {"building": iso(5), "failed": iso(25)}) == {"queued": 5, "building": 20}


def test_metrics_count_outcomes_and_phase_durations(tmp_path):
    bucket, lake = Bucket(tmp_path / "bucket"), Lake(tmp_path / "lake")
    zip_path = tmp_path / "s.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("Dockerfile", "FROM x\n")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    iso = lambda s: utc_iso(now - timedelta(minutes=10) + timedelta(seconds=s))  # noqa: E731
    runs = [("success", None, {"building": 10, "running": 40, "scoring": 100, "success": 102}),
            ("success", None, {"building": 30, "running": 50, "scoring": 90, "success": 91}),
            ("failed", "build", {"building": 20, "failed": 80})]
    for status, reason, timings in runs:
        sid = str(ULID())
        bucket.put_submission(Marker(id=sid, challenge=CHALLENGE, user="u", sha256="0" * 64, created_at=iso(0)),
                              zip_path)
        bucket.set_status(sid, status, reason, timings={k: iso(v) for k, v in timings.items()})
        lake.write_evaluation(result(sid, status, reason), attempt=1)
    waiting = str(ULID())   # still running: not in the durations
    bucket.put_submission(Marker(id=waiting, challenge=CHALLENGE, user="u", sha256="1" * 64, created_at=iso(0)),
                          zip_path)
    bucket.set_status(waiting, "running")

    text, _ = IntakeMetrics(tmp_path / "bucket", tmp_path / "lake").render()
    got = samples(text.decode())
    assert got[("arena_evaluations", (("challenge", CHALLENGE), ("reason", ""), ("status", "success")))] == 2
    assert got[("arena_evaluations", (("challenge", CHALLENGE), ("reason", "build"), ("status", "failed")))] == 1
    phase = lambda p, stat: got[("arena_evaluation_phase_seconds", (("phase", p), ("stat", stat)))]  # noqa: E731
    count = lambda p: got[("arena_evaluation_phase_samples", (("phase", p),))]  # noqa: E731
    assert (count("queued"), count("building"), count("running"), count("scoring")) == (3, 3, 2, 2)
    assert phase("queued", "max") == 30 and phase("queued", "p50") == 20
    assert phase("building", "max") == 60 and phase("running", "max") == 60 and phase("scoring", "p50") == 2


def test_no_lake_yet_means_no_outcome_series(tmp_path):
    text, _ = IntakeMetrics(tmp_path / "bucket", tmp_path / "lake").render()
    got = samples(text.decode())
    assert not [k for k in got if k[0] == "arena_evaluations"]
    assert got[("arena_evaluation_phase_samples", (("phase", "queued"),))] == 0
