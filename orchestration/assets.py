"""Assets per submission (dynamic partition = submission id) and the leaderboard over all of them.

Thin by design: each asset calls one library function (the evaluation: orchestration.evaluation,
tested without Dagster) and reports status through the bucket.
Anything a submission does wrong ends as data (a terminal status with a reason), never as a failed
Dagster run; a failed run means the platform itself broke (see sensors.platform_failure_sensor).
"""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, DynamicPartitionsDefinition, MetadataValue, Output, asset

from challenges import challenge_names, load_challenge
from lake.leaderboard import build_leaderboard
from lake.operator import OperatorStore
from lake.results import validate_result
from lake.vocabulary import LABEL_SUBMISSION
from orchestration.evaluation import Collaborators, evaluate_submission, settings_for
from orchestration.resources import ArenaStorage, Sandbox
from sandbox.build import build_submission_zip, image_exists
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
    bucket.clear_log(sid, "build")   # a rerun starts its build log afresh
    with tempfile.TemporaryDirectory(prefix="arena-zip-") as tmp:
        zip_file = bucket.fetch_zip(marker.challenge, sid, Path(tmp) / f"{sid}.zip")   # FileNotFoundError: lost
        # the challenge's [limits] (build_timeout_s) are rules of the competition, as in the evaluation
        settings = settings_for(load_challenge(marker.challenge), sandbox.settings())
        result = build_submission_zip(zip_file, tag, settings,
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


def collaborators(storage: ArenaStorage, sandbox: Sandbox) -> Collaborators:
    settings = sandbox.settings()        # the worker's devices applied (sandbox/devices.py)
    return Collaborators(
        bucket=storage.bucket(), lake=storage.lake(), operator=OperatorStore(), models_dir=storage.models_dir(),
        settings=settings, devices={"cpuset": settings.cpuset, "gpus": list(settings.gpus)},
        telemetry=lambda container_id, path, s: Sidecar.start(
            container_id, path, gpu_indices=[int(g) for g in s.gpus if g.isdigit()]))


@asset(partitions_def=submissions_partitions, group_name="submission",
       description="The sandboxed run: accuracy, warm-up and timed LoadGen runs, with telemetry; the stored result.")
def evaluation(context: AssetExecutionContext, storage: ArenaStorage, sandbox: Sandbox,
               submission_image: dict) -> Output[dict]:
    sid = context.partition_key
    if submission_image["ok"] and not image_exists(submission_image["tag"]):
        # images are removed after each run: an operator re-materializing only this asset rebuilds it
        submission_image = build(storage, sandbox, sid)
    stored = evaluate_submission(sid, submission_image, collaborators(storage, sandbox))
    result = stored.result
    context.log.info(f"{sid}: {result['status']} {result['reason'] or ''}")
    return Output({"attempt": stored.attempt, "result": result, "path": str(stored.path)},
                  metadata={"status": result["status"], "reason": result["reason"] or "",
                            "tokens_per_second": result["metrics"]["tokens_per_second"] or 0.0,
                            "requests": stored.requests})


@asset(partitions_def=submissions_partitions, group_name="submission",
       description="The scored result JSON (schema-checked, stored in the lake by the evaluation).")
def scores(context: AssetExecutionContext, evaluation: dict) -> Output[dict]:
    result = validate_result(evaluation["result"])
    return Output(result, metadata={"status": result["status"], "reason": result["reason"] or "",
                                    "result": MetadataValue.path(evaluation["path"])})


@asset(group_name="leaderboard", deps=[scores],
       description="Best successful, valid evaluation per participant, per challenge (DuckDB over the lake).")
def leaderboard(context: AssetExecutionContext, storage: ArenaStorage) -> Output[dict]:
    lake_root = storage.settings().lake
    sizes = {}
    for name in challenge_names():
        table = build_leaderboard(lake_root, name)
        sizes[name] = table.num_rows
    return Output(sizes, metadata={f"rows_{k}": v for k, v in sizes.items()})
