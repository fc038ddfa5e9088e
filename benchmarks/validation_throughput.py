"""How fast `validate_zip` checks a ~50 MB submission, and how much memory it needs, beside the
obvious alternative (`zipfile.ZipFile(...).testzip()`, then reading every entry into memory).

Each side runs in its own subprocess so its peak RSS is its own: VmHWM from /proc/self/status, not
ru_maxrss, which Linux carries over from the parent through fork and exec (a child would start at the
parent's peak). Growth is measured from VmRSS once imports are done. Prints figures only; never fails
on a time.

    python benchmarks/validation_throughput.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MB = 10**6


def build_submission(path: Path) -> None:
    """~46 MB on disk: incompressible blobs (stored and deflated) and compressible source text."""
    rng = random.Random(7)
    words = [f"{w}_{i}" for i, w in enumerate("token logits cache layer head rope norm".split() * 40)]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Dockerfile", "FROM arena/python-cpu:1\nCOPY . /app\nCMD [\"python3\", \"/app/decoder.py\"]\n")
        zf.writestr("requirements.txt", "numpy\n")
        zf.writestr("arena.toml", 'challenge = "efficient-decode"\ndisplay_name = "bench"\n')
        for i in range(4):
            method = zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED
            zf.writestr(f"weights/shard{i}.bin", rng.randbytes(8 * MB), method)
        for i in range(60):
            lines = (f"{rng.choice(words)} = {rng.choice(words)}({rng.randint(0, 999)})\n" for _ in range(35_000))
            zf.writestr(f"src/module_{i:02d}.py", "".join(lines), zipfile.ZIP_DEFLATED)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(kind: str, path: Path) -> dict:
    """Run one side in this process; report seconds and the peak RSS around it."""
    if kind == "validate_zip":
        from intake.validation import validate_zip
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    if kind == "validate_zip":
        uncompressed = validate_zip(path).uncompressed_bytes
    else:
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            contents = {name: zf.read(name) for name in zf.namelist()}
            uncompressed = sum(map(len, contents.values()))
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {"seconds": seconds, "peak_kib": peak, "growth_kib": peak - before, "uncompressed": uncompressed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", choices=["validate_zip", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("zip", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.zip)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "submission.zip"
        build_submission(path)
        size = path.stat().st_size
        print(f"archive: {size / MB:.1f} MB on disk, python {sys.version.split()[0]}, {os.cpu_count()} cpus")
        rows = {}
        for kind in ("validate_zip", "naive"):
            runs = [json.loads(subprocess.run(
                [sys.executable, __file__, "--measure", kind, str(path)],
                check=True, capture_output=True, text=True).stdout) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["seconds"])
            rows[kind] = best | {"peak_kib": max(r["peak_kib"] for r in runs),
                                 "growth_kib": max(r["growth_kib"] for r in runs)}
        uncompressed = rows["validate_zip"]["uncompressed"]
        print(f"uncompressed: {uncompressed / MB:.1f} MB (measured by inflating)\n")
        print(f"{'':36} {'best s':>8} {'MB/s (zip)':>11} {'MB/s (infl.)':>13} {'peak RSS':>10} {'RSS growth':>11}")
        labels = {"validate_zip": "validate_zip (streaming, all rules)",
                  "naive": "testzip() + read all into memory"}
        for kind, r in rows.items():
            print(f"{labels[kind]:36} {r['seconds']:8.3f} {size / MB / r['seconds']:11.1f} "
                  f"{r['uncompressed'] / MB / r['seconds']:13.1f} {r['peak_kib'] / 1024:8.1f} MiB "
                  f"{r['growth_kib'] / 1024:8.1f} MiB")


if __name__ == "__main__":
    main()
