"""Run explorer: one submission's result, its requests run by run, and the telemetry sampled around it.

``?submission=<id>`` selects the submission, so links from the leaderboard (or a chat) open it directly.
A participant sees only their own submissions; admins see all (dashboards/access.py).
"""
from __future__ import annotations

import re

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data
from dashboards.access import Viewer, require_viewer
from dashboards.format import METRICS, NOT_MEASURED, number, percent, text

SUBMISSION_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")  # a ULID, as intake makes them
STATUS_BOX = {"success": st.success, "rejected": st.warning, "failed": st.error, "timeout": st.error}
MIN_TICKS_FOR_CHARTS = 3
TELEMETRY_CHARTS = (  # (column, title): drawn when the column has any value
    ("cpu_percent", "CPU (% of one core)"), ("memory_MiB", "Memory working set (MiB)"), ("pids", "Processes"),
    ("gpu_memory_GiB", "GPU memory used (GiB)"),
)
GPU_CHARTS = (  # the GPU panels: drawn whenever the run has GPU rows (nvml, nvml-gpm, dcgm, replay)
    ("gpu_util_percent", "GPU utilisation (%)"), ("dram_bw_GBs", "DRAM bandwidth (GB/s)"),
    ("power_w", "GPU power (W)"), ("energy_J", "GPU energy used (J)"),
)
NONE = "— none —"


def wanted_submission(viewer: Viewer, ids: list[str], param: str = "submission") -> str | None:
    """``?submission=`` (or ``?compare=``): only a well-formed submission id, looked up through the lake,
    and only one the viewer may see. Anything else (a path, someone else's id) is refused before any
    file is opened."""
    wanted = st.query_params.get(param)
    if not wanted or wanted in ids:
        return wanted
    if not SUBMISSION_ID.fullmatch(wanted):
        st.error(f"`?{param}=` takes a submission id (26 characters, a ULID), not {wanted[:60]!r} "
                 "(rule: submission_id).")
        return None
    if not viewer.may_see(data.submission_owner(wanted)):   # unknown and not yours read the same
        st.error(f"No submission {wanted} that you may see.")
        return None
    status = data.bucket().status(wanted)
    st.info(f"Submission {wanted} has no evaluation yet: it is **{(status or {}).get('status', 'queued')}**"
            + (f" (updated {status.get('updated_at', '?')})." if status else "."))
    return None


def pick_submission(evals: pd.DataFrame, viewer: Viewer) -> str | None:
    ids = evals["submission_id"].tolist()
    wanted = wanted_submission(viewer, ids)
    index = ids.index(wanted) if wanted in ids else 0
    labels = dict(zip(evals["submission_id"], evals["label"]))
    sid = st.selectbox("Submission", ids, index=index, format_func=labels.get)
    if st.query_params.get("submission") != sid:
        st.query_params["submission"] = sid    # the address bar now links to this submission
    return sid


def pick_compare(evals: pd.DataFrame, viewer: Viewer, sid: str) -> str | None:
    """A second run to compare with (``?compare=<id>``), or None."""
    ids = [i for i in evals["submission_id"].tolist() if i != sid]
    wanted = wanted_submission(viewer, ids, "compare") if st.query_params.get("compare") != sid else None
    labels = dict(zip(evals["submission_id"], evals["label"])) | {NONE: NONE}
    options = [NONE] + ids
    other = st.selectbox("Compare with", options, index=options.index(wanted) if wanted in ids else 0,
                         format_func=labels.get)
    if other == NONE:
        if "compare" in st.query_params:
            del st.query_params["compare"]
        return None
    if st.query_params.get("compare") != other:
        st.query_params["compare"] = other
    return other


def show_result(result: dict) -> None:
    status, reason = result["status"], result["reason"]
    meas, env = result["measurement"], result["environment"]
    headline = f"**{status}**" + (f" — reason: **{reason}**" if reason else "")
    if meas.get("valid") is False:
        headline += " — LoadGen judged the measurement **invalid**"
    STATUS_BOX.get(status, st.info)(headline + (f"\n\n{meas['detail']}" if meas.get("detail") else ""))

    cols = st.columns(4)
    for col, (key, label, fmt) in zip(cols, METRICS[:4]):
        col.metric(label, fmt(result["metrics"].get(key)))
    left, mid, right = st.columns(3)
    with left:
        st.markdown("**Metrics**")
        st.table(pd.DataFrame([{"metric": label, "value": fmt(result["metrics"].get(key))}
                               for key, label, fmt in METRICS if key in result["metrics"]]), hide_index=True)
    with mid:
        st.markdown("**Measurement**")
        runs = meas.get("tokens_per_second_runs") or []
        st.table(pd.DataFrame([
            {"field": "engine", "value": text(meas.get("engine"))},
            {"field": "scenario", "value": text(meas.get("scenario"))},
            {"field": "valid", "value": {True: "yes", False: "no"}.get(meas.get("valid"), NOT_MEASURED)},
            {"field": "timed repeats", "value": text(meas.get("repeats"))},
            {"field": "tokens/s per repeat", "value": ", ".join(number(v, 1) for v in runs) or "—"},
            {"field": "CV of tokens/s", "value": percent(meas.get("tokens_per_second_cv"), 1)},
            {"field": "accuracy public / private", "value":
                f"{percent(meas.get('accuracy_public'), 2)} / {percent(meas.get('accuracy_private'), 2)}"},
        ]), hide_index=True)
    with right:
        st.markdown("**Environment**")
        st.table(pd.DataFrame([{"field": k, "value": text(env.get(k))} for k in
                               ("runtime", "base_image", "image_digest", "gpu", "host", "harness_version")]
                              + [{"field": "started", "value": result["started_at"]},
                                 {"field": "finished", "value": result["finished_at"]}]), hide_index=True)
    with st.expander("Result JSON"):
        st.json(result)


def show_requests(sid: str, attempt: int) -> None:
    stats = data.request_stats(sid, attempt)
    st.subheader("Requests")
    if stats.empty:
        st.info("No request rows for this attempt (the run may have failed before the first request).")
        return
    st.caption("Per LoadGen run: the accuracy pass, the warm-up (sizing) runs and the timed repeats. "
               "Timestamps are the harness's, taken on arrival.")
    st.table(pd.DataFrame({
        "Run": stats["run"], "Requests": stats["requests"].astype(int).astype(str),
        "Tokens": stats["tokens"].astype(int).astype(str),
        "Token accuracy": stats["token_accuracy"].map(lambda v: percent(v, 2)),
        "TTFT p50 / p99 (ms)": [f"{number(a, 2)} / {number(b, 2)}" for a, b in
                                zip(stats["ttft_p50_ms"], stats["ttft_p99_ms"])],
        "TPOT p50 / p99 (ms)": [f"{number(a, 2)} / {number(b, 2)}" for a, b in
                                zip(stats["tpot_p50_ms"], stats["tpot_p99_ms"])],
        "Latency p50 / p99 (ms)": [f"{number(a, 1)} / {number(b, 1)}" for a, b in
                                   zip(stats["latency_p50_ms"], stats["latency_p99_ms"])],
        "Span (s)": stats["span_s"].map(lambda v: number(v, 2)),
    }), hide_index=True)
    req = data.requests(sid, attempt).dropna(subset=["latency_ms"])
    if len(req):
        st.markdown("**Latency over time** (each dot one request, by the time it was sent)")
        st.scatter_chart(req, x="sent_ms", y="latency_ms", color="run", x_label="ms since the first request",
                         y_label="latency (ms)", height=280)


def show_telemetry(sid: str, attempt: int, title: str = "Telemetry") -> None:
    st.subheader(title)
    tel = data.telemetry(sid, attempt)
    if tel.empty:
        st.info("No telemetry rows for this attempt.")
        return
    replayed = int((tel["source"] == "replay").sum())
    if replayed:
        st.warning(f"Replayed trace, not measured: {replayed} of {len(tel)} telemetry rows have "
                   f"source = 'replay'. They come from a recorded or synthetic GPU trace, never reach a "
                   f"leaderboard, and say nothing about this submission's hardware use.",
                   icon=":material/warning:")
    sources = ", ".join(f"{s} ({n} rows)" for s, n in tel["source"].value_counts().sort_index().items())
    interval = _interval(tel)
    st.caption("Sampled by the sidecar from outside the container"
               + (f", every {interval}" if interval else "") + f"; sources: {sources}.")
    tel = tel.assign(series=tel["source"] + " · " + tel["device"])
    shown = [(c, title) for c, title in TELEMETRY_CHARTS if tel[c].notna().any()]
    if not shown:
        return
    if tel["t_s"].nunique() < MIN_TICKS_FOR_CHARTS:
        # Too few passes to draw a line (the run ended within a tick or two): show the values.
        st.table(pd.DataFrame({"t (s)": tel["t_s"].map(lambda v: number(v, 2)), "series": tel["series"],
                               **{title: tel[c].map(lambda v, d=0 if c == "pids" else 1: number(v, d))
                                  for c, title in shown}}),
                 hide_index=True)
        return
    for row in range(0, len(shown), 2):
        for col, (column, title) in zip(st.columns(2), shown[row:row + 2]):
            with col:
                st.markdown(f"**{title}**")
                st.line_chart(tel.dropna(subset=[column]), x="t_s", y=column, color="series",
                              x_label="seconds", y_label="", height=220)


def show_gpu(runs: list[tuple[str, str, int]]) -> None:
    """GPU panels (utilisation, DRAM GB/s, power, energy) for each run that has GPU rows; nothing for a
    run without (a CPU-only run has no GPU panel, not an empty one)."""
    frames = [(label, data.gpu_telemetry(sid, attempt)) for label, sid, attempt in runs]
    frames = [(label, g) for label, g in frames if not g.empty]
    if not frames:
        return
    st.subheader("GPU")
    for label, g in frames:
        replay = g["source"].eq("replay")
        tag = " — replay (recorded trace, not measured)" if replay.all() else (
            " — includes replayed rows" if replay.any() else "")
        st.markdown(f"**{label}**: {', '.join(sorted(g['series'].unique()))}{tag}")
        total = g.groupby("series")["energy_J"].max().dropna()
        if len(total):
            st.caption("Energy used: " + ", ".join(f"{k}: {number(v, 1, 'J')}" for k, v in total.items())
                       + f" (method: {', '.join(sorted(g['energy_method'].dropna().unique())) or '—'}).")
        shown = [(c, t) for c, t in GPU_CHARTS if g[c].notna().any()]
        missing_panels = [t for c, t in GPU_CHARTS if not g[c].notna().any()]
        if missing_panels:
            st.caption(f"{NOT_MEASURED}: " + ", ".join(missing_panels))
        for row in range(0, len(shown), 2):
            for col, (column, title) in zip(st.columns(2), shown[row:row + 2]):
                with col:
                    st.markdown(f"**{title}**")
                    st.line_chart(g.dropna(subset=[column]), x="t_s", y=column, color="series",
                                  x_label="seconds", y_label="", height=200)


def show_latency_cdf(runs: list[tuple[str, str, int]]) -> None:
    frames = [data.latency_cdf(sid, attempt).assign(run=label) for label, sid, attempt in runs]
    cdf = pd.concat([f for f in frames if not f.empty]) if any(not f.empty for f in frames) else pd.DataFrame()
    st.markdown("**Latency CDF** (timed runs: fraction of requests done within a latency)")
    if cdf.empty:
        st.caption("No timed requests.")
        return
    chart = alt.Chart(cdf).mark_line(interpolate="step-after").encode(
        x=alt.X("latency_ms:Q", title="latency (ms)"), y=alt.Y("fraction:Q", title="fraction of requests"),
        color=alt.Color("run:N", title=None))
    st.altair_chart(chart.properties(height=260), width="stretch")


def show_token_timeline(label: str, sid: str, attempt: int) -> None:
    tl = data.token_timeline(sid, attempt)
    st.markdown(f"**Token arrival** — {label}: first timed run, each bar one request: "
                "waiting for its first token, then streaming until its last")
    if tl.empty:
        st.caption("No timed requests.")
        return
    bars = pd.concat([
        tl.assign(phase="waiting (TTFT)", start=tl["sent_ms"], end=tl["first_token_ms"]),
        tl.assign(phase="streaming tokens", start=tl["first_token_ms"], end=tl["done_ms"]),
    ]).dropna(subset=["start", "end"])
    chart = alt.Chart(bars).mark_bar().encode(
        x=alt.X("start:Q", title="ms since the run's first request"), x2="end:Q",
        y=alt.Y("request:O", title="request", axis=alt.Axis(labels=False, ticks=False)),
        color=alt.Color("phase:N", title=None), tooltip=["request_id", "phase", "start", "end", "tokens"])
    st.altair_chart(chart.properties(height=min(480, 80 + 8 * len(tl))), width="stretch")


def show_compare(evals: pd.DataFrame, pair: list[tuple[str, str, int]], viewer: Viewer) -> None:
    """Two runs side by side: headline metrics, latency CDF (one chart), token arrival, telemetry, GPU."""
    st.subheader("Compare")
    rows = evals.set_index("submission_id")
    cols = st.columns(2)
    for col, (label, sid, attempt) in zip(cols, pair):
        with col:
            result = data.result(rows.loc[sid, "challenge"], sid)
            st.markdown(f"**{label}** · attempt {attempt}")
            if result is None:
                st.error(f"The result JSON of {sid} is missing from the lake.")
                continue
            st.table(pd.DataFrame([{"metric": "status", "value": f"{result['status']}"
                                    + (f" ({result['reason']})" if result.get("reason") else "")}]
                                  + [{"metric": lab, "value": fmt(result["metrics"].get(key))}
                                     for key, lab, fmt in METRICS if key in result["metrics"]]), hide_index=True)
    show_latency_cdf(pair)
    for col, (label, sid, attempt) in zip(st.columns(2), pair):
        with col:
            show_token_timeline(label, sid, attempt)
    for col, (label, sid, attempt) in zip(st.columns(2), pair):
        with col:
            show_telemetry(sid, attempt, f"Telemetry — {label}")
    show_gpu(pair)


def _interval(tel: pd.DataFrame) -> str | None:
    ticks = tel["t_s"].drop_duplicates().sort_values().diff().dropna()
    return f"{ticks.median():.2f} s" if len(ticks) else None


def show_logs(challenge: str, sid: str, viewer: Viewer) -> None:
    st.subheader("Logs")
    root, files = data.loadgen_logs(challenge, sid)
    if files:
        st.markdown("LoadGen summary and detail logs, kept with the evaluation in the lake:")
        if viewer.is_admin:   # host paths are for operators
            st.code(str(root), language=None)
        st.caption(", ".join(files))
        summary = next((f for f in files if f.endswith("mlperf_log_summary.txt")), None)
        if summary is not None:
            with st.expander(summary):
                st.code(data.loadgen_text(challenge, sid, summary), language=None)
    else:
        st.markdown("LoadGen logs: none kept for this submission"
                    + (f" (they would be under `{root}`)." if viewer.is_admin else "."))
    if not viewer.is_admin:
        st.markdown("Build and run logs: on the submission's page in intake.")
        return
    b = data.bucket()
    logs = [f"`{b.storage.uri(b.log_key(sid, phase))}`" for phase in ("build", "run")
            if b.storage.exists(b.log_key(sid, phase))]
    st.markdown("Build and run logs (bucket): " + (", ".join(logs) if logs else "none kept."))


def render() -> None:
    viewer = require_viewer()
    st.title("Run explorer")
    wanted = tuple(v for v in (st.query_params.get("submission"), st.query_params.get("compare"))
                   if v and SUBMISSION_ID.fullmatch(v))
    # a participant sees their own runs only; the picker lists the newest ones plus any linked one
    evals = data.evaluations(participant=None if viewer.is_admin else viewer.name, include=wanted)
    if evals.empty:
        wanted_submission(viewer, [])
        st.info("No evaluations yet." if viewer.is_admin else f"No evaluation of yours ({viewer.name}) yet.")
        return
    sid = pick_submission(evals, viewer)
    other = pick_compare(evals, viewer, sid)
    rows = evals.set_index("submission_id")
    pair = [(f"{s} · {text(rows.loc[s, 'display_name'])}", s, attempt_of(rows.loc[s], s))
            for s in ([sid, other] if other else [sid])]
    if other:
        show_compare(evals, pair, viewer)
        return
    row = rows.loc[sid]
    result = data.result(row["challenge"], sid)
    if result is None:
        st.error(f"The result JSON of {sid} is missing from the lake.")
    else:
        show_result(result)
    found = data.attempts(sid)
    attempt = pair[0][2]
    if len(found) > 1:
        attempt = st.selectbox("Attempt", found, index=found.index(attempt) if attempt in found else len(found) - 1)
    run = [(pair[0][0], sid, attempt)]
    show_requests(sid, attempt)
    if not data.request_stats(sid, attempt).empty:
        show_latency_cdf(run)
        show_token_timeline(pair[0][0], sid, attempt)
    show_telemetry(sid, attempt)
    show_gpu(run)
    show_logs(row["challenge"], sid, viewer)


def attempt_of(row: pd.Series, sid: str) -> int:
    """The evaluation's attempt, else the newest one with rows."""
    if pd.notna(row["attempt"]):
        return int(row["attempt"])
    found = data.attempts(sid)
    return found[-1] if found else 1
