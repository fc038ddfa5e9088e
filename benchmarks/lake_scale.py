"""The lake at scale: a synthetic lake in the real layout, written through the lake's own writers, then
the leaderboard, one run's telemetry and an analyst query timed against pandas and Polars.

    python benchmarks/lake_scale.py --submissions 10000                         # 60 s at 1 Hz telemetry
    python benchmarks/lake_scale.py --submissions 10000 --telemetry-s 600 --hz 2   # ~36M telemetry rows

Submissions, evaluations (result JSON validated against its schema), requests and telemetry are written
by ``lake.tables.Lake`` (write_submission, write_evaluation, write_requests, put_telemetry): the layout,
the fixed schemas and the journal are the real ones; only the values are synthetic (vectorised with
numpy, written with the tables' schemas). Then ``lake.compaction.compact`` runs, a few submissions land
after it (the uncompacted tail the views must include), and the measurements run.

Ends with one JSON line: leaderboard_s, per_run_s, analyst_s, pandas_leaderboard_s, polars_leaderboard_s
and the rest (median of --repeats; the host load beside them). Speed is measured here, never asserted
in timed tests.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ulid import ULID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lake.compaction import compact  # noqa: E402
from lake.layout import REQUESTS_SCHEMA, TELEMETRY_SCHEMA  # noqa: E402
from lake.leaderboard import build_leaderboard  # noqa: E402
from lake.results import empty_metrics  # noqa: E402
from lake.tables import Lake  # noqa: E402
from lake.views import connect, run_relation  # noqa: E402

CHALLENGE = "efficient-decode"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: the competition's first day

ANALYST_SQL = """
WITH who AS (SELECT id, "user" AS participant FROM submissions WHERE challenge = $c),
gpu AS (
  SELECT who.participant, avg(t.gpu_util_percent) AS gpu_util_percent, avg(t.dram_bw_GBs) AS dram_bw_GBs
  FROM telemetry t JOIN who ON who.id = t.submission_id
  WHERE t.challenge = $c AND t.device LIKE 'gpu%' AND t.source <> 'replay' GROUP BY 1),
lat AS (
  SELECT who.participant, quantile_cont(r.latency_ms, 0.99) AS latency_p99_ms, count(*) AS requests
  FROM requests r JOIN who ON who.id = r.submission_id
  WHERE r.challenge = $c AND r.run LIKE 'perf-%' GROUP BY 1)
SELECT * FROM gpu FULL JOIN lat USING (participant) ORDER BY participant
"""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def result_json(sid: str, rng: np.random.Generator, created_s: float) -> dict:
    roll = rng.random()
    status, reason, valid = "success", None, True
    if roll < 0.10:
        status, reason = "rejected", "accuracy"
    elif roll < 0.15:
        status, reason, valid = "failed", "build", None
    elif roll < 0.20:
        valid = False
    ran = status != "failed"
    tps = float(rng.lognormal(6, 0.6)) if ran else None
    metrics = empty_metrics() | ({
        "tokens_per_second": tps, "latency_p99_ms": float(rng.gamma(4, 10)), "ttft_p50_ms": float(rng.gamma(2, 3)),
        "ttft_p99_ms": float(rng.gamma(3, 5)), "tpot_p50_ms": float(rng.gamma(2, 1)),
        "tpot_p99_ms": float(rng.gamma(3, 2)), "accuracy": 1.0 if status == "success" else 0.4,
        "peak_memory_bytes": float(rng.integers(1 << 28, 1 << 33)),
        "peak_memory_bw_GBs": float(rng.uniform(100, 4000)), "energy_joules": float(rng.uniform(50, 5000)),
    } if ran else {})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_s + 120))
    return {"schema_version": 1, "submission_id": sid, "challenge": CHALLENGE, "status": status,
            "reason": reason, "metrics": metrics,
            "measurement": {"engine": "mlperf-loadgen 6.0.17" if ran else "none", "scenario": "offline",
                            "valid": valid, "repeats": 3 if ran else 0,
                            "tokens_per_second_cv": float(rng.uniform(0, 0.05)) if ran else None},
            "environment": {"runtime": "runsc", "image_digest": None, "base_image": "arena/torch-cuda:1",
                            "gpu": "NVIDIA H100 80GB HBM3", "host": "synthetic", "harness_version": "0"},
            "started_at": stamp, "finished_at": stamp}


def requests_table(rng: np.random.Generator, n: int, start_ns: int) -> pa.Table:
    runs = np.array(["accuracy"] * (n // 4) + ["warmup-1"] * (n // 4) + ["perf-1"] * (n - 2 * (n // 4)))
    sent = start_ns + np.sort(rng.integers(0, 60_000_000_000, n))
    ttft = rng.gamma(2, 3, n)
    latency = ttft + rng.gamma(4, 10, n)
    tokens = rng.integers(16, 128, n).astype(np.int32)
    return pa.table({
        "run": runs, "request_id": np.char.add("r", np.arange(n).astype(str)),
        "prompt_index": np.arange(n, dtype=np.int32), "prompt_set": np.full(n, "sha256:00"),
        "sent_ns": sent, "first_token_ns": sent + (ttft * 1e6).astype(np.int64),
        "done_ns": sent + (latency * 1e6).astype(np.int64), "ttft_ms": ttft,
        "tpot_ms": (latency - ttft) / tokens, "latency_ms": latency, "tokens": tokens,
        "correct_tokens": tokens, "expected_tokens": tokens}, schema=REQUESTS_SCHEMA)


def telemetry_table(rng: np.random.Generator, ticks: int, hz: float, start_ns: int, gpu: bool) -> pa.Table:
    tick_ns = start_ns + (np.arange(ticks) * (1e9 / hz)).astype(np.int64)
    parts = [("cgroup", "container")] + ([("nvml", "gpu0"), ("dcgm", "gpu0")] if gpu else [])
    cols: dict[str, list] = {f.name: [] for f in TELEMETRY_SCHEMA}
    for source, device in parts:
        n = ticks
        values = {
            "ts": tick_ns, "mono_ns": tick_ns - start_ns, "source": np.full(n, source), "device": np.full(n, device)}
        if source == "cgroup":
            values |= {"cpu_percent": rng.uniform(50, 400, n), "memory_bytes": rng.integers(1 << 28, 1 << 31, n),
                       "memory_peak_bytes": np.full(n, 1 << 31), "pids": np.full(n, 12),
                       "io_read_bytes": np.cumsum(rng.integers(0, 1 << 16, n)),
                       "io_write_bytes": np.cumsum(rng.integers(0, 1 << 12, n))}
        elif source == "nvml":
            values |= {"gpu_util_percent": rng.uniform(0, 100, n), "gpu_mem_util_percent": rng.uniform(0, 100, n),
                       "gpu_memory_used_bytes": rng.integers(1 << 30, 1 << 36, n), "power_w": rng.uniform(80, 700, n),
                       "energy_mj_delta": rng.integers(40_000, 350_000, n), "energy_method": np.full(n, "counter"),
                       "sm_clock_mhz": np.full(n, 1980), "mem_clock_mhz": np.full(n, 2619),
                       "temperature_c": rng.integers(40, 80, n)}
        else:
            util = rng.uniform(0, 100, n)
            values |= {"dram_bw_util_percent": util, "dram_bw_GBs": util / 100 * 3352.0,
                       "dram_bw_peak_GBs": np.full(n, 3352.0), "sm_util_percent": rng.uniform(0, 100, n),
                       "tensor_util_percent": rng.uniform(0, 100, n)}
        for f in TELEMETRY_SCHEMA:
            cols[f.name].append(pa.array(values[f.name], f.type) if f.name in values else pa.nulls(n, f.type))
    return pa.table({name: pa.concat_arrays(chunks) for name, chunks in cols.items()}, schema=TELEMETRY_SCHEMA)


def generate(lake: Lake, n: int, participants: int, requests_per_run: int, telemetry_s: float, hz: float,
             gpu_fraction: float, seed: int, first: int = 0) -> dict:
    rng = np.random.default_rng(seed + first)
    span_s = 180 * 86400  # six months of competition
    created = np.sort(T0 + rng.uniform(0, span_s, n))
    ticks = int(telemetry_s * hz)
    counts = {"requests": 0, "telemetry": 0}
    tmp = Path(tempfile.mkdtemp(prefix="arena-lake-gen-"))
    try:
        for i in range(n):
            sid = str(ULID.from_timestamp(float(created[i])))
            user = f"user-{int(rng.integers(0, participants)):05d}"
            lake.write_submission({"id": sid, "challenge": CHALLENGE, "user": user, "display_name": None,
                                   "sha256": f"{first + i:064x}", "size_bytes": int(rng.integers(1 << 12, 1 << 24)),
                                   "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created[i]))})
            result = result_json(sid, rng, float(created[i]))
            lake.write_evaluation(result, attempt=1)
            if result["status"] == "failed":
                continue
            start_ns = int(created[i] * 1e9)
            req = requests_table(rng, requests_per_run, start_ns)
            lake.write_requests(CHALLENGE, sid, 1, req)
            tel = telemetry_table(rng, ticks, hz, start_ns, gpu=rng.random() < gpu_fraction)
            local = tmp / "telemetry.parquet"
            pq.write_table(tel, local, compression="zstd")     # what the sidecar's ParquetStream writes
            lake.put_telemetry(CHALLENGE, sid, 1, local)
            counts["requests"] += req.num_rows
            counts["telemetry"] += tel.num_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _generate_slice(args: tuple) -> dict:
    root, n, participants, requests_per_run, telemetry_s, hz, gpu_fraction, seed, first = args
    return generate(Lake(root), n, participants, requests_per_run, telemetry_s, hz, gpu_fraction, seed, first)


def generate_parallel(root: Path, n: int, workers: int, *rest, first: int = 0) -> dict:
    """``generate`` in ``workers`` processes, each writing its own slice of submissions."""
    from concurrent.futures import ProcessPoolExecutor
    size = -(-n // workers)
    jobs = [(str(root), min(size, n - s), *rest, first + s) for s in range(0, n, size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_generate_slice, jobs))
    return {k: sum(p[k] for p in parts) for k in ("requests", "telemetry")}


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def raw_files(root: Path, table: str, name: str) -> list[str]:
    return sorted(str(p) for p in (root / table).glob(f"*/*/{name}" if table != "submissions" else "*/*.parquet"))


def pandas_leaderboard(root: Path):
    import pandas as pd
    subs = pd.concat([pd.read_parquet(f) for f in raw_files(root, "submissions", "")], ignore_index=True)
    evs = pd.concat([pd.read_parquet(f) for f in raw_files(root, "evaluations", "evaluation.parquet")],
                    ignore_index=True)
    return _rank_pandas(subs, evs)


def pandas_leaderboard_compacted(root: Path):
    import pandas as pd
    parts = lambda t: [str(root / p["key"]) for p in json.loads(  # noqa: E731
        (root / "_compacted" / t / "manifest.json").read_text())["parts"]]
    subs = pd.concat([pd.read_parquet(f) for f in parts("submissions")], ignore_index=True)
    evs = pd.concat([pd.read_parquet(f) for f in parts("evaluations")], ignore_index=True)
    return _rank_pandas(subs, evs)


def _rank_pandas(subs, evs):
    ev = evs[evs.challenge == CHALLENGE].merge(subs[["id", "challenge", "user", "created_at"]],
                                               left_on=["submission_id", "challenge"], right_on=["id", "challenge"])
    ok = ev[(ev.status == "success") & ev.valid.fillna(False).astype(bool)]
    best = ok.sort_values(["m_tokens_per_second", "created_at"], ascending=[False, True]).drop_duplicates("user")
    best = best.assign(rank=best.m_tokens_per_second.rank(method="min", ascending=False).astype(int))
    rest = ev[~ev.user.isin(best.user)].sort_values("created_at").drop_duplicates("user", keep="last")
    return best.sort_values("rank"), rest


def polars_leaderboard(root: Path):
    import polars as pl
    subs = pl.read_parquet(raw_files(root, "submissions", ""))
    evs = pl.read_parquet(raw_files(root, "evaluations", "evaluation.parquet"))
    ev = evs.filter(pl.col("challenge") == CHALLENGE).join(
        subs.select("id", "challenge", "user", "created_at"), left_on=["submission_id", "challenge"],
        right_on=["id", "challenge"])
    ok = ev.filter((pl.col("status") == "success") & pl.col("valid").fill_null(False))
    best = ok.sort(["m_tokens_per_second", "created_at"], descending=[True, False]).unique("user", keep="first")
    return best.with_columns(pl.col("m_tokens_per_second").rank("min", descending=True).alias("rank")).sort("rank")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--participants", type=int, default=None, help="default: submissions / 5")
    ap.add_argument("--requests-per-run", type=int, default=540)
    ap.add_argument("--telemetry-s", type=float, default=60.0)
    ap.add_argument("--hz", type=float, default=1.0)
    ap.add_argument("--gpu-fraction", type=float, default=0.5)
    ap.add_argument("--tail", type=int, default=20, help="submissions written after the compaction")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lake", type=Path, default=None, help="reuse or keep the lake here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2, help="processes writing the synthetic lake")
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args(argv)
    participants = args.participants or max(1, args.submissions // 5)
    root = args.lake or Path(tempfile.mkdtemp(prefix="arena-lake-scale-"))
    lake = Lake(root)
    out: dict = {"submissions": args.submissions, "participants": participants, "lake": str(root),
                 "telemetry_s": args.telemetry_s, "hz": args.hz, "load_before": load()}
    if not (root / "evaluations").exists():
        t = time.perf_counter()
        counts = generate_parallel(root, args.submissions, args.workers, participants, args.requests_per_run,
                                   args.telemetry_s, args.hz, args.gpu_fraction, args.seed)
        out["generate_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        os.environ["ARENA_LAKE_COMPACT_GRACE_S"] = "0"   # the writers are done: nothing in flight
        reports = compact(lake)
        out["compact_s"] = round(time.perf_counter() - t, 1)
        out["compacted_parts"] = {r.table: r.parts_written for r in reports}
        tail = generate(lake, args.tail, participants, args.requests_per_run, args.telemetry_s, args.hz,
                        args.gpu_fraction, args.seed, first=args.submissions)
        out["requests_rows"] = counts["requests"] + tail["requests"]
        out["telemetry_rows"] = counts["telemetry"] + tail["telemetry"]
        print(f"generated in {out['generate_s']} s, compacted in {out['compact_s']} s "
              f"({out['compacted_parts']}); load {load()}", file=sys.stderr, flush=True)
    con_s, con = timed(lambda: connect(lake), args.repeats)
    out["connect_s"] = con_s
    if "telemetry_rows" not in out:
        out["requests_rows"] = con.execute("SELECT count(*) FROM requests").fetchall()[0][0]
        out["telemetry_rows"] = con.execute("SELECT count(*) FROM telemetry").fetchall()[0][0]
    out["leaderboard_s"], board = timed(lambda: build_leaderboard(lake, CHALLENGE), args.repeats)
    # one run: a submission in the middle of the compacted range, and one from the tail
    sids = [r[0] for r in con.execute("SELECT DISTINCT submission_id FROM evaluations "
                                      "WHERE status <> 'failed' ORDER BY 1").fetchall()]
    sid, attempt = sids[len(sids) // 2], 1
    per_run = "SELECT count(*), avg(cpu_percent), max(gpu_util_percent) FROM telemetry " \
              "WHERE submission_id = $s AND attempt = $a"
    out["per_run_s"], rows = timed(lambda: con.execute(per_run, {"s": sid, "a": attempt}).fetchall(), args.repeats)
    out["per_run_rows"] = rows[0][0]
    out["per_run_with_connect_s"], _ = timed(
        lambda: connect(lake, tables=("telemetry",)).execute(per_run, {"s": sid, "a": attempt}).fetchall(),
        args.repeats)
    out["per_run_by_path_s"], _ = timed(
        lambda: run_relation(con, lake, "telemetry", CHALLENGE, sid, attempt).aggregate("count(*)").fetchall(),
        args.repeats)
    out["analyst_s"], analyst = timed(lambda: con.execute(ANALYST_SQL, {"c": CHALLENGE}).fetchall(), args.repeats)
    out["analyst_rows"] = len(analyst)
    if not args.skip_pandas:
        out["pandas_leaderboard_s"], (best, _) = timed(lambda: pandas_leaderboard(root), 1)
        out["polars_leaderboard_s"], pbest = timed(lambda: polars_leaderboard(root), 1)
        out["pandas_compacted_leaderboard_s"], _ = timed(lambda: pandas_leaderboard_compacted(root), 1)
        ranked = [r["submission_id"] for r in board.to_pylist() if r["rank"] is not None]
        # the ranking is the same whoever computes it (over the files present at compaction + tail)
        out["same_ranking_as_pandas"] = ranked == best.submission_id.tolist()
        out["same_ranking_as_polars"] = ranked == pbest["submission_id"].to_list()
        out["speedup_vs_pandas"] = round(out["pandas_leaderboard_s"] / out["leaderboard_s"], 1)
    out["leaderboard_rows"] = board.num_rows
    out["load_after"] = load()
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
