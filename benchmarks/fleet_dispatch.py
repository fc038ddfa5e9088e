"""Fleet benchmarks over the real code location: dispatch latency (marker -> run STARTED) in embedded
and fleet mode, and N queued submissions through two workers (throughput, device overlap, priority
start order).

    python benchmarks/fleet_dispatch.py latency --n 20      # embedded vs fleet, one submission at a time
    python benchmarks/fleet_dispatch.py queue --n 100       # fleet: N at once, priorities 0/5/10

Each submission is an empty zip: its build fails at once (failed/build, a participant failure), so a
run holds its worker for its whole Dagster overhead but no evaluation; what is measured is dispatch.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ulid import ULID  # noqa: E402

from lake.bucket import Bucket, Marker  # noqa: E402
from lake.vocabulary import utc_iso  # noqa: E402
from orchestration.localfleet import LocalFleet, _reset_signals  # noqa: E402

BIN = Path(sys.executable).parent


def put(bucket: Bucket, tmp: Path, priority: int = 0) -> tuple[str, float]:
    sid = str(ULID())
    zip_file = tmp / f"{sid}.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    t = time.time()
    bucket.put_submission(Marker(id=sid, challenge="efficient-decode", user="bench", sha256="0" * 64,
                                 created_at=utc_iso(), priority=priority, queue="cpu"), zip_file)
    return sid, t


def run_of(instance, sid: str):
    from dagster import RunsFilter
    records = instance.get_run_records(RunsFilter(tags={"arena/submission": sid}), limit=1)
    return records[0] if records else None


def wait_started(instance, sid: str, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = run_of(instance, sid)
        if rec is not None and rec.start_time:
            return rec
        time.sleep(0.05)
    raise TimeoutError(f"{sid} never started")


def wait_finished(instance, sid: str, timeout: float = 1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = run_of(instance, sid)
        if rec is not None and rec.dagster_run.is_finished:
            return rec
        time.sleep(0.2)
    raise TimeoutError(f"{sid} never finished")


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


class Embedded:
    """Today's single-host mode: SQLite instance, Dagster's default run launcher, one daemon."""

    def __init__(self, root: Path):
        self.root = root
        self.env = os.environ | {"ARENA_DAGSTER_MODE": "embedded", "DAGSTER_HOME": str(root / "dagster"),
                                 "ARENA_BUCKET_URL": f"file://{root}/bucket", "ARENA_LAKE_URL": f"file://{root}/lake",
                                 "PYTHONPATH": str(ROOT), "ARENA_QUEUES": "cpu=2"}

    def start(self):
        (self.root / "dagster").mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", "from orchestration.config import write_dagster_yaml; write_dagster_yaml()"],
                       cwd=ROOT, env=self.env, check=True)
        self.proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], cwd=ROOT,
                                     env=self.env, stdout=open(self.root / "daemon.log", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_reset_signals)

    def activate(self):
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("ARENA_", "DAGSTER_"))})

    def instance(self):
        from dagster import DagsterInstance
        self.activate()
        return DagsterInstance.get()

    def stop(self):
        import signal
        if getattr(self, "proc", None) is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def fleet_for(root: Path) -> LocalFleet:
    return LocalFleet(root, [{"name": "host-a", "pool": "cpu", "devices": "cpuset=0"},
                             {"name": "host-b", "pool": "cpu", "devices": "cpuset=1"},
                             {"name": "control", "pool": "control", "devices": ""}],
                      redis_db=9, extra_env={"ARENA_BUCKET_URL": f"file://{root}/bucket",
                                             "ARENA_LAKE_URL": f"file://{root}/lake"})


def latency(mode: str, n: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix=f"fleet-bench-{mode}-") as tmp:
        tmp = Path(tmp)
        print(f"{mode}: in {tmp}", flush=True)
        plane = Embedded(tmp) if mode == "embedded" else fleet_for(tmp)
        try:
            plane.start() if mode == "embedded" else plane.start(webserver=False)
            instance = plane.instance()
            bucket = Bucket(Path(plane.env["ARENA_BUCKET_URL"][7:]))
            put(bucket, tmp)          # warm-up: code location loaded, first tick done
            time.sleep(1)
            wait_started(instance, put(bucket, tmp)[0])
            out = []
            previous = None
            for _ in range(n):
                if previous:       # dispatch to an idle pool: the previous run has ended
                    wait_finished(instance, previous)
                sid, t = put(bucket, tmp)
                rec = wait_started(instance, sid)
                previous = sid
                out.append(rec.start_time - t)
                print(f"  {mode} {sid}: {out[-1]:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
            return out
        finally:
            plane.stop()


def queue(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-queue-") as tmp:
        tmp = Path(tmp)
        fleet = fleet_for(tmp)
        try:
            fleet.start(webserver=False)
            instance = fleet.instance()
            bucket = Bucket(Path(fleet.env["ARENA_BUCKET_URL"][7:]))
            rng = random.Random(7)
            t0 = time.time()
            sids = {put(bucket, tmp, priority=rng.choice([0, 5, 10]))[0]: None for _ in range(n)}
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                recs = {sid: run_of(instance, sid) for sid in sids}
                if all(r is not None and r.dagster_run.is_finished for r in recs.values()):
                    break
                time.sleep(2)
            recs = {sid: run_of(instance, sid) for sid in sids}
            finished = [r for r in recs.values() if r and r.dagster_run.is_finished]
            wall = max(r.end_time for r in finished) - t0
            statuses = {}
            for r in finished:
                statuses[r.dagster_run.status.value] = statuses.get(r.dagster_run.status.value, 0) + 1
            # no device overlap: runs overlapping in time never share a worker's devices
            spans = [(r.start_time, r.end_time, r.dagster_run.tags.get("arena/devices"),
                      int(r.dagster_run.tags["dagster/priority"]), r.create_timestamp.timestamp()) for r in finished]
            overlaps = sum(1 for i, a in enumerate(spans) for b in spans[i + 1:]
                           if a[2] == b[2] and a[0] < b[1] and b[0] < a[1])
            max_conc = max(sum(1 for b in spans if b[0] <= a[0] < b[1]) for a in spans)
            # priority order: a run started while a higher-priority run already queued waited
            inversions = sum(1 for a in spans for b in spans
                             if a[3] < b[3] and a[0] < b[0] and b[4] < a[0])
            order = [s[3] for s in sorted(spans)]
            print(f"queue: {len(finished)}/{n} finished {statuses} in {wall:.1f} s "
                  f"({len(finished) / wall:.2f} runs/s through 2 workers); max concurrent {max_conc}; "
                  f"device overlaps {overlaps}; priority inversions {inversions}")
            print(f"  start order of priorities (first 30): {order[:30]}")
            print(f"  devices used: {sorted({s[2] for s in spans})}")
        finally:
            fleet.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["latency", "queue"])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--modes", default="embedded,fleet", help="latency: which modes, in order")
    args = p.parse_args()
    print("host load before:", os.getloadavg())
    if args.what == "latency":
        for mode in args.modes.split(","):
            v = latency(mode, args.n)
            print(f"{mode:9} marker -> run STARTED over {len(v)}: p50 {pct(v, 50):.2f} s, p99 {pct(v, 99):.2f} s, "
                  f"mean {statistics.mean(v):.2f} s, max {max(v):.2f} s")
    else:
        queue(args.n)
    print("host load after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
