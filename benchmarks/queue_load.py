"""N submissions queued at once, end to end up to Dagster's run queue, with nothing mocked:

    .venv/bin/python benchmarks/queue_load.py --n 1000 --database arena_x

1. The real intake (`python -m intake`, its own process) on PostgreSQL (database ``--database``), with
   the real bucket and lake (file://): N uploads over REST from N/3 users (three each: the default
   limits hold, none is refused), ``--concurrency`` at a time.
2. While they arrive, the intake sensor ticks every ``--interval`` seconds (its minimum interval): the
   sensor's own function (``orchestration.sensors.intake_sensor``) with its cursor, against a real
   DagsterInstance on PostgreSQL (database ``<database>_dagster``, made here and dropped at the end)
   with the embedded dagster.yaml (QueuedRunCoordinator, orchestration/config.py). Each tick's run
   requests then go through what the Dagster daemon does with them, using the daemon's own functions
   against the real code location (loaded in this process): the partitions are added, each request is
   resolved (partition tags), checked against existing runs by run key, created, and submitted to the
   run coordinator, which puts it in the queue (QUEUED).
3. Checks: every accepted id was requested exactly once (run keys unique and equal to the accepted
   set), the instance holds exactly one QUEUED run per accepted id, and a tick after a lost cursor
   (a restarted sensor) requests nothing.

Reports the upload wall time, every tick (sensor function time, requests, time to put them in the
queue), and the time from the first upload to the last run QUEUED. Nothing is launched: the queue
drains through the run launcher (one evaluation per device), which this benchmark does not run.
Ends with one JSON line; the host load is beside the figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from intake_upload_concurrency import free_port, make_zip, start_server  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Enqueuer:
    """What the Dagster daemon does with a sensor's result, by the daemon's own functions."""

    def __init__(self, instance, submit_workers: int = 0):
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
        from orchestration.definitions import defs

        self.instance = instance
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name="orchestration.definitions",
                                 attribute="defs", working_directory=str(ROOT)), location_name="arena")
        self.workspace = WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin))
        location = self.workspace.create_request_context().get_code_location("arena")
        repository = next(iter(location.get_repositories().values()))
        self.remote_sensor = repository.get_sensor("intake_sensor")
        self.job_def = defs.resolve_job_def("evaluate_submission")
        self.logger = logging.getLogger("queue_load")
        # the sensor daemon's `sensors: {use_threads: true, num_submit_workers: K}`: K runs submitted at once
        self.pool = ThreadPoolExecutor(submit_workers) if submit_workers else None

    def enqueue(self, result) -> list:
        """Partitions, then each run request resolved, deduplicated by run key, created and submitted."""
        from dagster._core.utils import make_new_run_id
        from dagster._daemon.sensor import _submit_run_request, fetch_existing_runs
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        resolved = [r.with_resolved_tags_and_config(target_definition=self.job_def, dynamic_partitions_requests=[],
                                                    dynamic_partitions_store=self.instance)
                    for r in result.run_requests]
        existing = fetch_existing_runs(self.instance, self.remote_sensor, resolved)
        def submit(r):
            return _submit_run_request(make_new_run_id(), r, self.workspace, self.remote_sensor, existing,
                                       self.logger, None).run
        return list(self.pool.map(submit, resolved) if self.pool else map(submit, resolved))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--database", default="arena_load", help="intake's PostgreSQL database (made if missing)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--interval", type=float, default=2.0, help="the sensor's minimum interval (s)")
    ap.add_argument("--submit-workers", type=int, default=0,
                    help="runs submitted at once, as the daemon's sensors.num_submit_workers (0: one by one)")
    args = ap.parse_args()
    logging.getLogger("queue_load").setLevel(logging.WARNING)
    n, per_user = args.n, 3
    users = -(-n // per_user)
    dagster_db = f"{args.database}_dagster"
    from orchestration.sensors import max_runs_per_tick
    out: dict = {"n": n, "users": users, "submit_workers": args.submit_workers, "cap": max_runs_per_tick(),
                 "load_before": load()}
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (args.database,)).fetchone():
            conn.execute(f'CREATE DATABASE "{args.database}"')
        conn.execute(f'DROP DATABASE IF EXISTS "{dagster_db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dagster_db}"')
    tmp = tempfile.TemporaryDirectory(prefix="arena-queue-")
    home = Path(tmp.name)
    os.environ.update({"ARENA_HOME": str(home), "ARENA_BUCKET_URL": f"file://{home}/bucket",
                       "ARENA_LAKE_URL": f"file://{home}/lake", "DAGSTER_HOME": str(home / "dagster"),
                       # +psycopg2: with a plain postgresql:// URL SQLAlchemy 2.1 picks psycopg 3, and
                       # Dagster's event log then fails at `NOTIFY run_events, $1` (a syntax error)
                       "ARENA_DAGSTER_POSTGRES_URL": f"{args.pg.replace('postgresql://', 'postgresql+psycopg2://')}/{dagster_db}"})
    os.environ.pop("ARENA_DAGSTER_MODE", None)
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context
    from intake.config import Settings
    from intake.db import Database
    from intake.security import create_user
    from orchestration.config import write_dagster_yaml
    from orchestration.sensors import intake_sensor

    write_dagster_yaml()
    instance = DagsterInstance.get()
    stops: list = []        # the intake server, stopped whatever happens
    try:
        t = time.perf_counter()
        enqueuer = Enqueuer(instance, args.submit_workers)
        out["code_location_load_s"] = round(time.perf_counter() - t, 2)
        port = free_port()
        settings = Settings(home=home, bucket=home / "bucket", lake=home / "lake",
                            database_url=f"{args.pg.replace('postgresql://', 'postgresql+psycopg://')}/{args.database}",
                            secret_key="bench-" + "x" * 32, port=port, public_url=f"http://127.0.0.1:{port}",
                            daily_quota=20, max_concurrent=3, upload_rate_limit=10)   # the defaults
        db = Database(settings.database_url)
        db.migrate()
        tag = f"q{port}"
        with db.session() as s, s.begin():
            tokens = [create_user(s, f"{tag}-u{i}")[1] for i in range(users)]
        stop_server, _ = start_server(settings, "process")
        stops.append(stop_server)
        zips = [make_zip(f"{tag}-{i}") for i in range(n)]
        accepted: list[str] = []
        refused: list[str] = []
        latencies: list[float] = []
        uploads_done = threading.Event()

        def upload(i: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                              headers={"Authorization": f"Bearer {tokens[i % users]}"}) as http:
                t0 = time.perf_counter()
                r = http.post("/api/v1/submissions", files={"file": (f"{i}.zip", zips[i], "application/zip")})
                latencies.append(time.perf_counter() - t0)
                (accepted if r.status_code == 202 else refused).append(r.json().get("id") or r.text[:200])

        def uploader() -> None:
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(upload, range(n)))
            out["uploads_wall_s"] = round(time.perf_counter() - start, 2)
            uploads_done.set()

        ticks: list[dict] = []
        requested: list[str] = []
        queued_runs: list = []
        cursor = None
        start = time.perf_counter()
        threading.Thread(target=uploader, daemon=True).start()
        while True:
            tick_start = time.perf_counter()
            done_before = uploads_done.is_set()
            result = intake_sensor(build_sensor_context(instance=instance, cursor=cursor))
            sensor_s = time.perf_counter() - tick_start
            t = time.perf_counter()
            runs = enqueuer.enqueue(result)
            enqueue_s = time.perf_counter() - t
            cursor = result.cursor
            requested += [r.run_key for r in result.run_requests]
            queued_runs += runs
            ticks.append({"at_s": round(tick_start - start, 2), "sensor_s": round(sensor_s, 3),
                          "requests": len(result.run_requests), "enqueue_s": round(enqueue_s, 2), "load": load()})
            print(f"tick {len(ticks)}: {ticks[-1]}, queued so far {len(queued_runs)}, "
                  f"accepted so far {len(accepted)}", flush=True)
            if done_before and not result.run_requests:
                break
            time.sleep(max(0.0, args.interval - (time.perf_counter() - tick_start)))
        busy = [t for t in ticks if t["requests"]]
        last_queued = max((t["at_s"] + t["sensor_s"] + t["enqueue_s"] for t in busy), default=0.0)
        stops.pop()()

        # a restarted sensor (cursor lost) must request nothing again
        t = time.perf_counter()
        again = intake_sensor(build_sensor_context(instance=instance, cursor=None))
        out["tick_after_lost_cursor"] = {"requests": len(again.run_requests),
                                         "sensor_s": round(time.perf_counter() - t, 3)}
        t = time.perf_counter()
        steady = intake_sensor(build_sensor_context(instance=instance, cursor=cursor))
        out["steady_tick"] = {"requests": len(steady.run_requests), "sensor_s": round(time.perf_counter() - t, 3)}

        runs = instance.get_runs(RunsFilter(job_name="evaluate_submission"))
        run_subs = [r.tags.get("arena/submission") for r in runs]
        ok_ids = set(accepted)
        checks = {
            "accepted": len(ok_ids), "refused": len(refused),
            "requested": len(requested), "requested_distinct": len(set(requested)),
            "requested_equals_accepted": set(requested) == ok_ids,
            "runs": len(runs), "runs_distinct_submissions": len(set(run_subs)),
            "runs_equal_accepted": set(run_subs) == ok_ids,
            "runs_queued": sum(r.status == DagsterRunStatus.QUEUED for r in runs),
        }
        checks["ok"] = (checks["accepted"] == n and checks["requested"] == checks["requested_distinct"] == n
                        and checks["requested_equals_accepted"] and checks["runs"] == n
                        and checks["runs_distinct_submissions"] == n and checks["runs_equal_accepted"]
                        and checks["runs_queued"] == n and out["tick_after_lost_cursor"]["requests"] == 0)
        out["checks"] = checks
        out["upload_p50_s"] = round(statistics.median(latencies), 3)
        out["upload_p99_s"] = round(sorted(latencies)[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))], 3)
        out["ticks"] = len(ticks)
        out["busy_ticks"] = busy
        out["sensor_tick_s_max"] = max(t["sensor_s"] for t in ticks)
        out["sensor_tick_s_median"] = statistics.median(t["sensor_s"] for t in ticks)
        out["enqueue_s_per_run"] = round(sum(t["enqueue_s"] for t in busy) / max(1, len(requested)), 4)
        out["first_upload_to_last_queued_s"] = round(last_queued, 2)
        out["load_after"] = load()
        print(json.dumps(out))
        return 0 if checks["ok"] else 1
    finally:
        for stop in stops:
            stop()
        instance.dispose()
        enqueuer = None
        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dagster_db}" WITH (FORCE)')
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
