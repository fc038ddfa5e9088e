"""Judging what a session produced, and the ONE builder of the result JSON (DESIGN.md).

`Judge` scores the accuracy pass fully (every output, public and private prompts alike) and audits
the timed outputs: all of them where the gate's `audit_fraction` is 1 (the tiny challenge: exact
greedy references computed batched on the host), else a sample drawn with the OS's randomness
(`random.SystemRandom`), which the entry cannot predict. Host seconds spent on references are
counted. `build_result` makes every result, from a successful evaluation to a failed build.
"""
from __future__ import annotations

import math
import platform
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from challenges.interfaces import Judgement
from lake.results import empty_metrics
from lake.vocabulary import utc_iso
from sandbox import __version__ as HARNESS_VERSION
from sandbox.gpu import gpu_isolation
from sandbox.harness import RequestRecord, ScenarioRun
from sandbox.workload import PromptPlan, Workload

_random = random.SystemRandom()
#: timed outputs judged per reference call while auditing
AUDIT_CHUNK = 256


@dataclass
class Judge:
    workload: Workload
    plan: PromptPlan
    reference_host_s: float = 0.0
    accuracy: dict | None = None            # all / public / private
    accuracy_detail: str | None = None
    accuracy_passed: bool | None = None
    audit: dict | None = None               # fraction / judged / passed (+ accuracy, detail)
    judged: dict = field(default_factory=dict)    # request id -> (correct, expected)

    def _judge(self, records: list[RequestRecord]):
        started = time.perf_counter()
        judgements = self.workload.gate.judge(self.workload.model, [r.prompt for r in records],
                                              [r.tokens for r in records], self.workload.max_new_tokens)
        self.reference_host_s += time.perf_counter() - started
        for rec, j in zip(records, judgements):
            self.judged[rec.rid] = (j.passed, j.scored)
        return judgements

    def accuracy_gate(self, run: ScenarioRun) -> bool:
        """Judge the whole accuracy pass; True when the gate holds on public and private prompts alike."""
        sets = self.plan.passes[0].sets
        records = sorted(run.records, key=lambda r: r.index)
        judgements = self._judge(records)
        gate = self.workload.gate
        verdicts = {"all": gate.verdict(judgements)}
        for name in ("public", "private"):
            mine = [j for r, j in zip(records, judgements) if sets[r.index] == name]
            verdicts[name] = gate.verdict(mine) if mine else None
        self.accuracy = {k: (None if v is None or v.accuracy is None else round(v.accuracy, 6))
                         for k, v in verdicts.items()}
        if self.accuracy["all"] is None:
            self.accuracy["all"] = 0.0
        failed = [k for k, v in verdicts.items() if v is not None and not v.passed]
        self.accuracy_passed = not failed
        if failed:
            self.accuracy_detail = (f"accuracy pass: {verdicts['all'].detail}; public {self.accuracy['public']}, "
                                    f"private {self.accuracy['private']}; failed on: {', '.join(failed)}")
        return self.accuracy_passed

    def audit_timed(self, runs: list[ScenarioRun]) -> bool:
        """Judge `audit_fraction` of the timed outputs (all where it is 1), in random order and in
        chunks; True when they pass. Judging stops as soon as the verdict cannot be a pass even if
        every output left were perfect, so a decoder that answers fast garbage cannot make the host
        spend minutes on references."""
        records = [r for run in runs for r in run.records]
        fraction = self.workload.audit_fraction
        if not records:
            self.audit = {"fraction": fraction, "judged": 0, "passed": None}
            return True
        k = len(records) if fraction >= 1 else max(1, math.ceil(fraction * len(records)))
        sample = _random.sample(records, k)
        gate, n = self.workload.gate, self.workload.max_new_tokens
        judgements: list = []
        for start in range(0, len(sample), AUDIT_CHUNK):
            judgements += self._judge(sample[start:start + AUDIT_CHUNK])
            left = len(sample) - len(judgements)
            if left and not gate.verdict(judgements + [Judgement(scored=n, passed=n, top1=n)] * left).passed:
                break     # failed whatever the rest holds
        verdict = gate.verdict(judgements)
        self.audit = {"fraction": fraction, "judged": len(judgements), "passed": bool(verdict.passed),
                      "accuracy": verdict.accuracy, "detail": verdict.detail, "drawn": len(sample)}
        return verdict.passed


def verdict(out, judge: Judge, workload: Workload) -> tuple[str, str | None, str | None]:
    """(status, reason, detail) of a session (sandbox.session.SessionOutcome) after judging."""
    if judge.accuracy_passed is False:
        return "rejected", "accuracy", (f"{judge.accuracy_detail} (gate {workload.accuracy_threshold} on "
                                        f"public and private prompts alike)")
    if out.error:
        oom = bool(out.exit and out.exit.oom_killed)
        if out.error_kind == "crash" and oom:
            status, reason = "failed", "oom"
        elif out.error_kind == "timeout":
            status, reason = "timeout", "timeout"
        else:
            status, reason = "failed", out.error_kind
        detail = out.error + (" (out of memory)" if oom else "")
        if out.error_kind == "crash" and out.exit and out.exit.exit_code is not None:
            detail += f" (exit code {out.exit.exit_code})"
        return status, reason, detail
    if judge.audit is not None and judge.audit["passed"] is False:
        return "rejected", "accuracy", (f"timed runs: {judge.audit['judged']} output(s) audited "
                                        f"({judge.audit['fraction']:.0%} of them): {judge.audit['detail']}")
    return "success", None, None


# ---- figures ------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def performance_metrics(runs: list[ScenarioRun]) -> dict:
    """Figures from LoadGen where it reports them, else from the harness's own arrival timestamps."""
    tps = []
    for run in runs:
        value = run.loadgen.get("result_tokens_per_second") or run.loadgen.get("result_completed_tokens_per_second")
        if value is None:   # LoadGen reports no token throughput in this scenario: tokens over the window
            recs = [r for r in run.records if r.done_ns]
            span = (max(r.done_ns for r in recs) - min(r.sent_ns for r in recs)) / 1e9 if recs else 0
            value = sum(len(r.tokens) for r in recs) / span if span else None
        tps.append(float(value) if value is not None else None)
    records = [r for run in runs for r in run.records if r.done_ns is not None]
    ttft = [(r.first_token_ns - r.sent_ns) / 1e6 for r in records if r.first_token_ns]
    tpot = [(r.arrivals[-1][0] - r.first_token_ns) / 1e6 / (len(r.tokens) - 1)
            for r in records if r.first_token_ns and len(r.tokens) > 1]
    latency = [float(run.loadgen["result_99.00_percentile_latency_ns"]) / 1e6 for run in runs
               if "result_99.00_percentile_latency_ns" in run.loadgen]
    good = [t for t in tps if t is not None]
    median = statistics.median(good) if good else None
    return {
        "tokens_per_second": median,
        "latency_p99_ms": statistics.median(latency) if latency else _pct(
            [(r.done_ns - r.sent_ns) / 1e6 for r in records], 99),
        "ttft_p50_ms": _pct(ttft, 50), "ttft_p99_ms": _pct(ttft, 99),
        "tpot_p50_ms": _pct(tpot, 50), "tpot_p99_ms": _pct(tpot, 99),
        "_runs": good,
        "_cv": (statistics.pstdev(good) / median) if len(good) > 1 and median else None,
        "_valid": [run.loadgen.get("result_validity") == "VALID" if run.loadgen else None for run in runs],
    }


def telemetry_window(summary, runs: list[ScenarioRun]) -> dict:
    """Telemetry aligned to the timed window of the harness; all null when telemetry is missing."""
    if summary is None:
        return {"_status": "missing"}
    if getattr(summary, "crashed", False):
        return {"_status": f"missing: sampler crashed ({getattr(summary, 'error', '')})"}
    if not runs:
        return {"_status": "recorded"}
    start = min(r.sent_ns for run in runs for r in run.records)
    end = max((r.done_ns or r.sent_ns) for run in runs for r in run.records)
    window = dict(summary.window(start, end))
    if window.get("gpu_source") == "replay":   # replayed GPU figures never reach a result
        for key in ("peak_memory_bw_GBs", "energy_joules", "energy_method"):
            window[key] = None
    window["_status"] = "recorded (" + ",".join(getattr(summary, "sources", ())) + ")"
    return window


def loadgen_version() -> str:
    from importlib.metadata import version
    try:
        return version("mlcommons-loadgen")
    except Exception:
        return "unknown"


# ---- the one result builder ---------------------------------------------------------------------

def build_result(*, submission_id: str, challenge: str, status: str, reason: str | None, detail: str | None,
                 scenario: str = "offline", started_at: str | None = None, out=None, judge: Judge | None = None,
                 gpus=(), devices: dict | None = None, image_digest: str | None = None,
                 base_image: str | None = None, prompt_set: str | None = None, prompts_sent: int = 0,
                 extra_measurement: dict | None = None) -> dict:
    """The result JSON of DESIGN.md. Every path goes through here: a session that ran (`out`, the
    SessionOutcome, with its `judge`), one that never started, and a build that failed. What was not
    measured is null."""
    runs = out.runs if out is not None else []
    perf = performance_metrics(runs) if runs else {}
    metrics = empty_metrics() | {k: v for k, v in perf.items() if not k.startswith("_")}
    accuracy = judge.accuracy if judge is not None else None
    metrics["accuracy"] = (accuracy or {}).get("all")
    metrics["load_time_s"] = out.load_time_s if out is not None else None
    window = telemetry_window(out.telemetry, runs) if out is not None else {"_status": None}
    for key in ("peak_memory_bw_GBs", "energy_joules", "peak_memory_bytes"):
        metrics[key] = window.get(key)
    if metrics["energy_joules"] and metrics["tokens_per_second"]:
        metrics["tokens_per_joule"] = sum(len(r.tokens) for run in runs for r in run.records) / metrics["energy_joules"]
    valid_runs = perf.get("_valid", [])
    runtime = out.runtime if out is not None else None
    interference = out.interference if out is not None else None
    now = utc_iso()
    measurement = {
        "engine": f"mlperf-loadgen {loadgen_version()}" if out is not None else "none", "scenario": scenario,
        "valid": (all(valid_runs) and not (interference or {}).get("disturbed")) if valid_runs else None,
        "repeats": len(runs), "interference": interference,
        "tokens_per_second_cv": perf.get("_cv"), "tokens_per_second_runs": perf.get("_runs", []),
        "loadgen_valid_runs": valid_runs,
        "accuracy_public": (accuracy or {}).get("public"), "accuracy_private": (accuracy or {}).get("private"),
        "telemetry": window.get("_status"), "detail": detail,
        "prompt_set": prompt_set, "prompts_sent": prompts_sent,
        "reference_host_s": round(judge.reference_host_s, 3) if judge is not None and out is not None else None,
        "audit": ({k: judge.audit[k] for k in ("fraction", "judged", "passed")}
                  if judge is not None and judge.audit is not None else None),
        "framing": out.framing if out is not None else None,
        "energy_method": window.get("energy_method"),
    } | (extra_measurement or {})
    return {
        "schema_version": 1, "submission_id": submission_id, "challenge": challenge,
        "status": status, "reason": reason, "metrics": metrics, "measurement": measurement,
        "environment": {"runtime": runtime, "image_digest": image_digest, "base_image": base_image,
                        "gpu": ",".join(gpus) or None, "gpu_isolation": gpu_isolation(runtime, gpus) if runtime else None,
                        "devices": devices or {"cpuset": None, "gpus": list(gpus)}, "host": platform.node(), "harness_version": HARNESS_VERSION},
        "started_at": started_at or now, "finished_at": now,
    }


def request_rows(runs: list[ScenarioRun], plan: PromptPlan, judge: Judge) -> list[dict]:
    """One row per request of every pass (warm-ups included); correct_tokens is null where the
    request's output was not judged (an unaudited timed output)."""
    sets = {p.label: p.sets for p in plan.passes}
    records = [(run, r) for run in runs for r in run.records]
    origin = min((r.sent_ns for _, r in records), default=0)
    rows = []
    for run, rec in records:
        first, last = rec.first_token_ns, (rec.arrivals[-1][0] if rec.arrivals else None)
        n = len(rec.tokens)
        judged = judge.judged.get(rec.rid)
        rows.append({
            "run": rec.run, "request_id": rec.rid, "prompt_index": rec.index,
            "prompt_set": sets.get(run.label, ["private"] * (rec.index + 1))[rec.index],
            "sent_ns": rec.sent_ns - origin, "first_token_ns": None if first is None else first - origin,
            "done_ns": None if rec.done_ns is None else rec.done_ns - origin,
            "ttft_ms": None if first is None else (first - rec.sent_ns) / 1e6,
            "tpot_ms": (last - first) / 1e6 / (n - 1) if first is not None and n > 1 else None,
            "latency_ms": None if rec.done_ns is None else (rec.done_ns - rec.sent_ns) / 1e6,
            "tokens": n, "correct_tokens": judged[0] if judged else None,
            "expected_tokens": judged[1] if judged else rec.max_new_tokens,
        })
    return rows
