"""Admin: is the cluster healthy (Docker, gVisor, disk), and what is waiting (bucket queue, Dagster runs)."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from dashboards import data
from dashboards.access import require_admin
from dashboards.format import duration, nbytes, text
from lake.vocabulary import LABEL_MANAGED, TAG_PRIORITY, TAG_QUEUE, TERMINAL_STATUSES as TERMINAL

LOW_DISK_BYTES = 10 * 2**30


def show_cluster() -> None:
    st.subheader("Cluster")
    health = data.docker_health()
    disk = data.disk_usage()
    c1, c2, c3, c4 = st.columns(4)
    if health["error"]:
        st.error(f"The Docker engine does not answer: {health['error']}")
    else:
        c1.metric("Docker engine", health["version"])
        c2.metric("gVisor (runsc)", "registered" if health["gvisor"] else "not registered",
                  help=f"runsc arguments: {health['gvisor_args'] or '—'}")
        c3.metric("Platform containers running", len(health["containers"]))
    c4.metric("Disk free (ARENA_HOME)", nbytes(disk["free"]), help=disk["path"])
    if disk["free"] < LOW_DISK_BYTES:
        st.warning(f"Low disk: {nbytes(disk['free'])} free of {nbytes(disk['total'])} under {disk['path']}.")
    if health["error"]:
        return
    st.caption(f"Runtimes: {', '.join(health['runtimes'])} (default {health['default_runtime']}) · "
               f"{health['cpus']} CPUs · {nbytes(health['memory_bytes'])} memory · "
               f"ARENA_HOME {disk['path']} ({nbytes(disk['free'])} free of {nbytes(disk['total'])})")
    if not health["gvisor"]:
        st.warning("gVisor (runsc) is not registered with Docker: submissions run under runc, with less "
                   "isolation. scripts/setup-engine.sh registers it.")
    if health["containers"]:
        st.markdown(f"**Running containers** (label `{LABEL_MANAGED}`)")
        st.table(pd.DataFrame(health["containers"]), hide_index=True)


def queue_table(d: pd.DataFrame) -> pd.DataFrame:
    now = datetime.now(timezone.utc)
    return pd.DataFrame({
        "Submission": [f"[{s}](explorer?submission={s})" for s in d["submission_id"]],
        "Participant": d["participant"].map(text), "Challenge": d["challenge"], "Queue": d["queue"],
        "Priority": d["priority"].astype(str), "Status": d["status"], "Reason": d["reason"].map(text),
        "Submitted": [f"{duration((now - t).total_seconds())} ago" if pd.notna(t) else "—"
                      for t in d["submitted_at"]],
        "Updated": d["updated_at"].map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if pd.notna(t) else "—"),
    })


def show_queue() -> None:
    st.subheader("Submission queue (bucket)")
    df = data.queue()
    counts = data.queue_counts(df)
    cols = st.columns(len(counts) + 1)
    for col, (name, n) in zip(cols, counts.items()):
        col.metric(name.capitalize(), n)
    cols[-1].metric("Oldest queued", duration(data.oldest_queued_age_s(df)))
    if df.empty:
        st.info("No submission in the bucket yet.")
        return
    active, done = df[~df["status"].isin(TERMINAL)], df[df["status"].isin(TERMINAL)]
    st.markdown(f"**In flight** ({len(active)})")
    if len(active):
        st.table(queue_table(active.sort_values(["priority", "submission_id"], ascending=[False, True])),
                 hide_index=True)
    else:
        st.caption("Nothing waiting or running.")
    with st.expander(f"Finished ({len(done)}), newest first"):
        st.table(queue_table(done.sort_values("submission_id", ascending=False).head(100)), hide_index=True)


def show_dagster() -> None:
    st.subheader("Dagster runs")
    runs = data.dagster_runs()
    if runs["error"]:
        st.warning(runs["error"])
        return
    df = pd.DataFrame(runs["runs"], columns=["queue", "status", "priority", "submission", "job", "run_id",
                                             "created_at"])
    st.caption(f"Active runs in the Dagster instance at {runs['home']}. The QueuedRunCoordinator starts the "
               f"highest `{TAG_PRIORITY}` first, up to each `{TAG_QUEUE}`'s device count.")
    if df.empty:
        st.info("No queued or running Dagster run.")
        return
    per_queue = (df.assign(queued=df["status"] == "QUEUED", started=df["status"] != "QUEUED")
                 .groupby("queue")[["queued", "started"]].sum().astype(int).reset_index())
    st.table(pd.DataFrame({
        TAG_QUEUE: per_queue["queue"], "Queued": per_queue["queued"].astype(str),
        "Starting / started": per_queue["started"].astype(str),
        "Concurrency limit": per_queue["queue"].map(lambda q: str(runs["limits"].get(q, "none"))),
    }), hide_index=True)
    for queue, group in df.groupby("queue"):
        st.markdown(f"**{queue}**")
        st.table(group.drop(columns="queue").rename(columns={"priority": TAG_PRIORITY}).astype(str),
                 hide_index=True)


def render() -> None:
    require_admin()
    st.title("Admin — cluster and queue")
    show_cluster()
    show_queue()
    show_dagster()
