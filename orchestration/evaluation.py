"""The whole evaluation of one submission, from its built image to a stored result: ONE library
function, `evaluate_submission`, with its collaborators passed in (bucket, lake, operator store,
sandbox settings and devices, telemetry factory). The Dagster asset calls it in a few lines; tests
call it without Dagster. No Dagster import here.

What it does, in order: the attempt number; a failed build becomes its result (the same builder as
every other result); the challenge's [limits] applied to the sandbox settings; a secret seed per
evaluation; the sandboxed evaluation (sandbox.evaluate); the run log, the request rows and LoadGen's
logs into the lake; the seed and prompt plan into operator-only storage (never the lake, the bucket
or the API); the result JSON into the lake; the terminal status into the bucket.
"""
from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from challenges import Challenge, load_challenge
from lake.bucket import Bucket
from lake.operator import OperatorStore
from lake.tables import Lake
from lake.vocabulary import PLATFORM_REASONS
from sandbox.build import remove_image
from sandbox.config import SandboxSettings
from sandbox.evaluate import Workload, evaluate_image
from sandbox.verdict import build_result

#: telemetry_factory(container_id, parquet path, sandbox settings) -> a started sidecar with stop()
TelemetryFactory = Callable[[str, Path, SandboxSettings], object]


@dataclass
class Collaborators:
    bucket: Bucket
    lake: Lake
    operator: OperatorStore
    models_dir: Path
    settings: SandboxSettings
    telemetry: TelemetryFactory | None = None
    devices: dict | None = None                      # {"cpuset": ..., "gpus": [...]} of this worker
    seed: Callable[[], int] = field(default=lambda: secrets.randbits(63))
    workload_overrides: dict = field(default_factory=dict)   # tests: a reduced workload


@dataclass
class StoredEvaluation:
    attempt: int
    result: dict
    requests: int
    path: str               # the lake key of result.json


def settings_for(challenge: Challenge, settings: SandboxSettings) -> SandboxSettings:
    """The host's sandbox settings with the challenge's [limits] applied: limits are rules of the
    competition, the same on every host; what a challenge leaves unset keeps the host's default."""
    lim = challenge.limits
    changes = {"memory_bytes": lim.memory_bytes, "cpus": lim.cpus, "pids_limit": lim.pids,
               "tmpfs_bytes": lim.tmpfs_bytes, "load_timeout_s": lim.load_timeout_s,
               "run_timeout_s": lim.run_timeout_s, "threads": lim.threads,
               "stall_timeout_s": lim.stall_timeout_s, "build_timeout_s": lim.build_timeout_s}
    known = set(SandboxSettings.__dataclass_fields__)
    return replace(settings, **{k: v for k, v in changes.items() if v is not None and k in known})


def evaluate_submission(sid: str, image: dict, c: Collaborators) -> StoredEvaluation:
    """Evaluate the built image of submission `sid` (`image`: the build outcome, with `ok`, `tag`,
    `challenge`, `image_id`, `base_image`, `error`) and store everything it produced. Never raises
    for anything the submission does: every outcome is a stored result with a status and a reason.
    Raises PlatformFailure where the platform broke, so that the run is retried."""
    challenge = load_challenge(image["challenge"])
    attempt = c.lake.next_attempt(challenge.name, sid)
    if not image["ok"]:
        result = build_result(submission_id=sid, challenge=challenge.name, status="failed", reason="build",
                              detail=image["error"], base_image=image.get("base_image"), devices=c.devices)
        return _store(sid, attempt, result, c, requests=[])
    c.bucket.set_status(sid, "running")
    c.bucket.clear_log(sid, "run")
    settings = settings_for(challenge, c.settings)
    workload = Workload.for_challenge(challenge, seed=c.seed(), **c.workload_overrides)
    telemetry = None
    with tempfile.TemporaryDirectory(prefix="arena-loadgen-") as tmp:
        # the sidecar writes a local file; the lake publishes it (atomically, journaled) after the run
        telemetry_file = Path(tmp) / "telemetry.parquet"
        if c.telemetry is not None:
            telemetry = lambda container_id: c.telemetry(container_id, telemetry_file, settings)  # noqa: E731
        try:
            ev = evaluate_image(image["tag"], submission_id=sid, challenge=challenge.name, workload=workload,
                                model_dir=challenge.model_dir(c.models_dir), settings=settings, log_root=Path(tmp),
                                on_log=lambda line: c.bucket.append_log(sid, "run", line),
                                image_digest=image.get("image_id"), base_image=image.get("base_image"),
                                telemetry_start=telemetry, devices=c.devices)
        finally:
            remove_image(image["tag"])   # used once; a rerun builds it again
        c.bucket.set_status(sid, "scoring")
        for line in ev.stderr.splitlines():
            c.bucket.append_log(sid, "run", f"[stderr] {line}")
        c.lake.keep_loadgen_logs(challenge.name, sid, attempt, ev.loadgen_dirs)
        c.lake.put_telemetry(challenge.name, sid, attempt, telemetry_file)
    c.operator.write(sid, attempt, ev.operator_record)
    if ev.result["reason"] in PLATFORM_REASONS:
        # the platform broke, not the submission: fail the run so that Dagster retries it (the failure
        # sensor gives the submission failed/platform once the retries are spent)
        raise PlatformFailure(ev.result["measurement"].get("detail") or "platform failure")
    return _store(sid, attempt, ev.result, c, requests=ev.requests)


class PlatformFailure(RuntimeError):
    """An evaluation the platform broke (engine restarted, a prompt about to be repeated, ...)."""


def _store(sid: str, attempt: int, result: dict, c: Collaborators, requests: list[dict]) -> StoredEvaluation:
    c.lake.write_requests(result["challenge"], sid, attempt, requests)
    path = c.lake.write_evaluation(result, attempt)
    c.bucket.set_status(sid, result["status"], result["reason"], detail=result["measurement"].get("detail"))
    return StoredEvaluation(attempt, result, len(requests), path)
