"""Per-run explorer: requests timeline and the telemetry the sidecar sampled."""
from __future__ import annotations

import streamlit as st

from dashboards.data import has, query


def render() -> None:
    st.title("Run explorer")
    if not has("evaluations"):
        st.info("No evaluations yet.")
        return
    evals = query("SELECT submission_id, challenge, status, reason, m_tokens_per_second, runtime, finished_at "
                  "FROM evaluations ORDER BY finished_at DESC")
    sid = st.selectbox("Submission", evals["submission_id"].tolist(),
                       index=0, key="sid") if len(evals) else None
    if sid is None:
        return
    st.dataframe(evals[evals["submission_id"] == sid], hide_index=True, use_container_width=True)
    if has("requests"):
        req = query("SELECT * FROM requests WHERE submission_id = $s ORDER BY attempt, run, sent_ns", {"s": sid})
        if len(req):
            st.subheader("Requests")
            runs = req.groupby("run").agg(requests=("request_id", "count"), tokens=("tokens", "sum"),
                                          ttft_ms_p50=("ttft_ms", "median"), tpot_ms_p50=("tpot_ms", "median"))
            st.dataframe(runs, use_container_width=True)
            st.scatter_chart(req, x="sent_ns", y="latency_ms", color="run")
    if has("telemetry"):
        tel = query("SELECT * FROM telemetry WHERE submission_id = $s ORDER BY ts", {"s": sid})
        if len(tel):
            st.subheader("Telemetry (sidecar, outside the container)")
            if (tel["source"] == "replay").any():
                st.warning("Some rows are replayed from a recorded trace (source = 'replay'), not measured.")
            metrics = [c for c in ("cpu_percent", "memory_bytes", "pids", "gpu_util_percent", "power_w",
                                   "dram_bw_GBs") if c in tel and tel[c].notna().any()]
            for metric in metrics:
                st.line_chart(tel, x="ts", y=metric, color="source")
        else:
            st.info("No telemetry rows for this submission.")
