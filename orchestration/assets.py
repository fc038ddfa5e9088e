"""Assets per submission (dynamic partition = submission id) and the leaderboard over all of them.

Thin by design: each asset calls into sandbox/ and lake/ and reports status through the bucket.
Anything a submission does wrong ends as data (a terminal status with a reason), never as a failed
Dagster run; a failed run means the platform itself broke (see sensors.platform_failure_sensor).
"""

import platform
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path

from dagster import AssetExecutionContext, DynamicPartitionsDefinition, MetadataValue, Output, asset

from challenges import challenge_names, load_challenge
from lake.leaderboard import build_leaderboard
from lake.results import empty_metrics
from lake.tables import REQUESTS_SCHEMA
from orchestration.resources import ArenaStorage, Sandbox
from sandbox import __version__ as HARNESS_VERSION
from sandbox.build import build_submission_zip, image_exists, remove_image
from lake.vocabulary import LABEL_SUBMISSION
from lake.vocabulary import utc_iso
from sandbox.evaluate import Workload, evaluate_image
from sandbox.telemetry import Sidecar

submissions_partitions = DynamicPartitionsDefinition(name="submissions")


def _marker(storage: ArenaStorage, sid: str):
    marker = storage.bucket().marker(sid)
    if marker is None:
        raise RuntimeError(f"no marker for submission {sid} in the bucket")
    return marker


def build(storage: ArenaStorage, sandbox: Sandbox, sid: str) -> dict:
    """Build a submission's image from its zip in the bucket; the build log goes to the bucket."""
    bucket = storage.bucket()
    marker = _marker(storage, sid)
    bucket.set_status(sid, "building")
    tag = f"arena-sub/{sid.lower()}:latest"
    bucket.log_path(sid, "build").unlink(missing_ok=True)   # a rerun starts its build log afresh
    result = build_submission_zip(bucket.zip_path(marker.challenge, sid), tag, sandbox.settings(),
                                  lambda line: bucket.append_log(sid, "build", line),
                                  labels={LABEL_SUBMISSION: sid})
    bucket.append_log(sid, "build", f"[arena] build {'succeeded' if result.ok else 'failed'} "
                                    f"in {result.seconds:.1f} s" + (f": {result.error}" if result.error else ""))
    return {"ok": result.ok, "tag": tag, "image_id": result.image_id, "size_bytes": result.size_bytes,
            "base_image": result.base_image, "seconds": result.seconds, "error": result.error,
            "challenge": marker.challenge}


@asset(partitions_def=submissions_partitions, group_name="submission",
       description="The submission's container image, built with its own files only as context.")
def submission_image(context: AssetExecutionContext, storage: ArenaStorage, sandbox: Sandbox) -> Output[dict]:
    value = build(storage, sandbox, context.partition_key)
    return Output(value, metadata={"ok": value["ok"], "build_seconds": value["seconds"],
                                   "image_id": value["image_id"] or "", "error": value["error"] or ""})


@contextmanager
def removing_image(tag: str):
    try:
        yield
    finally:
        remove_image(tag)


@asset(partitions_def=submissions_partitions, group_name="submission",
       description="The sandboxed run: accuracy, warm-up and timed LoadGen runs, with telemetry.")
def evaluation(context: AssetExecutionContext, storage: ArenaStorage, sandbox: Sandbox,
               submission_image: dict) -> Output[dict]:
    sid = context.partition_key
    bucket, lake = storage.bucket(), storage.lake()
    challenge = load_challenge(submission_image["challenge"])
    attempt = lake.next_attempt(challenge.name, sid)
    if submission_image["ok"] and not image_exists(submission_image["tag"]):
        # images are removed after each run: an operator re-materializing only this asset rebuilds it
        submission_image = build(storage, sandbox, sid)
    if not submission_image["ok"]:
        return Output({"attempt": attempt, "result": None, "image": submission_image},
                      metadata={"status": "failed", "reason": "build"})
    bucket.set_status(sid, "running")
    log_path = bucket.log_path(sid, "run")
    log_path.unlink(missing_ok=True)
    settings = sandbox.settings()
    workload = Workload.for_challenge(challenge, private_seed=secrets.randbits(63))
    # The image is used once: removed after the run, whatever happens (a rerun builds it again).
    with tempfile.TemporaryDirectory(prefix="arena-loadgen-") as tmp, removing_image(submission_image["tag"]):
        ev = evaluate_image(
            submission_image["tag"], submission_id=sid, challenge=challenge.name, workload=workload,
            model_dir=challenge.model_dir(storage.models_dir()), settings=settings, log_root=Path(tmp),
            on_log=lambda line: bucket.append_log(sid, "run", line),
            image_digest=submission_image["image_id"], base_image=submission_image["base_image"],
            telemetry_start=lambda container_id: Sidecar.start(
                container_id, lake.telemetry_path(challenge.name, sid, attempt),
                gpu_indices=[int(g) for g in settings.gpus if g.isdigit()]))
        for line in ev.stderr.splitlines():
            bucket.append_log(sid, "run", f"[stderr] {line}")
        lake.write_requests(challenge.name, sid, attempt, ev.requests, REQUESTS_SCHEMA)
        lake.keep_loadgen_logs(challenge.name, sid, attempt, ev.loadgen_dirs)
    context.log.info(f"{sid}: {ev.result['status']} {ev.result['reason'] or ''}")
    return Output({"attempt": attempt, "result": ev.result},
                  metadata={"status": ev.result["status"], "reason": ev.result["reason"] or "",
                            "tokens_per_second": ev.result["metrics"]["tokens_per_second"] or 0.0,
                            "requests": len(ev.requests)})


@asset(partitions_def=submissions_partitions, group_name="submission",
       description="The scored result JSON (schema-checked), in the lake; the submission's terminal status.")
def scores(context: AssetExecutionContext, storage: ArenaStorage, submission_image: dict,
           evaluation: dict) -> Output[dict]:
    sid = context.partition_key
    bucket, lake = storage.bucket(), storage.lake()
    bucket.set_status(sid, "scoring")
    result = evaluation["result"] or build_failure_result(sid, evaluation.get("image", submission_image))
    path = lake.write_evaluation(result, evaluation["attempt"])
    bucket.set_status(sid, result["status"], result["reason"],
                      detail=result["measurement"].get("detail"))
    return Output(result, metadata={"status": result["status"], "reason": result["reason"] or "",
                                    "result": MetadataValue.path(str(path))})


def build_failure_result(sid: str, image: dict) -> dict:
    """The result of a submission that never ran: every metric unmeasured."""
    now = utc_iso()
    return {"schema_version": 1, "submission_id": sid, "challenge": image["challenge"],
            "status": "failed", "reason": "build", "metrics": empty_metrics(),
            "measurement": {"engine": "none", "scenario": "offline", "valid": None, "repeats": 0,
                            "tokens_per_second_cv": None, "detail": image["error"]},
            "environment": {"runtime": None, "image_digest": None, "base_image": image["base_image"],
                            "gpu": None, "host": platform.node(), "harness_version": HARNESS_VERSION},
            "started_at": now, "finished_at": now}


@asset(group_name="leaderboard", deps=[scores],
       description="Best successful, valid evaluation per participant, per challenge (DuckDB over the lake).")
def leaderboard(context: AssetExecutionContext, storage: ArenaStorage) -> Output[dict]:
    lake_root = storage.settings().lake
    sizes = {}
    for name in challenge_names():
        table = build_leaderboard(lake_root, name)
        sizes[name] = table.num_rows
    return Output(sizes, metadata={f"rows_{k}": v for k, v in sizes.items()})
