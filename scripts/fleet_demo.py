"""`make fleet-demo`: the platform as a fleet, on one machine.

The control plane runs on PostgreSQL (Dagster's storage, a database of its own), Redis (the Celery
broker, its own DB number) and a moto S3 server (Dagster's run outputs and compute logs), with the
Dagster daemon and webserver, intake, and a control worker for device-less jobs (the leaderboard).
Two workers of the `cpu` pool stand in for two hosts (pools.toml: host-a on CPU 0, host-b on CPU 1).
The examples are submitted through intake exactly as in `make demo`, run on those workers, and the
same leaderboard is printed. Everything is stopped at the end (--keep leaves it running).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the fleet running (stop it with Ctrl-C)")
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("ARENA_FLEET_DEMO_REDIS_DB", "8")))
    args = parser.parse_args()
    root = arena_home() / "fleet-demo" / time.strftime("%Y%m%dT%H%M%S")
    workers = [{"name": w.name, "pool": w.pool, "devices": str(w.devices)} for w in load_workers(ROOT / "pools.toml")]
    workers.append({"name": "control", "pool": "control", "devices": ""})
    port = free_port()
    fleet = LocalFleet(root, workers, redis_db=args.redis_db, extra_env={
        "ARENA_BUCKET_URL": f"file://{root}/bucket", "ARENA_LAKE_URL": f"file://{root}/lake",
        "ARENA_DATABASE_URL": f"sqlite:///{root}/arena.db", "ARENA_PORT": str(port),
        "ARENA_URL": f"http://127.0.0.1:{port}", "ARENA_POOLS_FILE": str(ROOT / "pools.toml")})
    fleet.extra_env["ARENA_DAGSTER_PORT"] = str(fleet.web_port)
    print(f"starting the fleet in {root} (PostgreSQL database {fleet.db_name}, Redis DB {args.redis_db}) ...")
    started = time.monotonic()
    try:
        fleet.start()
        fleet.spawn("intake", [str(Path(sys.executable).parent / "uvicorn"), "intake.app:app",
                               "--host", "127.0.0.1", "--port", str(port)])
        fleet._wait(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 120, "intake")
        print(f"fleet up in {time.monotonic() - started:.0f} s: "
              + ", ".join(f"{w['name']} ({w['pool']}, {w['devices'] or 'no devices'})" for w in workers))
        print("storage:")
        for what, url in fleet.storage_urls().items():
            print(f"  {what:26} {url}")
        print(f"  {'bucket':26} {fleet.env['ARENA_BUCKET_URL']}   (file://: the lake's S3 storage interface is "
              f"another change)")
        print(f"  {'lake':26} {fleet.env['ARENA_LAKE_URL']}")
        print(f"Dagster UI: http://127.0.0.1:{fleet.web_port}/")
        rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=fleet.env).returncode
        fleet.activate()
        _print_placement(fleet)
        if args.keep:
            print("the fleet keeps running; Ctrl-C stops it")
            while True:
                time.sleep(3600)
        return rc
    except KeyboardInterrupt:
        return 130
    finally:
        fleet.stop()
        print(f"fleet stopped (logs in {fleet.logs})")


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
