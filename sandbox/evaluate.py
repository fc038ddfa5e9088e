"""One evaluation of a built image: load, accuracy (AccuracyOnly), warm-up, timed repeats
(PerformanceOnly), all in one sandboxed container session, measured from outside.

`evaluate_image` returns an `Evaluation`: the result JSON of DESIGN.md, the per-request rows and the
LoadGen logs. It never raises for anything a submission does; every outcome is a status and a reason.
"""
from __future__ import annotations

import platform
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from sandbox import __version__ as HARNESS_VERSION
from sandbox.config import SandboxSettings
from sandbox.engine import SUBMISSION_LABEL
from sandbox.harness import DecoderSession, LoadSettings, RequestRecord, ScenarioRun, run_loadgen
from sandbox.runner import ContainerExit, run_sandboxed


@dataclass(frozen=True)
class Case:
    """One prompt of the workload and the reference tokens computed on the host."""
    set: str                 # public | private
    prompt: list[int]
    reference: list[int]


@dataclass(frozen=True)
class Workload:
    cases: tuple[Case, ...]
    max_new_tokens: int
    scenario: str = "offline"
    repeats: int = 3
    min_duration_ms: int = 3000
    cooldown_s: float = 1.0
    accuracy_threshold: float = 0.99
    ttft_latency_ns: int = 2 * 10**9
    tpot_latency_ns: int = 200 * 10**6

    @classmethod
    def for_challenge(cls, challenge, private_seed: int, scenario: str | None = None,
                      **overrides) -> "Workload":
        """The evaluation workload of a challenge: its public prompts with the stored reference, and
        private prompts from a secret seed with references computed here, on the host."""
        private = challenge.private_prompts(private_seed)
        cases = [Case("public", p, r) for p, r in zip(challenge.public_prompts(), challenge.public_reference())]
        cases += [Case("private", p, r) for p, r in zip(private, challenge.reference(private))]
        perf = challenge.spec.get("performance", {})
        fields = dict(cases=tuple(cases), max_new_tokens=challenge.max_new_tokens,
                      scenario=scenario or challenge.spec.get("scenarios", {}).get("default", "offline"),
                      repeats=int(perf.get("repeats", 3)), accuracy_threshold=challenge.accuracy_threshold)
        if "min_duration_ms" in perf:
            fields["min_duration_ms"] = int(perf["min_duration_ms"])
        return cls(**(fields | overrides))


@dataclass
class Evaluation:
    result: dict
    requests: list[dict]
    loadgen_dirs: list[Path]
    stderr: str
    container: ContainerExit | None = None
    telemetry: object | None = None


def utc_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def token_accuracy(records: list[RequestRecord], cases: tuple[Case, ...]) -> tuple[int, int]:
    """(correct, expected) tokens, position by position; missing tokens count as wrong."""
    correct = expected = 0
    for rec in records:
        ref = cases[rec.index].reference
        expected += len(ref)
        correct += sum(1 for a, b in zip(rec.tokens, ref) if a == b)
    return correct, expected


def request_rows(records: list[RequestRecord], cases: tuple[Case, ...], origin_ns: int) -> list[dict]:
    rows = []
    for rec in records:
        ref = cases[rec.index].reference
        first, last = rec.first_token_ns, (rec.arrivals[-1][0] if rec.arrivals else None)
        n = len(rec.tokens)
        rows.append({
            "run": rec.run, "request_id": rec.rid, "prompt_index": rec.index, "prompt_set": cases[rec.index].set,
            "sent_ns": rec.sent_ns - origin_ns, "first_token_ns": None if first is None else first - origin_ns,
            "done_ns": None if rec.done_ns is None else rec.done_ns - origin_ns,
            "ttft_ms": None if first is None else (first - rec.sent_ns) / 1e6,
            "tpot_ms": (last - first) / 1e6 / (n - 1) if first is not None and n > 1 else None,
            "latency_ms": None if rec.done_ns is None else (rec.done_ns - rec.sent_ns) / 1e6,
            "tokens": n, "correct_tokens": sum(1 for a, b in zip(rec.tokens, ref) if a == b),
            "expected_tokens": len(ref),
        })
    return rows


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


def evaluate_image(image: str, *, submission_id: str, challenge: str, workload: Workload,
                   model_dir: Path | None, settings: SandboxSettings, log_root: Path,
                   on_log: Callable[[str], None] = lambda line: None,
                   image_digest: str | None = None, base_image: str | None = None,
                   telemetry_start: Callable[[str], object] | None = None) -> Evaluation:
    """Run the whole evaluation of one image. `telemetry_start(container_id)` may return a sidecar
    with a `stop()` method; it is always stopped."""
    started_at = utc_iso()
    session = DecoderSession()
    prompts = [c.prompt for c in workload.cases]
    runs: list[ScenarioRun] = []
    accuracy_run: ScenarioRun | None = None
    status, reason, detail = "success", None, None
    metrics: dict = {}
    runtime = None
    sidecar = None
    exit_info = None
    stderr = ""

    with run_sandboxed(image, settings, model_dir=model_dir, on_line=session.on_line,
                       on_overflow=session.on_overflow, on_eof=session.on_eof,
                       labels={SUBMISSION_LABEL: submission_id}) as box:
        runtime = box.runtime
        on_log(f"[arena] container started (runtime {runtime})")
        if telemetry_start is not None:
            try:
                sidecar = telemetry_start(box.container.id)
            except Exception as exc:  # telemetry must never cost an evaluation
                on_log(f"[arena] telemetry did not start: {exc}")
        deadline = threading.Timer(settings.run_timeout_s, lambda: (
            session.fail("timeout", f"evaluation exceeded the wall-clock limit of {settings.run_timeout_s:.0f} s"),
            box.kill("timeout")))
        deadline.daemon = True
        deadline.start()
        try:
            if not session.ready.wait(settings.load_timeout_s):
                session.fail("timeout", f"no {{\"ready\": true}} within {settings.load_timeout_s:.0f} s")
                box.kill("load timeout")
            load_time_s = (session.ready_ns - box.started_ns) / 1e9 if session.ready_ns else None
            metrics["load_time_s"] = load_time_s
            if not session.error:
                on_log(f"[arena] ready after {load_time_s:.2f} s; accuracy pass over {len(prompts)} prompts")
                accuracy_run = run_loadgen(session, box.send, prompts, workload.max_new_tokens, "accuracy",
                                           "accuracy", LoadSettings(scenario="offline", min_duration_ms=0,
                                                                    expected_qps=len(prompts)),
                                           log_root / "accuracy")
            acc = _accuracy_by_set(accuracy_run, workload) if accuracy_run and not session.error else None
            if acc is not None:
                metrics["accuracy"] = acc["all"]
                on_log(f"[arena] accuracy {acc['all']:.4f} (public {acc['public']}, private {acc['private']})")
                if min(v for v in (acc["public"], acc["private"]) if v is not None) < workload.accuracy_threshold:
                    status, reason = "rejected", "accuracy"
                    detail = (f"token accuracy {acc['all']:.4f} (public {acc['public']}, private "
                              f"{acc['private']}) is below the gate of {workload.accuracy_threshold}")
            if status == "success" and not session.error:
                runs = _performance(session, box, prompts, workload, log_root, on_log, accuracy_run)
        finally:
            deadline.cancel()
            session.expect_exit()
            box.close_stdin()
            if session.error is None:
                box.wait_eof(10)
            box.kill("evaluation over")
            exit_info = box.wait_exit(10)
            stderr = box.stderr_text
            if sidecar is not None:
                try:
                    sidecar = sidecar.stop()
                except Exception as exc:
                    on_log(f"[arena] telemetry did not stop cleanly: {exc}")
                    sidecar = None

    if session.error and status == "success":
        kind = session.error_kind
        if kind == "crash" and exit_info and exit_info.oom_killed:
            status, reason = "failed", "oom"
        elif kind == "timeout":
            status, reason = "timeout", "timeout"
        else:
            status, reason = "failed", kind
        detail = session.error + (" (out of memory)" if exit_info and exit_info.oom_killed else "")
        if kind == "crash" and exit_info and exit_info.exit_code is not None:
            detail += f" (exit code {exit_info.exit_code})"
    perf = performance_metrics(runs) if runs else {}
    if runs and status == "success":
        correct, expected = token_accuracy([r for run in runs for r in run.records], workload.cases)
        if expected and correct / expected < workload.accuracy_threshold:
            status, reason = "rejected", "accuracy"
            detail = f"timed runs produced token accuracy {correct / expected:.4f}, below the gate"
    from lake.results import empty_metrics  # the schema's metric names, in one place
    result_metrics = empty_metrics() | {k: v for k, v in perf.items() if not k.startswith("_")}
    result_metrics["accuracy"] = metrics.get("accuracy")
    result_metrics["load_time_s"] = metrics.get("load_time_s")
    window = _telemetry_window(sidecar, runs)
    for key in ("peak_memory_bw_GBs", "energy_joules", "peak_memory_bytes"):
        result_metrics[key] = window.get(key)
    if result_metrics["energy_joules"] and result_metrics["tokens_per_second"]:
        result_metrics["tokens_per_joule"] = _timed_tokens(runs) / result_metrics["energy_joules"]
    valid_runs = perf.get("_valid", [])
    result = {
        "schema_version": 1, "submission_id": submission_id, "challenge": challenge,
        "status": status, "reason": reason,
        "metrics": result_metrics,
        "measurement": {
            "engine": f"mlperf-loadgen {_loadgen_version()}", "scenario": workload.scenario,
            "valid": (all(valid_runs) if valid_runs else None), "repeats": len(runs),
            "tokens_per_second_cv": perf.get("_cv"), "tokens_per_second_runs": perf.get("_runs", []),
            "loadgen_valid_runs": valid_runs,
            "accuracy_public": (acc or {}).get("public") if accuracy_run else None,
            "accuracy_private": (acc or {}).get("private") if accuracy_run else None,
            "telemetry": window.get("_status"), "detail": detail,
        },
        "environment": {"runtime": runtime, "image_digest": image_digest, "base_image": base_image,
                        "gpu": ",".join(settings.gpus) or None, "host": platform.node(),
                        "harness_version": HARNESS_VERSION},
        "started_at": started_at, "finished_at": utc_iso(),
    }
    all_runs = ([accuracy_run] if accuracy_run else []) + runs
    origin = min((r.sent_ns for run in all_runs for r in run.records), default=0)
    rows = [row for run in all_runs for row in request_rows(run.records, workload.cases, origin)]
    return Evaluation(result=result, requests=rows, loadgen_dirs=[r.log_dir for r in all_runs],
                      stderr=stderr, container=exit_info, telemetry=sidecar)


def _accuracy_by_set(run: ScenarioRun, workload: Workload) -> dict:
    out = {}
    for name in ("public", "private"):
        recs = [r for r in run.records if workload.cases[r.index].set == name]
        c, e = token_accuracy(recs, workload.cases)
        out[name] = round(c / e, 6) if e else None
    c, e = token_accuracy(run.records, workload.cases)
    out["all"] = c / e if e else 0.0
    return out


def _performance(session: DecoderSession, box, prompts, workload: Workload, log_root: Path,
                 on_log, accuracy_run: ScenarioRun) -> list[ScenarioRun]:
    """Size the timed runs from the accuracy pass (LoadGen's expected QPS), warm up with a sizing
    run, then N timed repeats with a cool-down before each."""
    done = [r for r in accuracy_run.records if r.done_ns]
    span_s = (max(r.done_ns for r in done) - min(r.sent_ns for r in done)) / 1e9 if done else 1.0
    qps = len(done) / span_s if span_s > 0 else 1.0
    lat_ns = int(span_s / max(len(done), 1) * 1e9)
    on_log(f"[arena] accuracy pass ran at {qps:.2f} samples/s; warm-up, then {workload.repeats} "
           f"timed {workload.scenario} runs")
    load = LoadSettings(scenario=workload.scenario, min_duration_ms=workload.min_duration_ms,
                        min_query_count=max(len(prompts), EARLY_STOPPING_MIN_QUERIES[workload.scenario]),
                        expected_qps=qps if workload.scenario == "offline" else qps * 0.5,
                        expected_latency_ns=lat_ns, ttft_latency_ns=workload.ttft_latency_ns,
                        tpot_latency_ns=workload.tpot_latency_ns)
    load = _size_timed_runs(session, box, prompts, workload, load, log_root, on_log)
    runs = []
    for i in range(1, workload.repeats + 1):
        time.sleep(workload.cooldown_s)
        run = run_loadgen(session, box.send, prompts, workload.max_new_tokens, f"perf-{i}", "performance",
                          load, log_root / f"perf-{i}")
        if session.error:
            return runs
        tps = run.loadgen.get("result_tokens_per_second")
        on_log(f"[arena] timed run {i}: {tps} tokens/s, LoadGen says {run.loadgen.get('result_validity')}")
        runs.append(run)
    return runs


#: Queries LoadGen's early stopping needs for a verdict when no query is over its latency bound
#: (single-stream: 64 for the p90; server: about 460 for the p99 TTFT/TPOT); fewer and every run is
#: INVALID ("Need to process at least 64 queries", "Would need to run at least N more queries").
EARLY_STOPPING_MIN_QUERIES = {"offline": 1, "single-stream": 64, "server": 512}
MAX_SIZING_TRIES = 3
SIZING_MARGIN = 1.5


def _size_timed_runs(session, box, prompts, workload: Workload, load: LoadSettings, log_root: Path,
                     on_log) -> LoadSettings:
    """The warm-up: trial runs that are not scored. Offline queries must last min_duration: where a
    trial query ends early, raise the expected QPS
    to the rate LoadGen itself measured (as its own summary recommends), a bounded number of times.
    A decoder that still ends early gets LoadGen's INVALID verdict, never a silent rank."""
    for attempt in range(1, MAX_SIZING_TRIES + 1):
        trial = run_loadgen(session, box.send, prompts, workload.max_new_tokens, f"warmup-{attempt}",
                            "performance", load, log_root / f"warmup-{attempt}")
        # A warm decoder runs faster than the trial did: keep a margin over min_duration.
        long_enough = trial.seconds >= SIZING_MARGIN * workload.min_duration_ms / 1000
        if session.error or workload.scenario != "offline" or long_enough:
            return load
        achieved = float(trial.loadgen.get("result_samples_per_second") or load.expected_qps)
        load = replace(load, expected_qps=max(achieved, load.expected_qps) * SIZING_MARGIN * 1.2)
        on_log(f"[arena] warm-up {attempt}: query took {trial.seconds:.1f} s, under {SIZING_MARGIN} x "
               f"min_duration; expected QPS raised to {load.expected_qps:.1f}")
    return load


def _timed_tokens(runs: list[ScenarioRun]) -> int:
    return sum(len(r.tokens) for run in runs for r in run.records)


def _telemetry_window(summary, runs: list[ScenarioRun]) -> dict:
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
        for key in ("peak_memory_bw_GBs", "energy_joules"):
            window[key] = None
    window["_status"] = "recorded (" + ",".join(getattr(summary, "sources", ())) + ")"
    return window


def _loadgen_version() -> str:
    from importlib.metadata import version
    try:
        return version("mlcommons-loadgen")
    except Exception:
        return "unknown"
