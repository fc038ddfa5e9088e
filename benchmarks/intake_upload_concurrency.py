"""Upload latency over loopback: 50 concurrent uploads against a real uvicorn server, then the same
50 one after another. Prints p50/p99 and checks that none was lost or duplicated (in the bucket and
the database). Never fails on a time.

    .venv/bin/python benchmarks/intake_upload_concurrency.py [--n 50] [--database-url postgresql+psycopg://…]
"""
from __future__ import annotations

import argparse
import io
import socket
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn

from intake.app import create_app
from intake.config import Settings
from intake.security import create_user


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


def run(url: str, token: str, zips: list[bytes], workers: int) -> tuple[list[float], list[str], float]:
    def one(i: int) -> tuple[float, str]:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
            t0 = time.perf_counter()
            r = http.post("/api/v1/submissions", files={"file": (f"{i}.zip", zips[i], "application/zip")})
            r.raise_for_status()
            return time.perf_counter() - t0, r.json()["id"]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, range(len(zips))))
    return [r[0] for r in results], [r[1] for r in results], time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(home=home, bucket=home / "bucket", lake=home / "lake",
                            database_url=args.database_url or f"sqlite:///{home / 'arena.db'}",
                            secret_key="bench-" + "x" * 32, port=port, public_url=f"http://127.0.0.1:{port}",
                            daily_quota=10 * args.n, max_concurrent=10 * args.n, upload_rate_limit=10 * args.n)
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        with app.state.db.session() as s, s.begin():
            _, token_a = create_user(s, "bench-concurrent")
            _, token_b = create_user(s, "bench-sequential")
        url = f"http://127.0.0.1:{port}"
        print(f"database: {settings.database_url.split(':')[0]}, {args.n} uploads of ~{len(make_zip('0'))} bytes")
        ok = True
        for label, token, workers, prefix in (("concurrent", token_a, args.n, "c"), ("sequential", token_b, 1, "s")):
            zips = [make_zip(f"{prefix}{i}") for i in range(args.n)]
            latencies, ids, wall = run(url, token, zips, workers)
            markers = [m for m in app.state.submissions.bucket.markers() if m.user == f"bench-{label}"]
            lost = set(ids) - {m.id for m in markers}
            dup = len(ids) - len(set(ids)) + (len(markers) - len(set(m.id for m in markers)))
            sha_dups = len(markers) - len({m.sha256 for m in markers})
            print(f"{label:>10}: p50 {1000 * statistics.median(latencies):7.1f} ms  "
                  f"p99 {1000 * percentile(latencies, 0.99):7.1f} ms  wall {wall:6.2f} s  "
                  f"throughput {args.n / wall:6.1f}/s  accepted {len(set(ids))}/{args.n}  "
                  f"markers {len(markers)}  lost {len(lost)}  duplicated {dup + sha_dups}")
            ok &= not lost and not dup and not sha_dups and len(markers) == args.n
        # Duplicates under concurrency: the same zip 20 times at once must be one submission.
        same = [make_zip("same")] * 20
        _, ids, _ = run(url, token_a, same, 20)
        print(f"same zip x20 concurrently -> {len(set(ids))} distinct id(s)")
        ok &= len(set(ids)) == 1
        server.should_exit = True
    print("consistency:", "OK" if ok else "BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
