"""The intake sensor's tick with many markers, on file:// and on S3 (a moto server started here).

    python benchmarks/sensor_tick.py --markers 10000

For each storage: N markers are written through Bucket.put_submission; then one tick with every
marker new (the partitions get added), one steady tick (nothing new: list after the window floor,
read nothing), and one tick after 10 more markers. Also times the old way (a glob over every key) as
a baseline. Prints one JSON line; the host load is beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagster import DagsterInstance, build_sensor_context  # noqa: E402
from ulid import ULID  # noqa: E402

from lake.bucket import Bucket, Marker  # noqa: E402
from orchestration.sensors import intake_sensor  # noqa: E402


def tick(instance, cursor):
    t = time.perf_counter()
    result = intake_sensor(build_sensor_context(instance=instance, cursor=cursor))
    seconds = time.perf_counter() - t
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return seconds, result


def fill(bucket: Bucket, n: int, zip_file: Path, start_s: float) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        sid = str(ULID.from_timestamp(start_s + i * 0.05))
        bucket.put_submission(Marker(id=sid, challenge="efficient-decode", user=f"u{i % 50}", sha256="0" * 64,
                                     created_at="2026-01-01T00:00:00Z"), zip_file)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def measure(url: str, n: int, tmp: Path) -> dict:
    os.environ["ARENA_BUCKET_URL"] = url
    bucket = Bucket(url)
    zip_file = tmp / "s.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    t = time.perf_counter()
    fill(bucket, n, zip_file, time.time() - n * 0.05 - 60)
    out = {"fill_s": round(time.perf_counter() - t, 1)}
    with DagsterInstance.ephemeral() as instance:
        out["first_tick_s"], first = tick(instance, None)
        out["first_tick_runs"] = len(first.run_requests)
        out["steady_tick_s"], steady = tick(instance, first.cursor)
        assert not steady.run_requests
        fill(bucket, 10, zip_file, time.time())
        out["tick_10_new_s"], more = tick(instance, steady.cursor)
        out["tick_10_new_runs"] = len(more.run_requests)
    t = time.perf_counter()
    fs, root = bucket.storage.fs, bucket.storage.root
    globbed = fs.glob(f"{root}/incoming/*/*.json")
    out["glob_listing_s"] = round(time.perf_counter() - t, 3)
    out["glob_keys"] = len(globbed)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None) -> int:
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser()
    ap.add_argument("--markers", type=int, default=10000)
    ap.add_argument("--skip-s3", action="store_true")
    args = ap.parse_args(argv)
    load = lambda: " ".join(f"{x:.2f}" for x in os.getloadavg())  # noqa: E731
    out = {"markers": args.markers, "load_before": load()}
    with tempfile.TemporaryDirectory(prefix="arena-sensor-") as tmp:
        os.environ["ARENA_HOME"] = tmp
        out["file"] = measure(f"file://{tmp}/bucket", args.markers, Path(tmp))
        if not args.skip_s3:
            import boto3
            from moto.server import ThreadedMotoServer
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
                out["s3"] = measure(f"s3://{name}/bucket", args.markers, Path(tmp))
            finally:
                server.stop()
    out["load_after"] = load()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
