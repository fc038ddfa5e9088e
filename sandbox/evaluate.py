"""One evaluation of a built image: load, accuracy (AccuracyOnly), warm-up, timed repeats
(PerformanceOnly), all in one sandboxed container session, measured from outside.

The parts: `sandbox.workload` (what is sent: the workload and the evaluation's prompt plan, never a
prompt twice), `sandbox.session` (the container session), `sandbox.verdict` (judging, and the one
result builder). `evaluate_image` composes them and returns an `Evaluation`: the result JSON of
DESIGN.md, the per-request rows, the LoadGen logs and the operator record (the secret seed and the
plan, for operator-only storage: never in the result). It never raises for anything a submission
does; every outcome is a status and a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from lake.vocabulary import utc_iso
from sandbox.config import SandboxSettings
from sandbox.runner import ContainerExit
from sandbox.session import SessionOutcome, run_session
from sandbox.verdict import Judge, build_result, request_rows, verdict
from sandbox.workload import PromptPlan, Workload, prompt_digest

__all__ = ["Evaluation", "Workload", "evaluate_image", "regenerate_prompts", "verify_prompts"]


@dataclass
class Evaluation:
    result: dict
    requests: list[dict]
    loadgen_dirs: list[Path]
    stderr: str
    container: ContainerExit | None = None
    telemetry: object | None = None
    #: operator-only: the secret seed and the plan; `regenerate_prompts` rebuilds every prompt from it
    operator_record: dict = field(default_factory=dict)
    outcome: SessionOutcome | None = None


def evaluate_image(image: str, *, submission_id: str, challenge: str, workload: Workload,
                   model_dir: Path | None, settings: SandboxSettings, log_root: Path,
                   on_log: Callable[[str], None] = lambda line: None,
                   image_digest: str | None = None, base_image: str | None = None,
                   telemetry_start: Callable[[str], object] | None = None,
                   devices: dict | None = None) -> Evaluation:
    """Run the whole evaluation of one image. `telemetry_start(container_id)` may return a sidecar
    with a `stop()` method; it is always stopped."""
    started_at = utc_iso()
    plan = workload.plan()
    judge = Judge(workload, plan)
    out = run_session(image, submission_id, workload, plan, model_dir, settings, log_root, on_log,
                      telemetry_start, judge.accuracy_gate)
    if out.runs and not out.error:
        on_log(f"[arena] auditing timed outputs ({workload.audit_fraction:.0%} of them)")
        judge.audit_timed(out.runs)
    status, reason, detail = verdict(out, judge, workload)
    digest = prompt_digest(out.sent)
    on_log(f"[arena] {len(out.sent)} prompts sent, none twice ({digest[:19]}…); reference on the host: "
           f"{judge.reference_host_s:.2f} s")
    result = build_result(submission_id=submission_id, challenge=challenge, status=status, reason=reason,
                          detail=detail, scenario=workload.scenario, started_at=started_at, out=out, judge=judge,
                          gpus=settings.gpus,
                          devices=devices or {"cpuset": settings.cpuset, "gpus": list(settings.gpus)}, image_digest=image_digest, base_image=base_image,
                          prompt_set=digest, prompts_sent=len(out.sent))
    all_runs = ([out.accuracy_run] if out.accuracy_run else []) + out.warmups + out.discarded + out.runs
    where = {tuple(p): (x.label, i) for x in plan.passes for i, p in enumerate(x.prompts)}
    record = {"submission_id": submission_id, "challenge": challenge, "seed": workload.seed,
              "passes": plan.sizes(), "order": [list(where[p]) for p in out.sent], "prompt_set": digest,
              "prompts_sent": len(out.sent)}
    return Evaluation(result=result, requests=request_rows(all_runs, plan, judge),
                      loadgen_dirs=[r.log_dir for r in all_runs], stderr=out.stderr, container=out.exit,
                      telemetry=out.telemetry, operator_record=record, outcome=out)


def regenerate_prompts(workload: Workload, record: dict) -> list[list[int]]:
    """Every prompt an evaluation sent, in send order, rebuilt from its operator record (the seed,
    the passes in order with their sizes, and (pass, index) of every prompt in send order)."""
    plan = PromptPlan(replace(workload, seed=int(record["seed"])))
    for p in record["passes"]:
        if p["label"] == "accuracy":
            plan.accuracy()
        else:
            plan.fresh(p["label"], p["count"])
    by_label = {p.label: p.prompts for p in plan.passes}
    return [by_label[label][i] for label, i in record["order"]]


def verify_prompts(challenge, record: dict, result: dict | None) -> tuple[bool, str, int, str]:
    """Regenerate an evaluation's prompts from its operator record and compare their digest with the
    stored result's `measurement.prompt_set`: (ok, digest, prompts, what was compared)."""
    sent = regenerate_prompts(Workload.for_challenge(challenge, seed=int(record["seed"])), record)
    digest = prompt_digest(sent)
    stored = (result or {}).get("measurement", {}).get("prompt_set")
    if stored is None:
        return False, digest, len(sent), "the stored result has no prompt_set"
    return digest == stored and len(sent) == result["measurement"].get("prompts_sent"), digest, len(sent), stored
