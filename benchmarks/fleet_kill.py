"""Worker killed mid-run: a real evaluation (examples/baseline) on a two-worker fleet; once the
submission is `running`, the worker running it is SIGKILLed with its whole process group (its host
died). Reports what the first run ended as, where the retry ran, how long from the kill until the
retry finished, and the submission's final status.

    python benchmarks/fleet_kill.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ulid import ULID  # noqa: E402

from intake.packaging import zip_directory  # noqa: E402
from lake.bucket import Bucket, Marker  # noqa: E402
from lake.vocabulary import is_terminal, utc_iso  # noqa: E402
from benchmarks.fleet_dispatch import fleet_for, run_of  # noqa: E402


def main() -> int:
    print("host load before:", os.getloadavg())
    if True:   # the directory is kept: its logs explain a retry that failed
        tmp = Path(tempfile.mkdtemp(prefix="fleet-kill-"))
        print(f"fleet in {tmp}", flush=True)
        fleet = fleet_for(tmp)
        fleet.extra_env["ARENA_WORKER_LOST_GRACE_S"] = "10"
        try:
            fleet.start(webserver=False)
            instance = fleet.instance()
            bucket = Bucket(Path(fleet.env["ARENA_BUCKET_URL"][7:]))
            zip_file = zip_directory(ROOT / "examples" / "baseline", tmp / "baseline.zip")
            sid = str(ULID())
            bucket.put_submission(Marker(id=sid, challenge="efficient-decode", user="bench", sha256="0" * 64,
                                         created_at=utc_iso(), queue="cpu"), zip_file)
            while (bucket.status(sid) or {}).get("status") != "running":
                time.sleep(0.5)
            time.sleep(5)                                   # well inside the sandboxed run
            first = run_of(instance, sid).dagster_run
            victim = first.tags["arena/worker"].split("@")[0]
            killed = time.time()
            fleet.kill_worker(victim)
            print(f"killed {victim} ({first.tags.get('arena/devices')}) running {first.run_id}")
            while not is_terminal((bucket.status(sid) or {}).get("status")):
                time.sleep(1)
            done = time.time()
            from dagster import RunsFilter
            runs = instance.get_runs(RunsFilter(tags={"arena/submission": sid}))
            for r in reversed(runs):
                rec = instance.get_run_record_by_id(r.run_id)
                print(f"  run {r.run_id[:8]} {r.status.value:8} on {r.tags.get('arena/worker')} "
                      f"devices {r.tags.get('arena/devices')} retry_number={r.tags.get('dagster/retry_number', 0)} "
                      f"ended {rec.end_time - killed if rec.end_time else float('nan'):.1f} s after the kill")
                if r.status.value == "FAILURE":
                    from dagster import DagsterEventType
                    failures = instance.get_records_for_run(r.run_id, of_type={DagsterEventType.RUN_FAILURE,
                                                                               DagsterEventType.STEP_FAILURE}).records
                    for f in failures:
                        print(f"    {f.event_log_entry.dagster_event.event_type_value}: "
                              f"{(f.event_log_entry.message or '')[:300]}")
            st = bucket.status(sid)
            print(f"  detail: {str(st.get('detail'))[:400]}")
            print(f"submission {sid}: {st['status']}/{st.get('reason')} {time.time() - killed:.1f} s after the kill "
                  f"(status terminal {done - killed:.1f} s after the kill)")
        finally:
            fleet.stop()
    print("host load after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
