"""Admin view: cluster health (Docker engine, runtimes) and the queue (statuses of submissions)."""
from __future__ import annotations

import collections

import streamlit as st

from dashboards.data import bucket


def render() -> None:
    st.title("Admin — cluster and queue")
    try:
        from sandbox.engine import available_runtimes, client
        info = client().info()
        c1, c2, c3 = st.columns(3)
        c1.metric("Docker engine", info.get("ServerVersion", "?"))
        c2.metric("Running containers", info.get("ContainersRunning", 0))
        c3.metric("Runtimes", ", ".join(sorted(available_runtimes())))
    except Exception as exc:
        st.error(f"Docker engine does not answer: {exc}")
    b = bucket()
    rows = []
    for marker in b.markers():
        status = b.status(marker.id) or {}
        rows.append({"id": marker.id, "challenge": marker.challenge, "user": marker.user, "queue": marker.queue,
                     "priority": marker.priority, "status": status.get("status", "queued"),
                     "reason": status.get("reason"), "updated_at": status.get("updated_at")})
    counts = collections.Counter(r["status"] for r in rows)
    cols = st.columns(max(len(counts), 1))
    for col, (name, n) in zip(cols, sorted(counts.items())):
        col.metric(name, n)
    st.subheader("Submissions")
    st.dataframe(sorted(rows, key=lambda r: r["id"], reverse=True), hide_index=True, use_container_width=True)
