"""Dashboard render time at scale: a synthetic lake and bucket of N submissions (10,000 by default),
the real Streamlit app over it, each page timed in Debian's Chromium through Playwright.

    python benchmarks/dashboards_render.py --submissions 10000

The lake is written through the lake's own writers with benchmarks/lake_scale.py's values, then
compacted, and the leaderboard is built: every submission has its submission and evaluation rows, one in
N/--runs also its requests and telemetry (the explorer reads one run's rows; lake_scale.py measures
per-run reads at full telemetry scale); the bucket gets one marker and one status per submission (all finished,
plus --active submissions still queued/building/running on two pools). Intake runs in-process (uvicorn)
so the browser logs in with a real session, as the dashboards require.

A page's render time is from navigation to its final element being visible and Streamlit's script having
finished (``data-test-script-state="notRunning"``). Each page is opened --repeats times, waiting past the
dashboards' cache TTL between opens, so every figure is a cold read of the lake (the median is
reported, with the host load), after one untimed open of each page (the Streamlit process's first run
imports the app). Ends with one JSON line. Speed is measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from lake_scale import CHALLENGE, T0, compact, load, requests_table, result_json, telemetry_table  # noqa: E402

from lake.bucket import Bucket, Marker  # noqa: E402
from lake.leaderboard import build_leaderboard  # noqa: E402
from lake.tables import Lake  # noqa: E402
from lake.views import connect  # noqa: E402

TTL_S = 5  # dashboards/data.py's cache TTL: wait past it so each open reads the lake again


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_slice(args: tuple) -> int:
    """Submissions first..first+n through the lake's writers (lake_scale's values): every one gets its
    submission and evaluation rows and result JSON; one in ``every`` also gets its requests (64) and
    telemetry (30 s at 1 Hz, half with GPU rows): the runs the explorer opens."""
    import numpy as np
    root, first, n, participants, every = args
    lake, rng = Lake(root), np.random.default_rng(first)
    tmp = Path(tempfile.mkdtemp(prefix="arena-dash-gen-"))
    span_s = 180 * 86400
    created = np.sort(T0 + rng.uniform(0, span_s, n))
    try:
        _generate(lake, rng, tmp, created, first, n, participants, every)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n


def _generate(lake, rng, tmp: Path, created, first: int, n: int, participants: int, every: int) -> None:
    import pyarrow.parquet as pq
    from ulid import ULID
    for i in range(n):
        sid = str(ULID.from_timestamp(float(created[i])))
        lake.write_submission({"id": sid, "challenge": CHALLENGE, "user": f"user-{int(rng.integers(0, participants)):05d}",
                               "display_name": None, "sha256": f"{first + i:064x}", "size_bytes": 1 << 20,
                               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created[i]))})
        result = result_json(sid, rng, float(created[i]))
        lake.write_evaluation(result, attempt=1)
        if result["status"] == "failed" or (first + i) % every:
            continue
        start_ns = int(created[i] * 1e9)
        lake.write_requests(CHALLENGE, sid, 1, requests_table(rng, 64, start_ns))
        pq.write_table(telemetry_table(rng, 30, 1.0, start_ns, gpu=rng.random() < 0.5), tmp / "t.parquet")
        lake.put_telemetry(CHALLENGE, sid, 1, tmp / "t.parquet")


def seed(home: Path, n: int, active: int, workers: int, runs: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    lake, bucket = Lake(home / "lake"), Bucket(home / "bucket")
    t = time.perf_counter()
    size = -(-n // workers)
    every = max(1, n // max(1, runs))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(generate_slice, [(str(home / "lake"), s, min(size, n - s), max(1, n // 5), every)
                                       for s in range(0, n, size)]))
    os.environ["ARENA_LAKE_COMPACT_GRACE_S"] = "0"
    compact(lake)
    build_leaderboard(lake, CHALLENGE)
    lake_s = time.perf_counter() - t
    t = time.perf_counter()
    con = connect(lake, tables=("submissions", "evaluations", "requests"))
    rows = con.execute('SELECT s.id, s."user", s.created_at, e.status, e.reason FROM submissions s '
                       "JOIN evaluations e ON e.submission_id = s.id ORDER BY s.id").fetchall()
    with_runs = [r[0] for r in con.execute("SELECT DISTINCT submission_id FROM requests ORDER BY 1").fetchall()]
    con.close()
    empty = home / "empty.zip"
    empty.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    for sid, user, created, status, reason in rows:
        bucket.put_submission(Marker(id=sid, challenge=CHALLENGE, user=user, sha256="0" * 64, created_at=created),
                              empty)
        bucket.set_status(sid, status, reason)
    from ulid import ULID
    for i in range(active):   # unfinished: in the bucket only
        sid = str(ULID())
        pool = "cpu" if i % 2 else "gpu-h100"
        bucket.put_submission(Marker(id=sid, challenge=CHALLENGE, user=f"user-{i:05d}", sha256="1" * 64,
                                     created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), queue=pool),
                              empty)
        bucket.set_status(sid, ("queued", "building", "running")[i % 3])
    return {"lake_s": round(lake_s, 1), "bucket_s": round(time.perf_counter() - t, 1), "markers": len(rows) + active,
            "sids": with_runs}


def start_intake(home: Path):
    import uvicorn
    from intake.app import create_app
    from intake.config import Settings
    from intake.security import create_user

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(home=home, bucket=home / "bucket", lake=home / "lake",
                        database_url=f"sqlite:///{home / 'arena.db'}", secret_key="bench-" + "s" * 40, port=port,
                        public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with app.state.db.session() as session, session.begin():
        token = create_user(session, f"bench-admin-{os.getpid()}", admin=True)[1]   # a reused home has earlier ones
    return settings, server, token


def start_streamlit(home: Path, settings, log: Path) -> tuple[subprocess.Popen, str]:
    from scripts.services import service_env
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ARENA_BUCKET_URL", "ARENA_LAKE_URL")}
    env |= {"ARENA_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "ARENA_DATABASE_URL": settings.database_url,
            "ARENA_SECRET_KEY": settings.secret_key, "ARENA_PUBLIC_URL": settings.public_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboards/app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=ROOT, env=service_env("streamlit", env),
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"streamlit did not come up: {log.read_text()[-2000:]}")


def measure(url: str, intake_url: str, token: str, pages: list[tuple[str, str, str]], repeats: int) -> dict:
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=300_000)
    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
        page.set_default_timeout(300_000)
        page.goto(f"{intake_url}/login")
        page.fill('input[name="token"]', token)
        page.locator('form[action="/login/token"] button, form[action="/login/token"] input[type="submit"]').click()
        page.wait_for_url(f"{intake_url}/submissions")
        for name, path, final in pages:   # once each, untimed: Streamlit's first run imports the app
            page.goto(f"{url}/{path}", wait_until="commit")
            expect(page.get_by_role("heading", name=re.compile(final))).to_be_visible()
            expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(1)
        for name, path, final in pages:
            times = []
            for _ in range(repeats):
                time.sleep(TTL_S + 1)
                t = time.perf_counter()
                page.goto(f"{url}/{path}", wait_until="commit")
                expect(page.get_by_role("heading", name=re.compile(final))).to_be_visible()
                expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(1)
                times.append(time.perf_counter() - t)
            out[name] = {"median_s": round(statistics.median(times), 2), "runs_s": [round(x, 2) for x in times],
                         "load": load()}
            print(f"{name}: {out[name]}", file=sys.stderr, flush=True)
        browser.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", type=int, default=10_000)
    ap.add_argument("--active", type=int, default=30, help="unfinished submissions in the bucket")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200, help="submissions that get requests and telemetry")
    ap.add_argument("--home", type=Path, default=None, help="keep (or reuse) the synthetic arena here")
    args = ap.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="arena-dash-bench-"))
    out: dict = {"submissions": args.submissions, "home": str(home), "load_before": load()}
    if not (home / "lake").exists():
        info = seed(home, args.submissions, args.active, args.workers, args.runs)
        (home / "sids.json").write_text(json.dumps(info.pop("sids")))
        out |= info
        print(f"seeded: {info}; load {load()}", file=sys.stderr, flush=True)
    sids = json.loads((home / "sids.json").read_text())
    a, b = sids[len(sids) // 2], sids[len(sids) // 3]
    settings, server, token = start_intake(home)
    proc, url = start_streamlit(home, settings, home / "streamlit.log")
    try:
        pages = [("leaderboard", "", "^History$"), ("explorer", f"explorer?submission={a}", "^Logs$"),
                 ("explorer_compare", f"explorer?submission={a}&compare={b}", f"^Telemetry — {b}"),
                 ("admin", "admin", "^Dagster runs$")]
        out["render"] = measure(url, settings.public_url, token, pages, args.repeats)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        server.should_exit = True
    out["load_after"] = load()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
