"""The container session of one evaluation: load, the accuracy pass, warm-up, timed repeats.

One container, one `DecoderSession`; every pass takes its prompts from the evaluation's
`PromptPlan` (never a prompt twice). What the session produced goes to `sandbox.verdict`; the
session itself judges nothing except through the `accuracy_gate` callback it is given, which
decides whether the timed runs happen at all.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from lake.vocabulary import LABEL_SUBMISSION
from sandbox.config import SandboxSettings
from sandbox.harness import DecoderSession, LoadSettings, ScenarioRun, StallWatchdog, run_loadgen
from sandbox.interference import TimedRunGuard
from sandbox.engine import engine_identity, remove_containers
from sandbox.runner import ContainerExit, run_sandboxed
from sandbox.workload import PromptPlan, Workload, timed_prompt_count

MAX_SIZING_TRIES = 3
SIZING_MARGIN = 1.5


@dataclass
class SessionOutcome:
    """What one container session produced, before any verdict."""
    runtime: str
    accuracy_run: ScenarioRun | None = None
    warmups: list[ScenarioRun] = field(default_factory=list)
    runs: list[ScenarioRun] = field(default_factory=list)
    load_time_s: float | None = None
    framing: str | None = None
    error: str | None = None
    error_kind: str | None = None         # protocol | crash | timeout | platform
    exit: ContainerExit | None = None
    stderr: str = ""
    telemetry: object | None = None
    sent: list[tuple[int, ...]] = field(default_factory=list)   # every prompt, in send order
    interference: dict | None = None      # measurement.interference (sandbox/interference.py)
    discarded: list[ScenarioRun] = field(default_factory=list)   # timed runs re-measured: sent, never scored


def run_session(image: str, submission_id: str, workload: Workload, plan: PromptPlan, model_dir: Path | None,
                settings: SandboxSettings, log_root: Path, on_log: Callable[[str], None],
                telemetry_start: Callable[[str], object] | None,
                accuracy_gate: Callable[[ScenarioRun], bool]) -> SessionOutcome:
    """Start the container, load, the accuracy pass and (if `accuracy_gate` passes it) the timed runs."""
    session = DecoderSession()
    engine = engine_identity()
    if left := remove_containers({LABEL_SUBMISSION: submission_id}):
        on_log(f"[arena] removed {left} container(s) an earlier attempt of {submission_id} left running")
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
        stall = StallWatchdog(session, lambda: box.last_stdout_ns, settings.stall_timeout_s,
                              lambda detail: (session.fail("timeout", detail), box.kill("stall"))).start()
        try:
            if not session.ready.wait(settings.load_timeout_s):
                session.fail("timeout", f"no {{\"ready\": true}} within {settings.load_timeout_s:.0f} s")
                box.kill("load timeout")
            if session.ready_ns:
                out.load_time_s = (session.ready_ns - box.started_ns) / 1e9
            out.framing = session.framing
            if not session.error:
                acc = plan.accuracy()
                on_log(f"[arena] ready after {out.load_time_s:.2f} s; accuracy pass over {len(acc.prompts)} prompts")
                out.accuracy_run = run_loadgen(
                    session, box.send, acc.prompts, workload.max_new_tokens, "accuracy", "accuracy",
                    LoadSettings(scenario="offline", min_duration_ms=0, expected_qps=len(acc.prompts)),
                    log_root / "accuracy")
            if out.accuracy_run and not session.error and accuracy_gate(out.accuracy_run):
                guard = TimedRunGuard.for_container(settings.cpuset, box.container.id, box.pid(),
                                                    on_log=on_log) if settings.cpuset else None
                out.warmups, out.runs = timed_runs(session, box, workload, plan, log_root, on_log,
                                                   out.accuracy_run, guard, out.discarded)
                out.interference = guard.report() if guard else None
        finally:
            deadline.cancel()
            stall.stop()
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
    if out.error and out.error_kind != "platform" and engine is not None and engine_identity() != engine:
        # the engine restarted under the container: whatever the container seemed to do, the platform broke
        out.error_kind = "platform"
        out.error = f"the Docker engine restarted during the evaluation ({out.error})"
    out.sent = list(session.sent)
    return out


def timed_runs(session: DecoderSession, box, workload: Workload, plan: PromptPlan, log_root: Path,
               on_log, accuracy_run: ScenarioRun,
               guard: TimedRunGuard | None = None, discarded: list[ScenarioRun] | None = None
               ) -> tuple[list[ScenarioRun], list[ScenarioRun]]:
    """The timed part of a session, in one place: size LoadGen from the accuracy pass, warm up, then
    `repeats` timed runs with a cool-down before each. Every run draws fresh prompts from the plan;
    a run the guard re-measures goes to `discarded` (its prompts were sent: the audit trail keeps it)."""
    done = [r for r in accuracy_run.records if r.done_ns]
    span_s = (max(r.done_ns for r in done) - min(r.sent_ns for r in done)) / 1e9 if done else 1.0
    qps = len(done) / span_s if span_s > 0 else 1.0
    lat_ns = int(span_s / max(len(done), 1) * 1e9)
    on_log(f"[arena] accuracy pass ran at {qps:.2f} samples/s; warm-up, then {workload.repeats} "
           f"timed {workload.scenario} runs, each over fresh private prompts")
    load = LoadSettings(scenario=workload.scenario, min_duration_ms=workload.min_duration_ms,
                        expected_qps=qps if workload.scenario == "offline" else qps * workload.server_load_fraction,
                        expected_latency_ns=lat_ns, ttft_latency_ns=workload.ttft_latency_ns,
                        tpot_latency_ns=workload.tpot_latency_ns)
    warmups, load = _warm_up(session, box, workload, plan, load, log_root, on_log)
    runs: list[ScenarioRun] = []
    if session.error:
        return warmups, runs
    for i in range(1, workload.repeats + 1):
        time.sleep(workload.cooldown_s)
        made: list[ScenarioRun] = []
        timed = lambda label: made.append(timed_run(session, box, workload, plan, label, load, log_root)) \
            or made[-1]  # noqa: E731
        # exclusive evaluation CPUs, interference measured, a disturbed run re-measured (interference.py)
        run = guard.run(f"perf-{i}", timed, lambda: bool(session.error)) if guard else timed(f"perf-{i}")
        if discarded is not None:
            discarded += [m for m in made if m is not run]
        if session.error:
            return warmups, runs
        tps = run.loadgen.get("result_tokens_per_second")
        on_log(f"[arena] timed run {i}: {tps} tokens/s over {len(run.records)} fresh prompts, "
               f"LoadGen says {run.loadgen.get('result_validity')}")
        runs.append(run)
        if guard and guard.disturbed:    # invalid whatever follows: free the device now
            return warmups, runs
    return warmups, runs


def timed_run(session: DecoderSession, box, workload: Workload, plan: PromptPlan, label: str,
              load: LoadSettings, log_root: Path) -> ScenarioRun:
    """One PerformanceOnly run over `label`'s own fresh prompts (record indices point into them)."""
    fresh = plan.fresh(label, timed_prompt_count(workload, load.expected_qps, load.expected_latency_ns))
    load = replace(load, min_query_count=len(fresh.prompts))
    return run_loadgen(session, box.send, fresh.prompts, workload.max_new_tokens, label, "performance", load,
                       log_root / label)


def _warm_up(session, box, workload: Workload, plan: PromptPlan, load: LoadSettings, log_root: Path,
             on_log) -> tuple[list[ScenarioRun], LoadSettings]:
    """Trial runs that are not scored (at least `warmup_passes`). Offline queries must last
    min_duration: where a trial ends early, raise the expected QPS to the rate LoadGen measured (as
    its own summary recommends), a bounded number of times. A decoder that still ends early gets
    LoadGen's INVALID verdict, never a silent rank."""
    trials: list[ScenarioRun] = []
    for attempt in range(1, max(MAX_SIZING_TRIES, workload.warmup_passes) + 1):
        trial = timed_run(session, box, workload, plan, f"warmup-{attempt}", load, log_root)
        trials.append(trial)
        long_enough = trial.seconds >= SIZING_MARGIN * workload.min_duration_ms / 1000
        achieved = float(trial.loadgen.get("result_samples_per_second") or 0.0)
        if workload.scenario == "offline" and achieved > load.expected_qps:
            # size from the fastest rate seen (LoadGen's own recommendation): a first pass slowed by
            # one-off costs (a torch entry's first kernels) must not leave the timed runs too short
            load = replace(load, expected_qps=achieved)
        if session.error or (attempt >= workload.warmup_passes and (workload.scenario != "offline" or long_enough)):
            return trials, load
        if workload.scenario == "offline" and not long_enough:
            load = replace(load, expected_qps=load.expected_qps * SIZING_MARGIN * 1.2)
            on_log(f"[arena] warm-up {attempt}: query took {trial.seconds:.1f} s, under {SIZING_MARGIN} x "
                   f"min_duration; expected QPS raised to {load.expected_qps:.1f}")
    return trials, load
