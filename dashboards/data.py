"""Everything the dashboards read: the lake (DuckDB views), the bucket, Docker and Dagster.

Pages only lay things out; every read lives here, cached for a few seconds so a page that reruns on
each click does not re-scan the lake each time. Nothing here writes.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.format import missing, text
from lake.bucket import Bucket
from lake.vocabulary import (ACTIVE_STATUSES, LABEL_MANAGED, LABEL_SUBMISSION, TAG_PRIORITY, TAG_QUEUE,
                             TAG_SUBMISSION, TERMINAL_STATUSES, parse_utc_iso)
from lake.config import StorageSettings
from lake.tables import Lake
from lake.views import available_views, connect

TTL_S = 5
#: The order runs happen in during one evaluation (sandbox/evaluate.py labels them so).
RUN_ORDER_SQL = "CASE WHEN run = 'accuracy' THEN 0 WHEN run LIKE 'warmup-%' THEN 1 ELSE 2 END, run"
ACTIVE_DAGSTER_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def storage() -> StorageSettings:
    return StorageSettings.from_env()


def lake() -> Lake:
    return Lake(storage().lake)


def bucket() -> Bucket:
    return Bucket(storage().bucket)


# -- the lake --------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def views() -> list[str]:
    con = connect(storage().lake)
    try:
        return available_views(con)
    finally:
        con.close()


def has(view: str) -> bool:
    return view in views()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def query(sql: str, params: dict | None = None) -> pd.DataFrame:
    con = connect(storage().lake)
    try:
        return con.execute(sql, params or {}).fetch_df()
    finally:
        con.close()


def challenges_in_lake() -> list[str]:
    if not has("evaluations"):
        return []
    return query("SELECT DISTINCT challenge FROM evaluations ORDER BY 1")["challenge"].tolist()


def leaderboard(challenge: str) -> pd.DataFrame:
    """The last built leaderboard of ``challenge``: ranked rows first, then the unranked ones."""
    if not has("leaderboard"):
        return pd.DataFrame()
    return query("SELECT * FROM leaderboard WHERE challenge = $c ORDER BY rank NULLS LAST, submitted_at",
                 {"c": challenge})


def leaderboard_built_at(challenge: str) -> datetime | None:
    built = lake().leaderboard_built_at(challenge)
    return datetime.fromtimestamp(built, timezone.utc) if built is not None else None


def evaluations() -> pd.DataFrame:
    """One row per evaluated submission, newest first, with who submitted it."""
    if not has("evaluations"):
        return pd.DataFrame(columns=["submission_id", "challenge", "status", "reason", "attempt", "label"])
    join = ""
    who = "NULL AS participant, NULL AS display_name"
    if has("submissions"):
        join = "LEFT JOIN submissions s ON s.id = e.submission_id AND s.challenge = e.challenge"
        who = 's."user" AS participant, coalesce(s.display_name, s."user") AS display_name'
    df = query(f"SELECT e.submission_id, e.challenge, e.status, e.reason, e.attempt, e.finished_at, {who} "
               f"FROM evaluations e {join} ORDER BY e.submission_id DESC")
    df["label"] = [f"{sid} · {text(name)} · {status}" + ("" if missing(reason) else f" ({reason})")
                   for sid, name, status, reason in zip(df.submission_id, df.display_name, df.status, df.reason)]
    return df


def submission_owner(sid: str) -> str | None:
    """Who submitted ``sid``, from the lake's submissions table (None: no such submission)."""
    if not has("submissions"):
        return None
    found = query('SELECT "user" FROM submissions WHERE id = $s LIMIT 1', {"s": sid})
    return None if found.empty else str(found["user"].iloc[0])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def result(challenge: str, sid: str) -> dict | None:
    """The result JSON of the latest evaluation of a submission."""
    return lake().read_result(challenge, sid)


def request_stats(sid: str, attempt: int) -> pd.DataFrame:
    """Per run label (accuracy, warmup-N, perf-N): counts and TTFT / TPOT / latency percentiles."""
    if not has("requests"):
        return pd.DataFrame()
    return query(f"""
        SELECT run, count(*) AS requests, sum(tokens) AS tokens,
               sum(correct_tokens) / nullif(sum(expected_tokens), 0) AS token_accuracy,
               quantile_cont(ttft_ms, 0.5) AS ttft_p50_ms, quantile_cont(ttft_ms, 0.99) AS ttft_p99_ms,
               quantile_cont(tpot_ms, 0.5) AS tpot_p50_ms, quantile_cont(tpot_ms, 0.99) AS tpot_p99_ms,
               quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
               quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
               (max(done_ns) - min(sent_ns)) / 1e9 AS span_s
        FROM requests WHERE submission_id = $s AND attempt = $a
        GROUP BY run ORDER BY {RUN_ORDER_SQL}""", {"s": sid, "a": attempt})


def requests(sid: str, attempt: int) -> pd.DataFrame:
    if not has("requests"):
        return pd.DataFrame()
    return query("SELECT run, request_id, sent_ns / 1e6 AS sent_ms, ttft_ms, tpot_ms, latency_ms, tokens "
                 "FROM requests WHERE submission_id = $s AND attempt = $a ORDER BY sent_ns",
                 {"s": sid, "a": attempt})


def attempts(sid: str) -> list[int]:
    found = set()
    for view in ("requests", "telemetry"):
        if has(view):
            found |= set(query(f"SELECT DISTINCT attempt FROM {view} WHERE submission_id = $s",
                               {"s": sid})["attempt"].astype(int))
    return sorted(found)


def telemetry(sid: str, attempt: int) -> pd.DataFrame:
    """The sidecar's samples, with ``t_s`` in seconds since the first one."""
    if not has("telemetry"):
        return pd.DataFrame()
    return query("""
        SELECT (mono_ns - min(mono_ns) OVER ()) / 1e9 AS t_s, ts, source, device, cpu_percent,
               memory_bytes / 2^20 AS memory_MiB, pids, gpu_util_percent, power_w, dram_bw_GBs,
               gpu_memory_used_bytes / 2^30 AS gpu_memory_GiB
        FROM telemetry WHERE submission_id = $s AND attempt = $a ORDER BY ts, source, device""",
                 {"s": sid, "a": attempt})


def loadgen_logs(challenge: str, sid: str) -> tuple[str, list[str]]:
    """Where LoadGen's summary and detail logs of a submission are kept (a storage URL), and their
    names under it (``attempt=N/<run>/<file>``)."""
    lk = lake()
    prefix = lk.evaluation_prefix(challenge, sid) + "loadgen/"
    return lk.uri(prefix), [k[len(prefix):] for k in lk.loadgen_logs(challenge, sid)]


def loadgen_text(challenge: str, sid: str, name: str, limit: int = 20_000) -> str:
    lk = lake()
    with lk.storage.open(lk.evaluation_prefix(challenge, sid) + "loadgen/" + name) as fh:
        return fh.read(limit).decode("utf-8", errors="replace")


# -- the queue (bucket) ----------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def queue() -> pd.DataFrame:
    """Every submission intake committed, with the latest status orchestration wrote back."""
    b = bucket()
    rows = []
    for marker in b.markers():
        status = b.status(marker.id) or {}
        rows.append({"submission_id": marker.id, "challenge": marker.challenge, "participant": marker.user,
                     "display_name": marker.display_name, "queue": marker.queue, "priority": marker.priority,
                     "status": status.get("status", "queued"), "reason": status.get("reason"),
                     "submitted_at": _parse_ts(marker.created_at),
                     "updated_at": _parse_ts(status.get("updated_at"))})
    return pd.DataFrame(rows, columns=["submission_id", "challenge", "participant", "display_name", "queue",
                                       "priority", "status", "reason", "submitted_at", "updated_at"])


def queue_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = {s: int((df["status"] == s).sum()) for s in ACTIVE_STATUSES}
    counts["terminal"] = int(df["status"].isin(TERMINAL_STATUSES).sum())
    return counts


def oldest_queued_age_s(df: pd.DataFrame, now: datetime | None = None) -> float | None:
    queued = df.loc[df["status"] == "queued", "submitted_at"].dropna()
    if queued.empty:
        return None
    return ((now or datetime.now(timezone.utc)) - queued.min()).total_seconds()


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_utc_iso(value)
    except ValueError:
        return None


# -- the cluster -----------------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def docker_health() -> dict:
    """Engine version, registered runtimes, and the platform's running containers; ``error`` when
    the engine does not answer."""
    try:
        from sandbox.engine import client
        docker = client()
        info = docker.info()
        containers = [{
            "name": c.name, "submission": c.labels.get(LABEL_SUBMISSION, ""),
            "image": (c.image.tags or [c.image.short_id])[0] if c.image else c.attrs.get("Image", "")[:19],
            "runtime": c.attrs.get("HostConfig", {}).get("Runtime", ""), "status": c.status,
            "started_at": c.attrs.get("State", {}).get("StartedAt", "")[:19].replace("T", " "),
        } for c in docker.containers.list(filters={"label": LABEL_MANAGED})]
    except Exception as exc:  # noqa: BLE001 - any failure means: the engine is not usable from here
        return {"error": f"{type(exc).__name__}: {exc}"}
    runtimes = info.get("Runtimes") or {}
    return {"error": None, "version": info.get("ServerVersion", "?"), "runtimes": sorted(runtimes),
            "gvisor": "runsc" in runtimes,
            "gvisor_args": " ".join((runtimes.get("runsc") or {}).get("runtimeArgs") or []),
            "default_runtime": info.get("DefaultRuntime", "runc"), "cpus": info.get("NCPU"),
            "memory_bytes": info.get("MemTotal"), "containers": containers}


def disk_usage() -> dict:
    home = storage().home
    probe = home if home.exists() else next((p for p in home.parents if p.exists()), Path("/"))
    usage = shutil.disk_usage(probe)
    return {"path": str(home), "free": usage.free, "total": usage.total}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def dagster_runs() -> dict:
    """Active Dagster runs (queued, starting, started) from the Dagster instance: ``{"runs": [...]}``,
    or ``{"error": why}`` when Dagster is not set up here or its storage does not answer."""
    from orchestration.config import dagster_home   # the one place that knows DAGSTER_HOME's default
    home = dagster_home()
    if not (home / "dagster.yaml").exists():
        return {"error": f"Dagster is not set up here: no dagster.yaml in {home} (DAGSTER_HOME). "
                         "`make up` writes one.", "home": str(home)}
    try:
        from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
        with DagsterInstance.from_config(str(home)) as instance:
            records = instance.get_run_records(
                RunsFilter(statuses=[DagsterRunStatus(s) for s in ACTIVE_DAGSTER_STATUSES]), limit=500)
            limits = _queue_limits(instance)
    except Exception as exc:  # noqa: BLE001 - show why, keep the rest of the page
        return {"error": f"Dagster's run storage does not answer ({type(exc).__name__}: {exc})",
                "home": str(home)}
    runs = []
    for rec in records:
        run, tags = rec.dagster_run, rec.dagster_run.tags
        runs.append({"queue": tags.get(TAG_QUEUE, "(untagged)"), "status": run.status.value,
                     "priority": int(tags.get(TAG_PRIORITY, 0) or 0),
                     "submission": tags.get(TAG_SUBMISSION, ""), "job": run.job_name,
                     "run_id": run.run_id[:8],
                     "created_at": rec.create_timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")})
    runs.sort(key=lambda r: (r["queue"], r["status"] != "STARTED", -r["priority"], r["created_at"]))
    return {"error": None, "home": str(home), "runs": runs, "limits": limits}


def _queue_limits(instance) -> dict[str, int]:
    """Concurrent runs allowed per `arena/queue` value (dagster.yaml's tag concurrency limits)."""
    get_config = getattr(instance.run_coordinator, "get_run_queue_config", None)
    if get_config is None:
        return {}
    return {str(lim.get("value")): int(lim["limit"]) for lim in get_config().tag_concurrency_limits or []
            if lim.get("key") == TAG_QUEUE and isinstance(lim.get("value"), str)}
