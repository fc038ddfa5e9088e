"""Everything the dashboards read: the lake (DuckDB views), the bucket, Docker and Dagster.

Pages only lay things out; every read lives here, cached for a few seconds so a page that reruns on
each click does not re-scan the lake each time. Nothing here writes.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from dashboards.format import missing, text
from dashboards.queue import QueueEntry, depth_by_pool, read_queue
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
_CURSOR_LOCK = threading.Lock()


@st.cache_resource(ttl=TTL_S, show_spinner=False, max_entries=4)
def snapshot(url: str) -> duckdb.DuckDBPyConnection:
    """One DuckDB connection with the lake's views, shared by every query of every page and session for
    TTL_S seconds: a page load opens the views once (four manifests, four short journal listings), not
    once per query. Each query runs on its own ``cursor()`` (DuckDB connections are not shared between
    threads). The parts it names stay readable for a whole compaction interval after a newer manifest
    replaces them (lake/compaction.py), far longer than TTL_S."""
    return connect(url)


def cursor() -> duckdb.DuckDBPyConnection:
    con = snapshot(str(storage().lake))
    with _CURSOR_LOCK:
        cur = con.cursor()
    cur.execute("SET enable_progress_bar = false")
    return cur


@st.cache_data(ttl=TTL_S, show_spinner=False)
def views() -> list[str]:
    cur = cursor()
    try:
        return available_views(cur)
    finally:
        cur.close()


def has(view: str) -> bool:
    return view in views()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def query(sql: str, params: dict | None = None) -> pd.DataFrame:
    cur = cursor()
    try:
        return cur.execute(sql, params or {}).fetch_df()
    finally:
        cur.close()


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


EVAL_LIST_LIMIT = 500


def evaluations(participant: str | None = None, include: tuple[str, ...] = (),
                limit: int = EVAL_LIST_LIMIT) -> pd.DataFrame:
    """Evaluated submissions, newest first, with who submitted them: the newest ``limit`` (a picker of
    10,000 would be slow and useless), plus the ids in ``include``; only ``participant``'s when given."""
    cols = ["submission_id", "challenge", "status", "reason", "attempt", "finished_at", "participant",
            "display_name", "label"]
    if not has("evaluations") or (participant is not None and not has("submissions")):
        return pd.DataFrame(columns=cols)
    join = ""
    who = "NULL AS participant, NULL AS display_name"
    if has("submissions"):
        join = "LEFT JOIN submissions s ON s.id = e.submission_id AND s.challenge = e.challenge"
        who = 's."user" AS participant, coalesce(s.display_name, s."user") AS display_name'
    where = 'WHERE s."user" = $u' if participant is not None else ""
    params = {"n": limit, "ids": list(include)}
    if participant is not None:
        params["u"] = participant
    sql = (f"SELECT e.submission_id, e.challenge, e.status, e.reason, e.attempt, e.finished_at, {who} "
           f"FROM evaluations e {join} {where}")
    df = query(f"SELECT * FROM (({sql} ORDER BY e.submission_id DESC LIMIT $n) UNION "
               f"(SELECT * FROM ({sql}) WHERE list_contains($ids, submission_id))) "
               "ORDER BY submission_id DESC", params)
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
QUEUE_COLUMNS = ["submission_id", "challenge", "participant", "display_name", "queue", "priority", "status",
                 "reason", "submitted_at", "updated_at"]


def finished_ids() -> set[str]:
    """Submissions whose latest evaluation in the lake ended (one small query, not 10,000 file reads)."""
    if not has("evaluations"):
        return set()
    return set(query("SELECT DISTINCT submission_id FROM evaluations WHERE status IN "
                     f"({', '.join(repr(s) for s in TERMINAL_STATUSES)})")["submission_id"])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def queue() -> pd.DataFrame:
    """Submissions not yet finished in the lake, with the latest status orchestration wrote back;
    ``attrs["finished"]``: how many markers the lake already holds a terminal evaluation for."""
    entries, skipped = read_queue(bucket(), finished_ids())
    df = pd.DataFrame([{"submission_id": e.submission_id, "challenge": e.challenge, "participant": e.participant,
                        "display_name": e.display_name, "queue": e.pool, "priority": e.priority,
                        "status": e.status, "reason": e.reason, "submitted_at": e.submitted_at,
                        "updated_at": e.updated_at} for e in entries], columns=QUEUE_COLUMNS)
    df.attrs["finished"] = skipped
    return df


def queue_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = {s: int((df["status"] == s).sum()) for s in ACTIVE_STATUSES}
    counts["terminal"] = int(df["status"].isin(TERMINAL_STATUSES).sum()) + int(df.attrs.get("finished", 0))
    return counts


def oldest_queued_age_s(df: pd.DataFrame, now: datetime | None = None) -> float | None:
    queued = df.loc[df["status"] == "queued", "submitted_at"].dropna()
    if queued.empty:
        return None
    return ((now or datetime.now(timezone.utc)) - queued.min()).total_seconds()


def pools_file() -> Path:
    """The fleet's pools file (orchestration reads the same one; it is not imported here)."""
    return Path(os.environ.get("ARENA_POOLS_FILE", str(Path(__file__).resolve().parents[1] / "pools.toml")))


@st.cache_data(ttl=60, show_spinner=False)
def workers() -> list[dict]:
    """The workers the pools file declares: name, pool, host, devices ([] when there is no file)."""
    try:
        raw = tomllib.loads(pools_file().read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [{"name": str(w.get("name", "")), "pool": str(w.get("pool", "")), "host": str(w.get("host", "")),
             "devices": str(w.get("devices", ""))} for w in raw.get("worker", []) if isinstance(w, dict)]


def queue_by_pool(df: pd.DataFrame) -> pd.DataFrame:
    entries = [QueueEntry(r.submission_id, r.challenge, r.participant, r.display_name, r.queue, int(r.priority),
                          r.status, r.reason, None if pd.isna(r.submitted_at) else r.submitted_at.to_pydatetime(),
                          None) for r in df.itertuples()]
    pools = sorted({w["pool"] for w in workers() if w["pool"]})
    return pd.DataFrame(depth_by_pool(entries, pools),
                        columns=["pool", *ACTIVE_STATUSES, "oldest_wait_s"])


def recent_finished(limit: int = 100) -> pd.DataFrame:
    """The last ``limit`` finished evaluations (the lake), newest first."""
    if not has("evaluations"):
        return pd.DataFrame(columns=["submission_id", "challenge", "status", "reason", "finished_at", "host"])
    return query("SELECT submission_id, challenge, status, reason, finished_at, host FROM evaluations "
                 "ORDER BY finished_at DESC NULLS LAST, submission_id DESC LIMIT $n", {"n": limit})


def failures_by_reason(days: int = 7, examples: int = 5) -> pd.DataFrame:
    """Evaluations that did not succeed in the last ``days`` days, grouped by status and reason."""
    if not has("evaluations"):
        return pd.DataFrame(columns=["status", "reason", "count", "last_at", "examples"])
    return query("""
        SELECT status, coalesce(reason, '(none)') AS reason, count(*) AS count, max(finished_at) AS last_at,
               list(submission_id ORDER BY finished_at DESC)[1:$k] AS examples
        FROM evaluations
        WHERE status <> 'success' AND TRY_CAST(finished_at AS TIMESTAMPTZ) >= now() - to_days(CAST($d AS INTEGER))
        GROUP BY 1, 2 ORDER BY count DESC, status, reason""", {"d": days, "k": examples})


def disturbed_runs(limit: int = 50) -> pd.DataFrame:
    """Evaluations whose timed runs another process disturbed (cpu's interference check): re-measured,
    or still disturbed after the limit (then never ranked)."""
    if not has("evaluations"):
        return pd.DataFrame(columns=["submission_id", "challenge", "status", "disturbed", "remeasured", "valid",
                                     "host", "finished_at"])
    return query("""
        SELECT submission_id, challenge, status, disturbed, remeasured, valid, host, finished_at
        FROM evaluations WHERE coalesce(disturbed, false) OR coalesce(remeasured, 0) > 0
        ORDER BY finished_at DESC NULLS LAST LIMIT $n""", {"n": limit})


def host_activity() -> pd.DataFrame:
    """Per worker host the lake has seen: evaluations, failures of the platform, the last one."""
    if not has("evaluations"):
        return pd.DataFrame(columns=["host", "evaluations", "platform_failures", "last_at"])
    return query("""
        SELECT host, count(*) AS evaluations, count(*) FILTER (WHERE reason = 'platform') AS platform_failures,
               max(finished_at) AS last_at
        FROM evaluations WHERE host IS NOT NULL GROUP BY 1 ORDER BY 1""")


# -- this host: NVML where present, CPU and memory otherwise ---------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def local_health() -> dict:
    """The host the dashboards run on: load, CPUs, memory (``/proc``), and its GPUs from NVML (``gpus``
    is None when NVML is absent; ``nvml_error`` says why)."""
    out = {"host": socket.gethostname(), "cpus": os.cpu_count(), "load": os.getloadavg(),
           "memory_total": None, "memory_available": None, "gpus": None, "nvml_error": None}
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        out["memory_total"] = int(info["MemTotal"].split()[0]) * 1024
        out["memory_available"] = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    out["gpus"], out["nvml_error"] = nvml_gpus()
    return out


def nvml_gpus() -> tuple[list[dict] | None, str | None]:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no NVML library or no driver: CPU and memory only
        return None, f"{type(exc).__name__}: {exc}"
    gpus = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append({"index": i, "name": _nvml(pynvml.nvmlDeviceGetName, h),
                         "uuid": _nvml(pynvml.nvmlDeviceGetUUID, h),
                         "util_percent": getattr(_nvml(pynvml.nvmlDeviceGetUtilizationRates, h), "gpu", None),
                         "memory_used": getattr(_nvml(pynvml.nvmlDeviceGetMemoryInfo, h), "used", None),
                         "memory_total": getattr(_nvml(pynvml.nvmlDeviceGetMemoryInfo, h), "total", None),
                         "power_w": (lambda mw: None if mw is None else mw / 1000)(
                             _nvml(pynvml.nvmlDeviceGetPowerUsage, h)),
                         "temperature_c": _nvml(pynvml.nvmlDeviceGetTemperature, h, 0)})
    finally:
        pynvml.nvmlShutdown()
    return gpus, None


def _nvml(fn, *args):
    try:
        value = fn(*args)
    except Exception:  # noqa: BLE001 - one field the device does not support: not measured
        return None
    return value.decode() if isinstance(value, bytes) else value


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


# -- comparing runs -------------------------------------------------------------------------------
CDF_POINTS = 200
TIMELINE_REQUESTS = 200
GPU_SOURCES = ("nvml", "nvml-gpm", "dcgm", "replay")


def latency_cdf(sid: str, attempt: int) -> pd.DataFrame:
    """The latency CDF of the timed runs (perf-*), at most CDF_POINTS points (every k-th request)."""
    if not has("requests"):
        return pd.DataFrame(columns=["latency_ms", "fraction"])
    return query("""
        WITH r AS (SELECT latency_ms, cume_dist() OVER (ORDER BY latency_ms) AS fraction,
                          row_number() OVER (ORDER BY latency_ms) AS i, count(*) OVER () AS n
                   FROM requests WHERE submission_id = $s AND attempt = $a AND run LIKE 'perf-%'
                     AND latency_ms IS NOT NULL)
        SELECT latency_ms, fraction FROM r WHERE i % greatest(1, n // $p) = 0 OR i = n OR i = 1
        ORDER BY latency_ms""", {"s": sid, "a": attempt, "p": CDF_POINTS})


def token_timeline(sid: str, attempt: int) -> pd.DataFrame:
    """The first timed run's requests (at most TIMELINE_REQUESTS): when each was sent, when its first
    token and its last token arrived, in ms since the run's first request."""
    if not has("requests"):
        return pd.DataFrame(columns=["request", "sent_ms", "first_token_ms", "done_ms", "tokens"])
    return query("""
        WITH r AS (SELECT * FROM requests WHERE submission_id = $s AND attempt = $a AND run = (
                     SELECT min(run) FROM requests WHERE submission_id = $s AND attempt = $a AND run LIKE 'perf-%')),
             t0 AS (SELECT min(sent_ns) AS t0 FROM r)
        SELECT row_number() OVER (ORDER BY sent_ns, request_id) AS request, request_id,
               (sent_ns - t0) / 1e6 AS sent_ms, (first_token_ns - t0) / 1e6 AS first_token_ms,
               (done_ns - t0) / 1e6 AS done_ms, tokens
        FROM r, t0 ORDER BY sent_ns, request_id LIMIT $n""", {"s": sid, "a": attempt, "n": TIMELINE_REQUESTS})


def gpu_telemetry(sid: str, attempt: int) -> pd.DataFrame:
    """GPU rows only (sources nvml, nvml-gpm, dcgm, replay), with the energy used so far per device
    (the running sum of ``energy_mj_delta``, in J; null where the source had no energy reading)."""
    if not has("telemetry"):
        return pd.DataFrame()
    return query(f"""
        WITH g AS (SELECT * FROM telemetry WHERE submission_id = $s AND attempt = $a
                   AND source IN ({', '.join(repr(x) for x in GPU_SOURCES)})),
             t0 AS (SELECT min(mono_ns) AS t0 FROM telemetry WHERE submission_id = $s AND attempt = $a)
        SELECT (mono_ns - t0) / 1e9 AS t_s, source, device, source || ' · ' || device AS series,
               gpu_util_percent, dram_bw_GBs, power_w,
               CASE WHEN energy_mj_delta IS NULL THEN NULL ELSE
                 sum(energy_mj_delta) OVER (PARTITION BY source, device ORDER BY mono_ns) / 1e3 END AS energy_J,
               energy_method
        FROM g, t0 ORDER BY mono_ns, source, device""", {"s": sid, "a": attempt})


# -- leaderboard history --------------------------------------------------------------------------
def best_history(challenge: str, top: int = 10) -> pd.DataFrame:
    """Best tokens/s over time per participant (successful, valid, undisturbed evaluations): one row
    each time a participant beat their own best, for the ``top`` participants by best score."""
    if not (has("evaluations") and has("submissions")):
        return pd.DataFrame(columns=["participant", "submitted", "best_tokens_per_second", "submission_id"])
    return query("""
        WITH ev AS (
          SELECT s."user" AS participant, e.submission_id, e.m_tokens_per_second AS tps,
                 TRY_CAST(s.created_at AS TIMESTAMPTZ) AS submitted
          FROM evaluations e JOIN submissions s ON s.id = e.submission_id AND s.challenge = e.challenge
          WHERE e.challenge = $c AND e.status = 'success' AND coalesce(e.valid, false)
            AND NOT coalesce(e.disturbed, false) AND e.m_tokens_per_second IS NOT NULL),
        run AS (SELECT *, max(tps) OVER (PARTITION BY participant ORDER BY submitted, submission_id
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM ev),
        records AS (SELECT participant, submitted, tps AS best_tokens_per_second, submission_id FROM run
                    WHERE before IS NULL OR tps > before),
        leaders AS (SELECT participant FROM records GROUP BY 1
                    ORDER BY max(best_tokens_per_second) DESC LIMIT $k)
        SELECT r.* FROM records r JOIN leaders USING (participant) ORDER BY participant, submitted""",
                 {"c": challenge, "k": top})
