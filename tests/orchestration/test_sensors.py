"""The intake sensor: one run per committed marker, never a marker missed, reruns on top."""
from __future__ import annotations

import time

from dagster import build_sensor_context
from ulid import ULID

from lake.bucket import Marker
from lake.vocabulary import utc_iso
from orchestration.sensors import RERUN_PRIORITY, intake_sensor
from tests.s3server import s3_server, s3_url  # noqa: F401


def put(bucket, tmp_path, sid: str, **fields) -> Marker:
    zip_file = tmp_path / f"{sid}.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    marker = Marker(id=sid, challenge="efficient-decode", user="alice", sha256="0" * 64,
                    created_at=utc_iso(), **fields)
    bucket.put_submission(marker, zip_file)
    return marker


def tick(instance, cursor=None):
    result = intake_sensor(build_sensor_context(instance=instance, cursor=cursor))
    for request in result.dynamic_partitions_requests:   # what the daemon does before launching
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_each_marker_becomes_one_tagged_run_and_its_partition(bucket, instance, tmp_path):
    a = put(bucket, tmp_path, str(ULID()))
    b = put(bucket, tmp_path, str(ULID()), priority=3, queue="gpu-h100")
    result = tick(instance)
    assert [r.run_key for r in result.run_requests] == [a.id, b.id]
    assert [r.partition_key for r in result.run_requests] == [a.id, b.id]
    from orchestration.fleet import max_runtime_s
    assert result.run_requests[1].tags == {"dagster/priority": "3", "arena/queue": "gpu-h100",
                                           "arena/submission": b.id,
                                           # fleet mode: the pool's Celery queue; every run can end
                                           "dagster-celery/queue": "gpu-h100",
                                           "dagster/max_runtime": str(int(max_runtime_s(b.challenge))),
                                           "dagster/retry_strategy": "ALL_STEPS"}
    assert set(instance.get_dynamic_partitions("submissions")) == {a.id, b.id}
    assert result.cursor == b.id
    assert tick(instance, result.cursor).run_requests == []   # nothing new: nothing requested


def test_a_late_marker_with_an_older_id_is_still_picked_up(bucket, instance, tmp_path):
    late_id = str(ULID())            # made first (upload started), committed last (slow upload)
    time.sleep(0.002)
    early = put(bucket, tmp_path, str(ULID()))
    first = tick(instance)
    assert [r.run_key for r in first.run_requests] == [early.id]
    late = put(bucket, tmp_path, late_id)
    second = tick(instance, first.cursor)
    assert [r.run_key for r in second.run_requests] == [late.id]
    assert second.cursor == early.id


def test_an_operator_rerun_is_a_new_high_priority_run_of_the_same_partition(bucket, instance, tmp_path):
    m = put(bucket, tmp_path, str(ULID()))
    cursor = tick(instance).cursor
    key = bucket.request_rerun(m.id, requested_by="ops")
    result = tick(instance, cursor)
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [(key, m.id)]
    assert result.run_requests[0].tags["dagster/priority"] == str(RERUN_PRIORITY)


def test_the_sensor_reads_markers_from_s3_after_the_cursor(arena_home, instance, tmp_path, s3_url, monkeypatch):  # noqa: F811
    from lake.bucket import Bucket
    monkeypatch.setenv("ARENA_BUCKET_URL", s3_url)
    bucket = Bucket(s3_url)
    a = put(bucket, tmp_path, str(ULID()))
    first = tick(instance)
    assert [r.run_key for r in first.run_requests] == [a.id]
    b = put(bucket, tmp_path, str(ULID()))
    second = tick(instance, first.cursor)
    assert [r.run_key for r in second.run_requests] == [b.id] and second.cursor == b.id
