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
from collections import Counter
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


def summary(mode: str, v: list[float]) -> None:
    print(f"{mode:9} marker -> run STARTED over {len(v)}: p50 {pct(v, 50):.2f} s, p99 {pct(v, 99):.2f} s, "
          f"mean {statistics.mean(v):.2f} s, min {min(v):.2f} s, max {max(v):.2f} s", flush=True)


class Embedded:
    """Today's single-host mode: SQLite instance, Dagster's default run launcher, one daemon."""

    def __init__(self, root: Path):
        self.root = root
        self.env = os.environ | {"ARENA_DAGSTER_MODE": "embedded", "DAGSTER_HOME": str(root / "dagster"),
                                 "ARENA_BUCKET_URL": f"file://{root}/bucket", "ARENA_LAKE_URL": f"file://{root}/lake",
                                 "PYTHONPATH": str(ROOT), "ARENA_QUEUES": "cpu=2"}

    def start(self):
        (self.root / "dagster").mkdir(parents=True, exist_ok=True)
        # the SQLite storage is created here, before the daemon starts: two processes creating it at
        # once fail with "database is locked"
        subprocess.run([sys.executable, "-c", "from orchestration.config import write_dagster_yaml; write_dagster_yaml(); "
                        "from dagster import DagsterInstance; DagsterInstance.get().get_runs(limit=1)"],
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


#: Redis DB and PostgreSQL database prefix of the benchmark's fleet (--redis-db, --db-prefix)
FLEET_DB = {"redis_db": int(os.environ.get("ARENA_FLEET_BENCH_REDIS_DB", "9")), "db_prefix": "arena_fleetbench"}


def fleet_for(root: Path) -> LocalFleet:
    return LocalFleet(root, [{"name": "host-a", "pool": "cpu", "devices": "cpuset=0"},
                             {"name": "host-b", "pool": "cpu", "devices": "cpuset=1"},
                             {"name": "control", "pool": "control", "devices": ""}],
                      redis_db=FLEET_DB["redis_db"], db_prefix=FLEET_DB["db_prefix"],
                      extra_env={"ARENA_BUCKET_URL": f"file://{root}/bucket", "ARENA_LAKE_URL": f"file://{root}/lake"})


def latency(mode: str, n: int) -> list[float]:
    # ignore_cleanup_errors: a run process the stopped daemon left behind may still write under it
    with tempfile.TemporaryDirectory(prefix=f"fleet-bench-{mode}-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        print(f"{mode}: in {tmp}", flush=True)
        plane = Embedded(tmp) if mode == "embedded" else fleet_for(tmp)
        try:
            plane.start() if mode == "embedded" else plane.start(webserver=False)
            instance = plane.instance()
            bucket = Bucket(Path(plane.env["ARENA_BUCKET_URL"][7:]))
            # warm-up: code location loaded, first tick done, one run through each worker
            warm = [put(bucket, tmp)[0]]
            time.sleep(1)
            warm.append(put(bucket, tmp)[0])
            for sid in warm:      # every sample dispatches to an idle pool: nothing queued before it
                wait_finished(instance, sid)
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
            summary(mode, out)   # before the clean-up, which must not lose it
            return out
        finally:
            plane.stop()


def queue(n: int, deadline_s: float = 3600) -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-queue-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        fleet = fleet_for(tmp)
        try:
            fleet.start(webserver=False)
            instance = fleet.instance()
            bucket = Bucket(Path(fleet.env["ARENA_BUCKET_URL"][7:]))
            rng = random.Random(7)
            t0 = time.time()
            sids = [put(bucket, tmp, priority=rng.choice([0, 5, 10]))[0] for _ in range(n)]
            deadline = time.monotonic() + deadline_s
            try:
                while time.monotonic() < deadline:
                    recs = [run_of(instance, sid) for sid in sids]
                    if all(r is not None and r.dagster_run.is_finished for r in recs):
                        break
                    time.sleep(2)
            except KeyboardInterrupt:
                print("interrupted: the figures so far", flush=True)
            report(instance, [run_of(instance, sid) for sid in sids], t0, n)
        finally:
            fleet.stop()


def queue_times(instance, record) -> tuple[float, float | None]:
    """When the run entered the QueuedRunCoordinator's queue (RUN_ENQUEUED: the sensor creates a tick's
    runs first and enqueues them one by one, so creation is not queueing) and when the coordinator
    dequeued it to the launcher (RUN_STARTING: where priority decides)."""
    from dagster import DagsterEventType
    events = instance.all_logs(record.dagster_run.run_id,
                               of_type={DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING})
    at = {e.dagster_event.event_type: e.timestamp for e in events if e.dagster_event}
    return (at.get(DagsterEventType.RUN_ENQUEUED, record.create_timestamp.timestamp()),
            at.get(DagsterEventType.RUN_STARTING))


def report(instance, records: list, t0: float, n: int) -> None:
    """Throughput, device overlap and priority order of N queued submissions, from their Dagster run
    records (None: no run yet). Runs still going at the deadline count as running until now."""
    now = time.time()
    started = [r for r in records if r is not None and r.start_time]
    finished = [r for r in started if r.dagster_run.is_finished]
    statuses = Counter(r.dagster_run.status.value for r in records if r is not None)
    spans = [(r.start_time, r.end_time or now, r.dagster_run.tags.get("arena/devices"),
              int(r.dagster_run.tags["dagster/priority"]), *queue_times(instance, r),
              r.dagster_run.tags.get("arena/worker")) for r in started]
    wall = (max(r.end_time for r in finished) if len(finished) == n else now) - t0
    # no device overlap: on each device (the arena/devices tag its worker wrote), the runs'
    # STARTED..ended intervals from Dagster's run records follow one another, never overlap
    by_device: dict = {}
    for span in spans:
        by_device.setdefault(span[2], []).append(span)
    overlaps, gaps = 0, []
    for runs in by_device.values():
        runs.sort()
        for a, b in zip(runs, runs[1:]):
            overlaps += b[0] < a[1]
            gaps.append(b[0] - a[1])
    max_conc = max((sum(1 for b in spans if b[0] <= a[0] < b[1]) for a in spans), default=0)
    # priority order: an inversion is a lower-priority run the coordinator
    # dequeued (RUN_STARTING) while a higher-priority run was already enqueued, and that run was dequeued later
    dequeued = [s for s in spans if s[5] is not None]
    # (the coordinator launches from a snapshot of the queue taken at the start of each dequeue iteration,
    # every second: a run enqueued less than two iterations before another's launch may not be in it)
    inverted = [(a, b) for a in dequeued for b in dequeued if a[3] < b[3] and a[5] < b[5] and b[4] < a[5]]
    inversions = len(inverted)
    inversions_2s = sum(1 for a, b in inverted if b[4] < a[5] - 2.0)
    blocks: list[list[int]] = []
    for p_ in [s[3] for s in sorted(dequeued, key=lambda s: s[5])]:
        if not blocks or blocks[-1][0] != p_:
            blocks.append([p_, 0])
        blocks[-1][1] += 1
    print(f"queue: {len(finished)}/{n} finished {dict(statuses)}, {len(started)} started, in {wall:.1f} s from the "
          f"first marker ({len(finished) / wall * 60:.1f} runs/min through 2 workers); max concurrent {max_conc}")
    for devices, runs in sorted(by_device.items(), key=lambda kv: str(kv[0])):
        print(f"  device {devices}: {len(runs)} runs on {sorted({str(s[6]) for s in runs})}, "
              f"{runs[0][0] - t0:.1f}..{runs[-1][1] - t0:.1f} s, mean run {statistics.mean(s[1] - s[0] for s in runs):.1f} s")
    print(f"  device overlaps {overlaps} (checked {len(gaps)} consecutive pairs; smallest gap between a run's "
          f"end and the next start on its device {min(gaps) if gaps else float('nan'):.2f} s); "
          f"priority inversions {inversions} ({inversions_2s} where the higher-priority run was queued "
          f"2 s or more before the lower one was launched)")
    if spans:
        print(f"  runs enqueued (sensor) {min(s[4] for s in spans) - t0:.1f}..{max(s[4] for s in spans) - t0:.1f} s; "
              f"submitted priorities {dict(sorted(Counter(r.dagster_run.tags['dagster/priority'] for r in records if r).items()))}")
    print("  dequeue order of priorities (priority x consecutive runs): " + ", ".join(f"{p_}x{k}" for p_, k in blocks))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["latency", "queue"])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--modes", default="embedded,fleet", help="latency: which modes, in order")
    p.add_argument("--deadline-s", type=float, default=3600, help="queue: report what finished by then")
    p.add_argument("--redis-db", type=int, default=FLEET_DB["redis_db"], help="the fleet's Redis DB number (flushed)")
    p.add_argument("--db-prefix", default=FLEET_DB["db_prefix"], help="prefix of the fleet's PostgreSQL database")
    args = p.parse_args()
    FLEET_DB.update(redis_db=args.redis_db, db_prefix=args.db_prefix)
    print("host load before:", os.getloadavg())
    if args.what == "latency":
        results = {mode: latency(mode, args.n) for mode in args.modes.split(",")}   # each prints its summary
        if {"embedded", "fleet"} <= set(results):
            print(f"fleet / embedded: p50 {pct(results['fleet'], 50) / pct(results['embedded'], 50):.2f}x, "
                  f"p99 {pct(results['fleet'], 99) / pct(results['embedded'], 99):.2f}x")
    else:
        queue(args.n, args.deadline_s)
    print("host load after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
