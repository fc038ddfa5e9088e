"""Admin: is the cluster healthy (Docker, gVisor, disk), and what is waiting (bucket queue, Dagster runs)."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from dashboards import data
from dashboards.access import require_admin
from dashboards.format import duration, nbytes, number, text
from lake.vocabulary import ACTIVE_STATUSES as ACTIVE, LABEL_MANAGED, TAG_PRIORITY, TAG_QUEUE, TERMINAL_STATUSES as TERMINAL

LOW_DISK_BYTES = 10 * 2**30
IN_FLIGHT_ROWS = 200
FAILURE_DAYS = 7


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
    pools = data.queue_by_pool(df)
    st.markdown("**Queue depth per pool** (a challenge's `queue` names its pool; pools from "
                f"`{data.pools_file().name}`)")
    if pools.empty:
        st.caption("No pool declared and nothing waiting.")
    else:
        st.table(pd.DataFrame({"Pool": pools["pool"], **{s.capitalize(): pools[s].astype(int).astype(str)
                                                        for s in ACTIVE},
                               "Oldest wait": pools["oldest_wait_s"].map(
                                   lambda v: duration(v) if pd.notna(v) else "—")}), hide_index=True)
    active = df[~df["status"].isin(TERMINAL)]
    st.markdown(f"**In flight** ({len(active)})")
    if len(active):
        st.table(queue_table(active.sort_values(["priority", "submission_id"], ascending=[False, True])
                             .head(IN_FLIGHT_ROWS)), hide_index=True)
        if len(active) > IN_FLIGHT_ROWS:
            st.caption(f"The first {IN_FLIGHT_ROWS} of {len(active)}, highest priority first.")
    else:
        st.caption("Nothing waiting or running.")
    with st.expander("Finished, newest first (last 100, from the lake)"):
        done = data.recent_finished(100)
        st.table(pd.DataFrame({
            "Submission": [f"[{s}](explorer?submission={s})" for s in done["submission_id"]],
            "Challenge": done["challenge"], "Status": done["status"], "Reason": done["reason"].map(text),
            "Host": done["host"].map(text), "Finished": done["finished_at"].map(lambda v: text(v)[:19])}),
            hide_index=True)


def show_hosts() -> None:
    """Device health per worker host: NVML where present, CPU and memory otherwise."""
    st.subheader("Device health")
    here = data.local_health()
    mem_used = (None if here["memory_total"] is None
                else here["memory_total"] - here["memory_available"])
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("This host", here["host"])
    c2.metric("Load (1 / 5 / 15 min)", " / ".join(f"{x:.2f}" for x in here["load"]),
              help=f"{here['cpus']} CPUs")
    c3.metric("Memory used", nbytes(mem_used), help=f"of {nbytes(here['memory_total'])}")
    c4.metric("GPUs (NVML)", "no NVML" if here["gpus"] is None else str(len(here["gpus"])),
              help=here["nvml_error"] or "")
    if here["gpus"]:
        st.table(pd.DataFrame([{
            "GPU": g["index"], "Name": text(g["name"]), "UUID": text(g["uuid"]),
            "Utilisation": number(g["util_percent"], 0, "%"),
            "Memory": f"{nbytes(g['memory_used'])} of {nbytes(g['memory_total'])}",
            "Power": number(g["power_w"], 1, "W"), "Temperature": number(g["temperature_c"], 0, "°C"),
        } for g in here["gpus"]]), hide_index=True)
    else:
        st.caption(f"No GPU seen through NVML on {here['host']} ({here['nvml_error'] or 'no device'}): "
                   "CPU and memory only.")
    workers = pd.DataFrame(data.workers(), columns=["name", "pool", "host", "devices"])
    seen = data.host_activity().set_index("host")
    hosts = sorted(set(workers["host"]) | set(seen.index))
    if not hosts:
        return
    st.markdown("**Worker hosts** (declared in the pools file, and seen in evaluation results)")
    st.table(pd.DataFrame([{
        "Host": h,
        "Workers": ", ".join(f"{w.name} ({w.pool}: {w.devices})" for w in workers[workers["host"] == h]
                             .itertuples()) or "—",
        "Evaluations": str(int(seen.loc[h, "evaluations"])) if h in seen.index else "0",
        "Platform failures": str(int(seen.loc[h, "platform_failures"])) if h in seen.index else "0",
        "Last evaluation": text(seen.loc[h, "last_at"])[:19] if h in seen.index else "—",
    } for h in hosts]), hide_index=True)


def show_failures() -> None:
    st.subheader("Recent failures by reason")
    failed = data.failures_by_reason(FAILURE_DAYS)
    if failed.empty:
        st.caption(f"No failed, rejected or timed-out evaluation in the last {FAILURE_DAYS} days.")
        return
    st.caption(f"Evaluations that did not succeed in the last {FAILURE_DAYS} days, grouped by status and "
               "reason; platform failures are retried automatically, participant failures never.")
    st.table(pd.DataFrame({
        "Status": failed["status"], "Reason": failed["reason"], "Count": failed["count"].astype(str),
        "Last": failed["last_at"].map(lambda v: text(v)[:19]),
        "Latest submissions": [", ".join(f"[{s[-6:]}](explorer?submission={s})" for s in ids)
                               for ids in failed["examples"]],
    }), hide_index=True)


def show_disturbed() -> None:
    st.subheader("Disturbed runs")
    df = data.disturbed_runs(50)
    if df.empty:
        st.caption("No evaluation was disturbed by another process on its CPUs.")
        return
    st.caption("Timed runs during which something else ran on the evaluation CPUs: re-measured, and never "
               "ranked when still disturbed after the limit.")
    st.table(pd.DataFrame({
        "Submission": [f"[{s}](explorer?submission={s})" for s in df["submission_id"]],
        "Status": df["status"], "Still disturbed": df["disturbed"].map(
            lambda v: {True: "yes", False: "no"}.get(v, "—") if not pd.isna(v) else "—"),
        "Re-measured": df["remeasured"].map(lambda v: "—" if pd.isna(v) else str(int(v))),
        "Valid": df["valid"].map(lambda v: "—" if pd.isna(v) else ("yes" if v else "no")),
        "Host": df["host"].map(text), "Finished": df["finished_at"].map(lambda v: text(v)[:19]),
    }), hide_index=True)


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
    show_hosts()
    show_queue()
    show_failures()
    show_disturbed()
    show_dagster()
