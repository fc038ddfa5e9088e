"""A small, real arena for the dashboards: a lake and a bucket written by the platform's own writers,
telemetry sampled by the real sidecar from a real container, and a Dagster instance with active runs."""
from __future__ import annotations

import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker

from lake.bucket import Bucket, Marker
from lake.leaderboard import build_leaderboard
from lake.results import empty_metrics
from lake.tables import REQUESTS_SCHEMA, Lake
from lake.vocabulary import LABEL_MANAGED

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "tests" / "fixtures" / "telemetry" / "h200_replay_trace.json"
IMAGE = "arena/python-cpu:1"
CHALLENGE = "efficient-decode"
BUSY = "import time\nwhile True:\n    sum(range(20000)); time.sleep(0.005)"


def ulid(n: int) -> str:
    """A time-ordered id shaped like intake's ULIDs (hive partition values must read as text)."""
    return f"01JZ8K3M{n:02d}" + "QRSTVWXYZ0ABCDEF"


@dataclass(frozen=True)
class Entry:
    """One submission of the test arena and what its evaluation said."""
    n: int
    user: str
    name: str
    status: str
    reason: str | None = None
    tps: float | None = None
    valid: bool | None = True
    runtime: str | None = "runsc"
    accuracy: float | None = 1.0
    detail: str | None = None
    metrics: dict = field(default_factory=dict)
    remeasured: int | None = None

    @property
    def id(self) -> str:
        return ulid(self.n)


FAST = Entry(1, "alice", "Blockwise KV cache", "success", tps=52.4)
ALICE_OLD = Entry(2, "alice", "First try", "success", tps=30.1)
BASELINE = Entry(3, "bob", "Numpy baseline", "success", tps=12.5, runtime="runc",
                 metrics={"peak_memory_bw_GBs": 812.5, "energy_joules": 40.2}, remeasured=1)
WRONG = Entry(4, "carol", "Speculative, wrong tokens", "rejected", "accuracy", tps=80.0, accuracy=0.42,
              detail="token accuracy 0.4200 (public 0.45, private 0.40), below the 0.99 gate")
BROKEN = Entry(5, "dave", "Broken build", "failed", "build", tps=None, valid=None, runtime=None, accuracy=None,
               detail="pip install failed: no matching distribution for torch==9.9")
NOISY = Entry(6, "erin", "Noisy timer", "success", tps=45.0, valid=False)
EVALUATED = (FAST, ALICE_OLD, BASELINE, WRONG, BROKEN, NOISY)
# In the bucket only: (n, user, status, pool)
WAITING = ((7, "frank", "queued", "cpu"), (8, "gina", "queued", "gpu-h100"), (9, "heidi", "building", "cpu"),
           (10, "ivan", "running", "cpu"))
#: The fleet's pools file of the test arena: two CPU workers on two hosts, one GPU worker.
POOLS_TOML = """
[[worker]]
name = "cpu-a"
pool = "cpu"
host = "worker-a.test"
devices = "cpuset=0"

[[worker]]
name = "cpu-b"
pool = "cpu"
host = "worker-b.test"
devices = "cpuset=1"

[[worker]]
name = "gpu-0"
pool = "gpu-h100"
host = "gpu-1.test"
devices = "gpus=GPU-00000000-0000-0000-0000-000000000000"
"""


def result_of(e: Entry, t0: datetime) -> dict:
    metrics = empty_metrics() | {"tokens_per_second": e.tps, "accuracy": e.accuracy}
    if e.tps is not None:
        metrics |= {"latency_p99_ms": 1000 * 64 / e.tps * 1.3, "ttft_p50_ms": 2.0 + 100 / e.tps,
                    "ttft_p99_ms": 4.0 + 200 / e.tps, "tpot_p50_ms": 1000 / e.tps,
                    "tpot_p99_ms": 1300 / e.tps, "peak_memory_bytes": 180 * 2**20}
    metrics |= e.metrics
    measurement = {"engine": "mlperf-loadgen 6.0.1" if e.tps else "none", "scenario": "offline",
                   "valid": e.valid, "repeats": 2 if e.tps else 0,
                   "tokens_per_second_cv": 0.012 if e.tps else None,
                   "tokens_per_second_runs": [e.tps * 0.99, e.tps * 1.01] if e.tps else []}
    if e.detail:
        measurement["detail"] = e.detail
    if e.remeasured is not None:   # cpu's interference check: re-measured, clean in the end
        measurement["interference"] = {
            "threshold": 0.05, "max_remeasures": 2, "remeasured": e.remeasured, "disturbed": False,
            "runs": [{"label": "perf-1", "foreign_fraction": 0.31, "steal_fraction": 0.0},
                     {"label": "perf-1", "foreign_fraction": 0.01, "steal_fraction": 0.0}]}
    return {"schema_version": 1, "submission_id": e.id, "challenge": CHALLENGE, "status": e.status,
            "reason": e.reason, "metrics": metrics, "measurement": measurement,
            "environment": {"runtime": e.runtime, "image_digest": f"sha256:{e.n:064x}",
                            "base_image": "arena/python-cpu:1", "gpu": None, "host": "worker-a.test" if e.n % 2 else "worker-b.test",
                            "harness_version": "0.1.0"},
            "started_at": (t0 + timedelta(minutes=e.n)).isoformat(),
            "finished_at": (t0 + timedelta(minutes=e.n, seconds=40)).isoformat()}


def request_rows(e: Entry) -> list[dict]:
    """Requests shaped like sandbox.evaluate.request_rows: accuracy pass, a warm-up, two timed runs."""
    rows, t = [], 0
    tpot = 1000 / e.tps
    for run, count in (("accuracy", 8), ("warmup-1", 8), ("perf-1", 16), ("perf-2", 16)):
        for i in range(count):
            ttft = 2.0 + (i % 4) * 0.5
            latency = ttft + 31 * tpot * (1 + (i % 3) * 0.05)
            sent = t + i * 2_000_000
            first, done = sent + int(ttft * 1e6), sent + int(latency * 1e6)
            correct = 32 if e.accuracy == 1.0 else 13
            rows.append({"run": run, "request_id": f"{run}-r{i}", "prompt_index": i % 8,
                         "prompt_set": "public" if i % 2 else "private", "sent_ns": sent,
                         "first_token_ns": first, "done_ns": done, "ttft_ms": ttft, "tpot_ms": tpot,
                         "latency_ms": latency, "tokens": 32, "correct_tokens": correct, "expected_tokens": 32})
        t = max(r["done_ns"] for r in rows) + 50_000_000
    return rows


def sample_telemetry(lake: Lake, seconds: float = 1.5):
    """Run the real sidecar against a real container: FAST gets measured container rows only,
    BASELINE gets the same plus GPU rows replayed from the H200 trace (source = 'replay').
    Returns the container, left running for the admin page; the caller removes it."""
    from sandbox.telemetry import Sidecar
    from sandbox.telemetry.replay import ReplayNvml

    client = docker.from_env()
    container = client.containers.run(
        IMAGE, ["python3", "-c", BUSY], detach=True, network_mode="none", runtime="runc",
        name=f"arena-dashboards-test-{uuid.uuid4().hex[:8]}",
        labels={LABEL_MANAGED: "1", "org.decode-arena.submission": ulid(10)})
    try:
        local = Path(tempfile.mkdtemp(prefix="arena-seed-telemetry-"))
        measured = Sidecar.start(container.id, local / "fast.parquet", interval_s=0.2,
                                 docker_client=client)
        replayed = Sidecar.start(container.id, local / "baseline.parquet", interval_s=0.2,
                                 docker_client=client, gpu_indices=(0,), nvml=ReplayNvml.from_file(TRACE))
        time.sleep(seconds)
        for sidecar in (measured, replayed):
            summary = sidecar.stop()
            assert not summary.crashed and summary.samples >= 3, summary
        lake.put_telemetry(CHALLENGE, FAST.id, 1, local / "fast.parquet")     # published as the platform does
        lake.put_telemetry(CHALLENGE, BASELINE.id, 1, local / "baseline.parquet")
    except BaseException:
        container.remove(force=True)
        raise
    return container


def write_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Dockerfile", "FROM arena/python-cpu:1\n")
        zf.writestr("requirements.txt", "")
    return path


@dataclass
class SeededArena:
    home: Path
    lake: Lake
    bucket: Bucket
    dagster_home: Path
    container_name: str
    pools_file: Path


def build_arena(home: Path) -> tuple[SeededArena, object]:
    lake, bucket = Lake(home / "lake"), Bucket(home / "bucket")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    t0 = now - timedelta(hours=3)
    zip_path = write_zip(home / "submission.zip")
    everyone = ([(e.n, e.user, e.name, "cpu") for e in EVALUATED]
                + [(n, u, f"{u}'s decoder", pool) for n, u, _, pool in WAITING])
    for n, user, name, pool in everyone:
        created = (t0 + timedelta(minutes=n) if n < 7 else now - timedelta(hours=2, minutes=10 - n))
        created_at = created.isoformat().replace("+00:00", "Z")
        bucket.put_submission(Marker(id=ulid(n), challenge=CHALLENGE, user=user, sha256=f"{n:064x}",
                                     created_at=created_at, display_name=name, queue=pool), zip_path)
        lake.write_submission({"id": ulid(n), "challenge": CHALLENGE, "user": user, "display_name": name,
                               "sha256": f"{n:064x}", "created_at": created_at, "size_bytes": 1234})
    for n, _, status, _ in WAITING:
        if status != "queued":
            bucket.set_status(ulid(n), status)
    for e in EVALUATED:
        lake.write_evaluation(result_of(e, t0), attempt=1)
        bucket.set_status(e.id, "building")
        bucket.set_status(e.id, e.status, e.reason)
    for e in (FAST, BASELINE, WRONG):
        lake.write_requests(CHALLENGE, e.id, 1, request_rows(e), REQUESTS_SCHEMA)
    bucket.append_log(FAST.id, "build", "Step 1/3 : FROM arena/python-cpu:1")
    logs = home / "loadgen-tmp" / "perf-1"
    logs.mkdir(parents=True)
    (logs / "mlperf_log_summary.txt").write_text("Scenario : Offline\nResult is : VALID\n")
    (logs / "mlperf_log_detail.txt").write_text(":::MLLOG {}\n")
    lake.keep_loadgen_logs(CHALLENGE, FAST.id, 1, [logs])
    container = sample_telemetry(lake)
    try:
        build_leaderboard(lake, CHALLENGE)
        add_dagster_runs(home / "dagster")
    except BaseException:
        container.remove(force=True)
        raise
    (home / "pools.toml").write_text(POOLS_TOML)
    return SeededArena(home, lake, bucket, home / "dagster", container.name, home / "pools.toml"), container


def add_dagster_runs(home: Path) -> None:
    """A real Dagster instance (SQLite storage, the platform's dagster.yaml) holding active runs."""
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.storage.dagster_run import DagsterRun

    from orchestration.config import write_dagster_yaml
    from orchestration.sensors import RERUN_PRIORITY, run_tags

    write_dagster_yaml(home)
    # Queued runs must say where their job lives; this names the platform's code location.
    origin = RemoteJobOrigin(job_name="evaluate_submission", repository_origin=RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin("orchestration.definitions"),
        repository_name="__repository__"))
    with DagsterInstance.from_config(str(home)) as instance:
        for n, queue, priority, status in ((7, "cpu", 0, DagsterRunStatus.QUEUED),
                                           (8, "cpu", 0, DagsterRunStatus.QUEUED),
                                           (10, "cpu", 0, DagsterRunStatus.STARTED),
                                           (4, "gpu-h100", RERUN_PRIORITY, DagsterRunStatus.QUEUED)):
            instance.add_run(DagsterRun(job_name="evaluate_submission", run_id=str(uuid.uuid4()),
                                        status=status, tags=run_tags(ulid(n), queue, priority),
                                        remote_job_origin=origin))
