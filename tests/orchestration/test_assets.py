"""The per-submission assets, materialized in-process against the real Docker engine and lake."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import materialize
from ulid import ULID

from intake.packaging import zip_directory
from lake.bucket import Marker
from lake.vocabulary import utc_iso
from lake.config import StorageSettings
from lake.leaderboard import read_leaderboard
from lake.results import validate_result
from lake.tables import Lake
from orchestration.assets import evaluation, leaderboard, scores, submission_image
from orchestration.resources import ArenaStorage, Sandbox

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker
RESOURCES = {"storage": ArenaStorage(), "sandbox": Sandbox()}


def submit(bucket, instance, source: Path, tmp_path: Path, user: str) -> str:
    sid = str(ULID())
    zip_file = zip_directory(source, tmp_path / f"{sid}.zip")
    bucket.put_submission(Marker(id=sid, challenge="efficient-decode", user=user, sha256="0" * 64,
                                 created_at=utc_iso()), zip_file)
    Lake(StorageSettings.from_env().lake).write_submission(
        {"id": sid, "challenge": "efficient-decode", "user": user, "display_name": None,
         "sha256": "0" * 64, "created_at": utc_iso(), "size_bytes": zip_file.stat().st_size})
    instance.add_dynamic_partitions("submissions", [sid])
    return sid


def test_a_failing_build_ends_failed_with_reason_build_and_its_log(bucket, instance, tmp_path):
    sid = submit(bucket, instance, ROOT / "tests/fixtures/submissions/broken-build", tmp_path, "alice")
    run = materialize([submission_image, evaluation, scores], partition_key=sid, instance=instance,
                      resources=RESOURCES)
    assert run.success   # the submission failed, the platform did not
    status = bucket.status(sid)
    assert (status["status"], status["reason"]) == ("failed", "build")
    assert "docker build exited" in status["detail"]
    assert "fails on purpose" in bucket.log_text(sid, "build")
    result = Lake(StorageSettings.from_env().lake).read_result("efficient-decode", sid)
    validate_result(result)
    assert result["metrics"]["tokens_per_second"] is None


def test_a_wrong_decoder_is_scored_rejected_and_listed_unranked(bucket, instance, tmp_path):
    sid = submit(bucket, instance, ROOT / "examples/wrong", tmp_path, "bob")
    run = materialize([submission_image, evaluation, scores], partition_key=sid, instance=instance,
                      resources=RESOURCES)
    assert run.success
    status = bucket.status(sid)
    assert (status["status"], status["reason"]) == ("rejected", "accuracy")
    by_time = sorted(status["timings"], key=status["timings"].get)
    assert by_time == ["queued", "building", "running", "scoring", "rejected"]
    lake = Lake(StorageSettings.from_env().lake)
    result = lake.read_result("efficient-decode", sid)
    assert result["metrics"]["accuracy"] < 0.99 and result["metrics"]["tokens_per_second"] is None
    requests = lake.read_run("requests", "efficient-decode", sid, 1).to_pylist()
    assert {r["run"] for r in requests} == {"accuracy"} and len(requests) == len(
        json.loads((ROOT / "challenges/efficient-decode/prompts.json").read_text())["prompts"]) + 24
    assert lake.evaluation_prefix("efficient-decode", sid) + "loadgen/attempt=1/accuracy/mlperf_log_detail.txt" \
        in lake.loadgen_logs("efficient-decode", sid)
    assert lake.has_run("telemetry", "efficient-decode", sid, 1)

    # an operator re-materializes only the evaluation: the image (removed after each run) is rebuilt
    rerun = materialize([submission_image, evaluation, scores], partition_key=sid, instance=instance, resources=RESOURCES,
                        selection=[evaluation, scores])
    assert rerun.success and bucket.status(sid)["status"] == "rejected"
    assert lake.next_attempt("efficient-decode", sid) == 3

    assert materialize([leaderboard], instance=instance, resources=RESOURCES).success
    rows = read_leaderboard(StorageSettings.from_env().lake, "efficient-decode")
    assert [(r["participant"], r["rank"], r["status"], r["reason"]) for r in rows] == [
        ("bob", None, "rejected", "accuracy")]


def test_a_run_that_breaks_still_leaves_a_terminal_status(bucket, instance, tmp_path):
    from dagster import DagsterEventType, build_run_status_sensor_context
    from orchestration.sensors import platform_failure_sensor, run_tags

    sid = submit(bucket, instance, ROOT / "examples/wrong", tmp_path, "carol")
    bucket.delete_zip("efficient-decode", sid)      # the platform lost the upload
    run = materialize([submission_image, evaluation, scores], partition_key=sid, instance=instance,
                      resources=RESOURCES, raise_on_error=False, tags=run_tags(sid, "cpu", 0))
    assert not run.success
    failure = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_FAILURE).records[0]
    context = build_run_status_sensor_context(
        sensor_name="platform_failure_sensor", dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance, dagster_run=instance.get_run_by_id(run.run_id)).for_run_failure()
    platform_failure_sensor(context)
    status = bucket.status(sid)
    assert (status["status"], status["reason"]) == ("failed", "platform")
    assert "arena admin rerun" in status["detail"]
