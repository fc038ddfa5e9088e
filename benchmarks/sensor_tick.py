"""The intake sensor's tick with many markers, on file:// and on S3 (a moto server started here).

    python benchmarks/sensor_tick.py --markers 10000 [--span-days 30] [--skip-s3]

For each storage, N markers are written through Bucket.put_submission with ids (ULIDs) spread evenly
over the last ``--span-days`` days (a competition that runs for months). Then, against a Dagster
instance, with the sensor's own function and cursor (orchestration.sensors.intake_sensor):

- ``first``: the first tick, every marker new, capped at ARENA_SENSOR_MAX_RUNS_PER_TICK (its default);
  then ticks until every marker was requested: how many, the slowest, the total, and whether each id
  was requested exactly once;
- ``uncapped_first``: the same first tick with the cap at N, on a fresh instance (all N in one tick);
- ``steady``: cursor at the end, nothing new; the listing starts after the lookback floor;
- ``steady_full_window``: the same with the lookback covering every marker (all N listed each tick);
- ``tick_10_new``: a tick after 10 more markers.

On S3 every tick also counts the S3 requests it made (ListObjectsV2 pages with their StartAfter, and
GETs): the listing starts after a key, it never globs. The old way (a glob over every key) is timed as
a baseline. Ends with one JSON line; the host load is beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagster import DagsterInstance, build_sensor_context  # noqa: E402
from ulid import ULID  # noqa: E402

from lake.bucket import Bucket, Marker  # noqa: E402
from orchestration.sensors import intake_sensor, max_runs_per_tick  # noqa: E402

S3_CALLS: Counter = Counter()


def count_s3_calls() -> None:
    """Count the S3 requests the storage layer makes (s3fs's call_s3), by operation."""
    import s3fs
    original = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        S3_CALLS[method if isinstance(method, str) else getattr(method, "__name__", str(method))] += 1
        if method == "list_objects_v2" and kwargs.get("StartAfter"):
            S3_CALLS["list_objects_v2 with StartAfter"] += 1
        return await original(self, method, *args, **kwargs)
    s3fs.S3FileSystem._call_s3 = counted
    s3fs.S3FileSystem.call_s3 = s3fs.core.sync_wrapper(counted)   # the sync twin, bound at class creation


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tick(instance, cursor):
    S3_CALLS.clear()
    t = time.perf_counter()
    result = intake_sensor(build_sensor_context(instance=instance, cursor=cursor))
    seconds = time.perf_counter() - t
    for request in result.dynamic_partitions_requests:    # what the daemon does before launching
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return seconds, result, dict(S3_CALLS)


def fill(bucket: Bucket, n: int, zip_file: Path, first_s: float, step_s: float) -> list[str]:
    ids = [str(ULID.from_timestamp(first_s + i * step_s)) for i in range(n)]

    def one(sid):
        bucket.put_submission(Marker(id=sid, challenge="efficient-decode", user="u", sha256="0" * 64,
                                     created_at="2026-01-01T00:00:00Z"), zip_file)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, ids))
    return ids


def measure(url: str, n: int, span_s: float, tmp: Path) -> dict:
    os.environ["ARENA_BUCKET_URL"] = url
    os.environ.pop("ARENA_SENSOR_MAX_RUNS_PER_TICK", None)
    bucket = Bucket(url)
    zip_file = tmp / "s.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    now = time.time()
    t = time.perf_counter()
    ids = fill(bucket, n, zip_file, now - span_s - 60, span_s / max(1, n - 1))
    out: dict = {"fill_s": time.perf_counter() - t, "cap": max_runs_per_tick(), "load": load()}

    with DagsterInstance.ephemeral() as instance:
        out["first_tick_s"], first, out["first_tick_s3_calls"] = tick(instance, None)
        out["first_tick_runs"] = len(first.run_requests)
        requested, cursor, slowest, total, ticks = [r.run_key for r in first.run_requests], first.cursor, \
            out["first_tick_s"], out["first_tick_s"], 1
        while True:
            seconds, result, _ = tick(instance, cursor)
            if not result.run_requests:
                break
            requested += [r.run_key for r in result.run_requests]
            cursor, slowest, total, ticks = result.cursor, max(slowest, seconds), total + seconds, ticks + 1
        out.update({"ticks_to_request_all": ticks, "slowest_tick_s": slowest, "all_ticks_s": total,
                    "requested": len(requested), "requested_once_each": sorted(requested) == sorted(ids)})
        out["steady_tick_s"], steady, out["steady_s3_calls"] = tick(instance, cursor)
        out["steady_runs"] = len(steady.run_requests)
        os.environ["ARENA_SENSOR_LOOKBACK_S"] = str(int(span_s + 3600))
        out["steady_full_window_s"], full, out["steady_full_window_s3_calls"] = tick(instance, cursor)
        os.environ.pop("ARENA_SENSOR_LOOKBACK_S")
        assert not steady.run_requests and not full.run_requests
        fill(bucket, 10, zip_file, time.time(), 0.001)
        out["tick_10_new_s"], more, _ = tick(instance, cursor)
        out["tick_10_new_runs"] = len(more.run_requests)

    os.environ["ARENA_SENSOR_MAX_RUNS_PER_TICK"] = str(n + 10)
    with DagsterInstance.ephemeral() as instance:
        out["uncapped_first_tick_s"], first, out["uncapped_first_tick_s3_calls"] = tick(instance, None)
        out["uncapped_first_tick_runs"] = len(first.run_requests)
    os.environ.pop("ARENA_SENSOR_MAX_RUNS_PER_TICK")

    keys = bucket.marker_keys()
    t = time.perf_counter()
    serial = list(bucket.read_markers(keys))
    out["read_all_markers_serial_s"] = time.perf_counter() - t
    t = time.perf_counter()
    parallel = bucket.read_markers_parallel(keys)
    out["read_all_markers_parallel_s"] = time.perf_counter() - t
    assert [m.id for m in serial] == [m.id for m in parallel]

    t = time.perf_counter()
    globbed = bucket.storage.fs.glob(f"{bucket.storage.root}/incoming/*/*.json")
    out["glob_listing_s"] = time.perf_counter() - t
    out["glob_keys"] = len(globbed)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None) -> int:
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser()
    ap.add_argument("--markers", type=int, default=10000)
    ap.add_argument("--span-days", type=float, default=30.0, help="the ids spread over this many days")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--skip-file", action="store_true")
    args = ap.parse_args(argv)
    span_s = args.span_days * 86400
    out = {"markers": args.markers, "span_days": args.span_days, "load_before": load()}
    with tempfile.TemporaryDirectory(prefix="arena-sensor-") as tmp:
        os.environ["ARENA_HOME"] = tmp
        if not args.skip_file:
            out["file"] = measure(f"file://{tmp}/bucket", args.markers, span_s, Path(tmp))
            print(json.dumps({"file": out["file"]}), flush=True)
        if not args.skip_s3:
            import boto3
            from moto.server import ThreadedMotoServer
            count_s3_calls()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            os.environ.update({"ARENA_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
            name = f"arena-{uuid.uuid4().hex[:8]}"
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                         region_name="us-east-1").create_bucket(Bucket=name)
            try:
                out["s3"] = measure(f"s3://{name}/bucket", args.markers, span_s, Path(tmp))
            finally:
                server.stop()
    out["load_after"] = load()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
