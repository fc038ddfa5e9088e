"""`make fleet-demo`: the platform as a fleet, on one machine.

The control plane runs on PostgreSQL (Dagster's storage and intake's database, each a database of
its own), Redis (the Celery broker, its own DB number) and a moto S3 server holding all the files:
the intake bucket (s3://arena-demo/bucket), the lake (s3://arena-demo/lake) and Dagster's run outputs
and compute logs (s3://arena-dagster/fleet). With it run the Dagster daemon and webserver, intake,
and a control worker for device-less jobs (the leaderboard). Two workers of the `cpu` pool stand in
for two hosts (pools.toml: host-a on CPU 0, host-b on CPU 1). The examples are submitted through
intake exactly as in `make demo`, run on those workers, and the same leaderboard is printed, then
the storage URLs and what each holds. Everything is stopped at the end (--keep leaves it running);
the S3 server keeps its objects in memory, so the bucket and the lake go with it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lake.config import arena_home  # noqa: E402
from orchestration.localfleet import LocalFleet, free_port  # noqa: E402
from orchestration.pools import load_workers  # noqa: E402


#: Where the demo keeps its files: buckets on the fleet's S3 server (created by LocalFleet.start)
DEMO_BUCKET_URL = "s3://arena-demo/bucket"
DEMO_LAKE_URL = "s3://arena-demo/lake"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the fleet running (stop it with Ctrl-C)")
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("ARENA_FLEET_DEMO_REDIS_DB", "8")))
    parser.add_argument("--db-prefix", default=os.environ.get("ARENA_FLEET_DEMO_DB_PREFIX", "arena_fleet_demo"),
                        help="prefix of the PostgreSQL databases it creates (Dagster's; intake's unless --intake-db)")
    parser.add_argument("--intake-db", default=os.environ.get("ARENA_FLEET_DEMO_INTAKE_DB"),
                        help="intake's PostgreSQL database, created if missing and kept (default: a fresh one, "
                             "dropped at the end with the S3 server's objects)")
    args = parser.parse_args()
    root = arena_home() / "fleet-demo" / time.strftime("%Y%m%dT%H%M%S")
    workers = [{"name": w.name, "pool": w.pool, "devices": str(w.devices)} for w in load_workers(ROOT / "pools.toml")]
    workers.append({"name": "control", "pool": "control", "devices": ""})
    port = free_port()
    fleet = LocalFleet(root, workers, redis_db=args.redis_db, db_prefix=args.db_prefix)
    intake_db = args.intake_db or f"{fleet.db_name}_intake"
    fleet.extra_env.update({
        "ARENA_BUCKET_URL": DEMO_BUCKET_URL, "ARENA_LAKE_URL": DEMO_LAKE_URL,
        "ARENA_DATABASE_URL": f"postgresql+psycopg://{fleet.pg_admin.split('://', 1)[1]}/{intake_db}",
        "ARENA_PORT": str(port), "ARENA_URL": f"http://127.0.0.1:{port}", "ARENA_POOLS_FILE": str(ROOT / "pools.toml"),
        "ARENA_DAGSTER_PORT": str(fleet.web_port)})
    print(f"starting the fleet in {root} (PostgreSQL databases {fleet.db_name} and {intake_db}, "
          f"Redis DB {args.redis_db}) ...")
    started = time.monotonic()
    created_intake_db = False
    try:
        created_intake_db = create_database(intake_db)
        fleet.start()
        fleet.spawn("intake", [str(Path(sys.executable).parent / "uvicorn"), "intake.app:app",
                               "--host", "127.0.0.1", "--port", str(port)])
        fleet._wait(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 120, "intake")
        print(f"fleet up in {time.monotonic() - started:.0f} s: "
              + ", ".join(f"{w['name']} ({w['pool']}, {w['devices'] or 'no devices'})" for w in workers))
        _print_storage(fleet, counts=False)
        print(f"Dagster UI: http://127.0.0.1:{fleet.web_port}/")
        rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=fleet.env).returncode
        fleet.activate()
        _print_placement(fleet)
        _print_storage(fleet, counts=True)
        print(f"fleet demo took {time.monotonic() - started:.0f} s")
        if args.keep:
            print("the fleet keeps running; Ctrl-C stops it")
            while True:
                time.sleep(3600)
        return rc
    except KeyboardInterrupt:
        return 130
    finally:
        fleet.stop()
        if created_intake_db and not args.intake_db:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", intake_db],
                           check=False, capture_output=True)
        print(f"fleet stopped (logs in {fleet.logs})")


def create_database(name: str) -> bool:
    """Create the PostgreSQL database ``name`` unless it exists; True when this call created it."""
    exists = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc",
                             f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                            capture_output=True, text=True, check=True).stdout.strip() == "1"
    if not exists:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    return not exists


def _print_storage(fleet: LocalFleet, counts: bool) -> None:
    """The storage URLs the fleet uses; with ``counts``, how many keys the bucket and the lake hold on S3
    (listed through the platform's storage interface, as the sensor and the lake read them)."""
    print("storage:")
    for what, url in fleet.storage_urls().items():
        note = ""
        if counts and url.startswith("s3://") and what in ("intake bucket", "lake"):
            from lake.storage import Storage
            keys = Storage(url).list_after("")
            note = f"   ({len(keys)} keys, e.g. {keys[-1]})" if keys else "   (empty)"
        print(f"  {what:26} {url}{note}")


def _print_placement(fleet: LocalFleet) -> None:
    """Which worker and devices ran each evaluation (run tags written by the workers)."""
    from dagster import RunsFilter
    instance = fleet.instance()
    print("placement:")
    for run in reversed(instance.get_runs(RunsFilter(job_name="evaluate_submission"))):
        print(f"  {run.tags.get('arena/submission')} {run.status.value:8} on {run.tags.get('arena/worker')} "
              f"devices {run.tags.get('arena/devices')}")


def _answers(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
