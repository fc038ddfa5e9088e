"""Upload latency over loopback against the real intake server (`python -m intake`, its own process,
on the database given), with the real bucket and lake. Three scenarios, one after another:

- ``users``:      N different users, each with their own API token, one upload each, all at once;
- ``one_user``:   the same N uploads from one user, all at once (that user's row lock serialises them);
- ``sequential``: N uploads from one user, one after another.

For each: p50/p99/max latency, wall time, and a consistency check (N accepted ids, N rows in the
database, N zips and N markers in the bucket, none duplicated). Then the same zip 20 times at once
must be one submission. The limits (quota, rate, unfinished cap) are raised to 10 N so that none
refuses; the rules are otherwise the defaults. Never fails on a time; ends with one JSON line.

    .venv/bin/python benchmarks/intake_upload_concurrency.py --n 50 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/arena_x [--scenarios users,one_user]

``--server thread`` serves intake in this process instead (client and server then share one GIL).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake.config import Settings  # noqa: E402
from intake.db import Database  # noqa: E402
from intake.security import create_user  # noqa: E402
from lake.bucket import Bucket  # noqa: E402


def make_zip(marker: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Dockerfile", 'FROM arena/python-cpu:1\nCOPY . /app\nCMD ["python3", "decoder.py"]\n')
        zf.writestr("requirements.txt", "")
        zf.writestr("decoder.py", f"# {marker}\n" + "x = 1\n" * 2000)
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def upload_all(url: str, tokens: list[str], zips: list[bytes], workers: int) -> tuple[list[float], list[str], float]:
    """Upload zips[i] with tokens[i]; all clients connect first, then a barrier releases them at once."""
    barrier = threading.Barrier(workers) if workers > 1 else None

    def one(i: int) -> tuple[float, str]:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[i]}"}, timeout=300) as http:
            http.get("/healthz-warmup")      # a 404, but the connection is open before the clock starts
            if barrier is not None:
                barrier.wait()
            t0 = time.perf_counter()
            r = http.post("/api/v1/submissions", files={"file": (f"{i}.zip", zips[i], "application/zip")})
            r.raise_for_status()
            return time.perf_counter() - t0, r.json()["id"]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, range(len(zips))))
    return [r[0] for r in results], [r[1] for r in results], time.perf_counter() - t0


def start_server(settings: Settings, mode: str):
    """The intake server: its own process (`python -m intake`), or a thread here. Returns a stop()."""
    if mode == "thread":
        import uvicorn
        from intake.app import create_app
        sock = socket.socket()
        sock.bind(("127.0.0.1", settings.port))
        server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        return lambda: setattr(server, "should_exit", True), os.getpid()
    env = os.environ | {
        "ARENA_HOME": str(settings.home), "ARENA_BUCKET_URL": f"file://{settings.bucket}",
        "ARENA_LAKE_URL": f"file://{settings.lake}", "ARENA_DATABASE_URL": settings.database_url,
        "ARENA_SECRET_KEY": settings.secret_key, "ARENA_PORT": str(settings.port),
        "ARENA_DAILY_QUOTA": str(settings.daily_quota), "ARENA_MAX_CONCURRENT": str(settings.max_concurrent),
        "ARENA_UPLOAD_RATE_LIMIT": str(settings.upload_rate_limit), "PYTHONPATH": str(ROOT)}
    log = open(settings.home / "intake.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "intake"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{settings.port}/healthz", timeout=5).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError((settings.home / "intake.log").read_text())
        time.sleep(0.2)

    def stop():
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return stop, proc.pid


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(db: Database, bucket: Bucket, names: list[str], ids: list[str], n: int) -> dict:
    """Nothing lost, nothing duplicated: the accepted ids against the database rows, zips and markers."""
    from sqlalchemy import select
    from intake.models import Submission, User
    with db.session() as s:
        rows = s.execute(select(Submission.id, Submission.sha256).join(User, Submission.user_id == User.id)
                         .where(User.name.in_(names))).all()
    markers = [m for m in bucket.markers() if m.user in set(names)]
    zips = [m for m in markers if bucket.has_zip(m.challenge, m.id)]
    accepted = set(ids)
    out = {"accepted": len(accepted), "rows": len(rows), "markers": len(markers), "zips": len(zips),
           "lost": len(accepted - {r[0] for r in rows}) + len(accepted - {m.id for m in markers}),
           "duplicated": (len(ids) - len(accepted)) + (len(rows) - len({r[1] for r in rows}))
                         + (len(markers) - len({m.id for m in markers}))}
    out["ok"] = (out["lost"] == 0 and out["duplicated"] == 0 and
                 len(accepted) == len(rows) == len(markers) == len(zips) == n)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--database-url", help="default: SQLite in a temporary directory")
    ap.add_argument("--scenarios", default="users,one_user,sequential")
    ap.add_argument("--server", choices=("process", "thread"), default="process")
    args = ap.parse_args()
    n = args.n
    out: dict = {"n": n, "server": args.server, "load_before": load(), "scenarios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        port = free_port()
        settings = Settings(home=home, bucket=home / "bucket", lake=home / "lake",
                            database_url=args.database_url or f"sqlite:///{home / 'arena.db'}",
                            secret_key="bench-" + "x" * 32, port=port, public_url=f"http://127.0.0.1:{port}",
                            daily_quota=10 * n, max_concurrent=10 * n, upload_rate_limit=10 * n)
        out["database"] = settings.database_url.split(":")[0]
        db = Database(settings.database_url)
        db.migrate()
        stop, server_pid = start_server(settings, args.server)
        bucket = Bucket(settings.bucket)
        run_tag = str(port)
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"database: {out['database']}, server: {args.server}, {n} uploads of ~{len(make_zip('0'))} bytes")
            ok = True
            for k, label in enumerate(args.scenarios.split(",")):
                if label == "users":
                    names = [f"bench-{run_tag}-{k}-u{i}" for i in range(n)]
                else:
                    names = [f"bench-{run_tag}-{k}-{label}"]
                with db.session() as s, s.begin():
                    tokens = [create_user(s, name)[1] for name in names]
                tokens = tokens if len(tokens) == n else tokens * n
                zips = [make_zip(f"{label}{i}") for i in range(n)]
                before, cpu0 = load(), cpu_s(server_pid)
                latencies, ids, wall = upload_all(url, tokens, zips, 1 if label == "sequential" else n)
                cpu1 = cpu_s(server_pid)
                figures = {"p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 0.99),
                           "max_s": max(latencies), "wall_s": wall, "per_s": n / wall,
                           "server_cpu_ms_per_upload": 1000 * (cpu1 - cpu0) / n}
                figures = {k: (round(v, 3) if v is not None else None) for k, v in figures.items()}
                consistency = check(db, bucket, names, ids, n)
                out["scenarios"][label if label not in out["scenarios"] else f"{label}_{k}"] = figures | consistency | {"load": before}
                ok &= consistency["ok"]
                print(f"{label:>10}: p50 {1000 * figures['p50_s']:7.1f} ms  p99 {1000 * figures['p99_s']:7.1f} ms  "
                      f"max {1000 * figures['max_s']:7.1f} ms  wall {wall:6.2f} s  server cpu "
                      f"{figures['server_cpu_ms_per_upload']:5.1f} ms/upload  ok {consistency['ok']}  load {before}")
            # Duplicates under concurrency: the same zip 20 times at once must be one submission.
            with db.session() as s, s.begin():
                _, token = create_user(s, f"bench-{run_tag}-same")
            _, ids, _ = upload_all(url, [token] * 20, [make_zip("same")] * 20, 20)
            out["same_zip_x20_distinct_ids"] = len(set(ids))
            ok &= len(set(ids)) == 1
        finally:
            stop()
            db.dispose()
    out["load_after"] = load()
    out["consistency"] = "OK" if ok else "BROKEN"
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
