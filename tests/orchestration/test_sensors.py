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


def test_a_burst_beyond_the_per_tick_cap_is_requested_over_several_ticks_oldest_first(
        bucket, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_SENSOR_MAX_RUNS_PER_TICK", "2")
    monkeypatch.setenv("ARENA_SENSOR_LOOKBACK_S", "3600")
    now = time.time()
    # five markers 45 minutes apart: the burst spans more than the lookback, so a cursor at the newest
    # marker listed would put the ones left for later out of the listing
    ids = [str(ULID.from_timestamp(now - 3 * 3600 + i * 2700)) for i in range(5)]
    for sid in reversed(ids):
        put(bucket, tmp_path, sid)
    requested, cursor = [], None
    for _ in range(5):
        result = tick(instance, cursor)
        requested.append([r.run_key for r in result.run_requests])
        cursor = result.cursor
    assert requested == [ids[0:2], ids[2:4], ids[4:5], [], []]
    assert cursor == ids[4]
    assert set(instance.get_dynamic_partitions("submissions")) == set(ids)


def test_the_sensor_reads_many_new_markers_from_s3_in_order_under_the_cap(
        arena_home, instance, tmp_path, s3_url, monkeypatch):  # noqa: F811
    from lake.bucket import Bucket
    monkeypatch.setenv("ARENA_BUCKET_URL", s3_url)
    monkeypatch.setenv("ARENA_SENSOR_MAX_RUNS_PER_TICK", "4")
    bucket = Bucket(s3_url)
    ids = [str(ULID.from_timestamp(time.time() - 60 + i)) for i in range(6)]
    for sid in ids:
        put(bucket, tmp_path, sid)
    first = tick(instance)
    second = tick(instance, first.cursor)
    assert [r.run_key for r in first.run_requests] == ids[:4] and first.cursor == ids[3]
    assert [r.run_key for r in second.run_requests] == ids[4:] and second.cursor == ids[5]
    assert tick(instance, second.cursor).run_requests == []
