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
from pathlib import Path
from typing import Callable

import numpy as np

from lake.results import empty_metrics
from lake.vocabulary import utc_iso
from sandbox import __version__ as HARNESS_VERSION
from sandbox.config import SandboxSettings
from lake.vocabulary import LABEL_SUBMISSION
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
    #: the cases the timed runs use (None: all). Private-only timing: cached public answers win nothing.
    perf_indices: tuple[int, ...] | None = None

    @property
    def timed_indices(self) -> tuple[int, ...]:
        return self.perf_indices if self.perf_indices is not None else tuple(range(len(self.cases)))

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
        timed_sets = challenge.spec.get("workload", {}).get("performance_set")
        if timed_sets:
            fields["perf_indices"] = tuple(i for i, c in enumerate(cases) if c.set in timed_sets)
        return cls(**(fields | overrides))


@dataclass
class Evaluation:
    result: dict
    requests: list[dict]
    loadgen_dirs: list[Path]
    stderr: str
    container: ContainerExit | None = None
    telemetry: object | None = None


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


@dataclass
class SessionOutcome:
    """What one container session produced, before any verdict."""
    runtime: str
    accuracy_run: ScenarioRun | None = None
    accuracy: dict | None = None          # token accuracy: all / public / private
    runs: list[ScenarioRun] = field(default_factory=list)
    load_time_s: float | None = None
    error: str | None = None
    error_kind: str | None = None         # protocol | crash | timeout
    exit: ContainerExit | None = None
    stderr: str = ""
    telemetry: object | None = None


def evaluate_image(image: str, *, submission_id: str, challenge: str, workload: Workload,
                   model_dir: Path | None, settings: SandboxSettings, log_root: Path,
                   on_log: Callable[[str], None] = lambda line: None,
                   image_digest: str | None = None, base_image: str | None = None,
                   telemetry_start: Callable[[str], object] | None = None) -> Evaluation:
    """Run the whole evaluation of one image. `telemetry_start(container_id)` may return a sidecar
    with a `stop()` method; it is always stopped."""
    started_at = utc_iso()
    out = _run_session(image, submission_id, workload, model_dir, settings, log_root, on_log, telemetry_start)
    status, reason, detail = _verdict(out, workload)
    perf = performance_metrics(out.runs) if out.runs else {}
    metrics = empty_metrics() | {k: v for k, v in perf.items() if not k.startswith("_")}
    metrics["accuracy"] = (out.accuracy or {}).get("all")
    metrics["load_time_s"] = out.load_time_s
    window = _telemetry_window(out.telemetry, out.runs)
    for key in ("peak_memory_bw_GBs", "energy_joules", "peak_memory_bytes"):
        metrics[key] = window.get(key)
    if metrics["energy_joules"] and metrics["tokens_per_second"]:
        metrics["tokens_per_joule"] = _timed_tokens(out.runs) / metrics["energy_joules"]
    valid_runs = perf.get("_valid", [])
    result = {
        "schema_version": 1, "submission_id": submission_id, "challenge": challenge,
        "status": status, "reason": reason, "metrics": metrics,
        "measurement": {
            "engine": f"mlperf-loadgen {_loadgen_version()}", "scenario": workload.scenario,
            "valid": all(valid_runs) if valid_runs else None, "repeats": len(out.runs),
            "tokens_per_second_cv": perf.get("_cv"), "tokens_per_second_runs": perf.get("_runs", []),
            "loadgen_valid_runs": valid_runs,
            "accuracy_public": (out.accuracy or {}).get("public"),
            "accuracy_private": (out.accuracy or {}).get("private"),
            "telemetry": window.get("_status"), "detail": detail,
        },
        "environment": {"runtime": out.runtime, "image_digest": image_digest, "base_image": base_image,
                        "gpu": ",".join(settings.gpus) or None, "host": platform.node(),
                        "harness_version": HARNESS_VERSION},
        "started_at": started_at, "finished_at": utc_iso(),
    }
    all_runs = ([out.accuracy_run] if out.accuracy_run else []) + out.runs
    origin = min((r.sent_ns for run in all_runs for r in run.records), default=0)
    rows = [row for run in all_runs for row in request_rows(run.records, workload.cases, origin)]
    return Evaluation(result=result, requests=rows, loadgen_dirs=[r.log_dir for r in all_runs],
                      stderr=out.stderr, container=out.exit, telemetry=out.telemetry)


def _run_session(image, submission_id, workload: Workload, model_dir, settings: SandboxSettings,
                 log_root: Path, on_log, telemetry_start) -> SessionOutcome:
    """Start the container, load, the accuracy pass and (if it passes the gate) the timed runs."""
    session = DecoderSession()
    prompts = [c.prompt for c in workload.cases]
    with run_sandboxed(image, settings, model_dir=model_dir, on_line=session.on_line,
                       on_overflow=session.on_overflow, on_eof=session.on_eof,
                       labels={LABEL_SUBMISSION: submission_id}) as box:
        out = SessionOutcome(runtime=box.runtime)
        on_log(f"[arena] container started (runtime {box.runtime})")
        sidecar = None
        if telemetry_start is not None:
            try:
                sidecar = telemetry_start(box.container.id)
            except Exception as exc:  # telemetry must never cost an evaluation
                on_log(f"[arena] telemetry did not start: {exc}")
        deadline = threading.Timer(settings.run_timeout_s, lambda: (
            session.fail("timeout", f"evaluation exceeded the wall-clock limit of {settings.run_timeout_s:.0f} s "
                                    f"({len(session.inflight)} request(s) unfinished, {box.stdout_bytes} "
                                    f"stdout bytes received)"),
            box.kill("timeout")))
        deadline.daemon = True
        deadline.start()
        try:
            if not session.ready.wait(settings.load_timeout_s):
                session.fail("timeout", f"no {{\"ready\": true}} within {settings.load_timeout_s:.0f} s")
                box.kill("load timeout")
            if session.ready_ns:
                out.load_time_s = (session.ready_ns - box.started_ns) / 1e9
            if not session.error:
                on_log(f"[arena] ready after {out.load_time_s:.2f} s; accuracy pass over {len(prompts)} prompts")
                out.accuracy_run = run_loadgen(
                    session, box.send, prompts, workload.max_new_tokens, "accuracy", "accuracy",
                    LoadSettings(scenario="offline", min_duration_ms=0, expected_qps=len(prompts)),
                    log_root / "accuracy")
            if out.accuracy_run and not session.error:
                out.accuracy = _accuracy_by_set(out.accuracy_run, workload)
                acc = out.accuracy
                on_log(f"[arena] accuracy {acc['all']:.4f} (public {acc['public']}, private {acc['private']})")
                if not _below_gate(acc, workload):
                    out.runs = _performance(session, box, workload, log_root, on_log, out.accuracy_run)
        finally:
            deadline.cancel()
            session.expect_exit()
            box.close_stdin()
            if session.error is None:
                box.wait_eof(10)
            box.kill("evaluation over")
            out.exit = box.wait_exit(10)
            out.stderr = box.stderr_text
            if sidecar is not None:
                try:
                    out.telemetry = sidecar.stop()
                except Exception as exc:
                    on_log(f"[arena] telemetry did not stop cleanly: {exc}")
    out.error, out.error_kind = session.error, session.error_kind
    return out


def _below_gate(acc: dict, workload: Workload) -> bool:
    """The gate holds for public and private prompts alike."""
    return min(v for v in (acc["public"], acc["private"], acc["all"]) if v is not None) < workload.accuracy_threshold


def _verdict(out: SessionOutcome, workload: Workload) -> tuple[str, str | None, str | None]:
    """(status, reason, detail) of a session."""
    acc = out.accuracy
    if acc is not None and _below_gate(acc, workload):
        return "rejected", "accuracy", (f"token accuracy {acc['all']:.4f} (public {acc['public']}, private "
                                        f"{acc['private']}) is below the gate of {workload.accuracy_threshold}")
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
    correct, expected = token_accuracy([r for run in out.runs for r in run.records], workload.cases)
    if expected and correct / expected < workload.accuracy_threshold:
        return "rejected", "accuracy", f"timed runs produced token accuracy {correct / expected:.4f}, below the gate"
    return "success", None, None


def _accuracy_by_set(run: ScenarioRun, workload: Workload) -> dict:
    out = {}
    for name in ("public", "private"):
        recs = [r for r in run.records if workload.cases[r.index].set == name]
        c, e = token_accuracy(recs, workload.cases)
        out[name] = round(c / e, 6) if e else None
    c, e = token_accuracy(run.records, workload.cases)
    out["all"] = c / e if e else 0.0
    return out


def _performance(session: DecoderSession, box, workload: Workload, log_root: Path,
                 on_log, accuracy_run: ScenarioRun) -> list[ScenarioRun]:
    """Size the timed runs from the accuracy pass (LoadGen's expected QPS), warm up with a sizing
    run, then N timed repeats with a cool-down before each."""
    done = [r for r in accuracy_run.records if r.done_ns]
    span_s = (max(r.done_ns for r in done) - min(r.sent_ns for r in done)) / 1e9 if done else 1.0
    qps = len(done) / span_s if span_s > 0 else 1.0
    lat_ns = int(span_s / max(len(done), 1) * 1e9)
    on_log(f"[arena] accuracy pass ran at {qps:.2f} samples/s; warm-up, then {workload.repeats} "
           f"timed {workload.scenario} runs over {len(workload.timed_indices)} prompts")
    load = LoadSettings(scenario=workload.scenario, min_duration_ms=workload.min_duration_ms,
                        min_query_count=max(len(workload.timed_indices),
                                            EARLY_STOPPING_MIN_QUERIES[workload.scenario]),
                        expected_qps=qps if workload.scenario == "offline" else qps * 0.5,
                        expected_latency_ns=lat_ns, ttft_latency_ns=workload.ttft_latency_ns,
                        tpot_latency_ns=workload.tpot_latency_ns)
    load = _size_timed_runs(session, box, workload, load, log_root, on_log)
    runs = []
    for i in range(1, workload.repeats + 1):
        time.sleep(workload.cooldown_s)
        run = _timed_run(session, box, workload, f"perf-{i}", load, log_root)
        if session.error:
            return runs
        tps = run.loadgen.get("result_tokens_per_second")
        on_log(f"[arena] timed run {i}: {tps} tokens/s, LoadGen says {run.loadgen.get('result_validity')}")
        runs.append(run)
    return runs


def _timed_run(session: DecoderSession, box, workload: Workload, label: str, load: LoadSettings,
               log_root: Path) -> ScenarioRun:
    """One PerformanceOnly run over the timed prompts; record indices point back into workload.cases."""
    indices = workload.timed_indices
    run = run_loadgen(session, box.send, [workload.cases[i].prompt for i in indices], workload.max_new_tokens,
                      label, "performance", load, log_root / label)
    for rec in run.records:
        rec.index = indices[rec.index]
    return run


#: Queries LoadGen's early stopping needs for a verdict when no query is over its latency bound
#: (single-stream: 64 for the p90; server: about 460 for the p99 TTFT/TPOT); fewer and every run is
#: INVALID ("Need to process at least 64 queries", "Would need to run at least N more queries").
EARLY_STOPPING_MIN_QUERIES = {"offline": 1, "single-stream": 64, "server": 512}
MAX_SIZING_TRIES = 3
SIZING_MARGIN = 1.5


def _size_timed_runs(session, box, workload: Workload, load: LoadSettings, log_root: Path,
                     on_log) -> LoadSettings:
    """The warm-up: trial runs that are not scored. Offline queries must last min_duration: where a
    trial query ends early, raise the expected QPS to the rate LoadGen itself measured (as its own
    summary recommends), a bounded number of times.
    A decoder that still ends early gets LoadGen's INVALID verdict, never a silent rank."""
    for attempt in range(1, MAX_SIZING_TRIES + 1):
        trial = _timed_run(session, box, workload, f"warmup-{attempt}", load, log_root)
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
