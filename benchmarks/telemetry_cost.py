"""What the telemetry sidecar costs, next to polling Docker's stats API at the same rate.

For one idle container, at 1 Hz and 10 Hz, prints: the sampler's CPU use as percent of one core
(this process's CPU time over wall time), the daemons' extra CPU (dockerd + containerd), schedule
jitter p99 (actual start of a pass minus its scheduled tick), samples achieved, and bytes per sample
in the Parquet file. Figures only; nothing here fails on a time.

    .venv/bin/python benchmarks/telemetry_cost.py [--seconds 20]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import docker

from sandbox.telemetry import Sidecar

IMAGE = "arena/python-cpu:1"


def daemon_cpu_s() -> float:
    """CPU seconds used so far by dockerd and containerd (the cost docker stats moves out of process)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm in ("dockerd", "containerd"):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def p99(values: list[int]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e6 if ordered else float("nan")


def measure(run, seconds: float) -> dict:
    cpu0, daemon0, wall0 = time.process_time(), daemon_cpu_s(), time.monotonic()
    extra = run(seconds)
    wall = time.monotonic() - wall0
    return {"cpu_pct": 100 * (time.process_time() - cpu0) / wall,
            "daemon_pct": 100 * (daemon_cpu_s() - daemon0) / wall, **extra}


def sidecar_run(container, client, interval_s: float, workdir: Path):
    def run(seconds: float) -> dict:
        path = workdir / f"sidecar-{interval_s}.parquet"
        sidecar = Sidecar.start(container.id, path, interval_s=interval_s, docker_client=client)
        try:
            time.sleep(seconds)
        finally:
            summary = sidecar.stop()
        return {"samples": summary.samples, "jitter_p99_ms": p99(summary.lags_ns),
                "bytes_per_sample": path.stat().st_size / max(summary.samples, 1),
                "source": ",".join(summary.sources)}
    return run


def docker_stats_run(container, interval_s: float):
    """The obvious alternative: docker-py ``container.stats(stream=False)`` on the same schedule."""
    def run(seconds: float) -> dict:
        interval_ns = round(interval_s * 1e9)
        t0 = tick = time.monotonic_ns()
        end = t0 + round(seconds * 1e9)
        lags, samples = [], 0
        while tick < end:
            time.sleep(max(0, tick - time.monotonic_ns()) / 1e9)
            lags.append(time.monotonic_ns() - tick)
            container.stats(stream=False)
            samples += 1
            tick = t0 + ((time.monotonic_ns() - t0) // interval_ns + 1) * interval_ns
        return {"samples": samples, "jitter_p99_ms": p99(lags), "bytes_per_sample": None, "source": "docker stats"}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    client = docker.from_env()
    container = client.containers.run(IMAGE, ["python3", "-c", "import time; time.sleep(3600)"],
                                      detach=True, network_mode="none")
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sidecar_run(container, client, 0.5, Path(tmp))(2)   # warm up: imports, first Parquet writer
            for hz in (1, 10):
                for name, run in (("sidecar (cgroup)", sidecar_run(container, client, 1 / hz, Path(tmp))),
                                  ("docker stats poll", docker_stats_run(container, 1 / hz))):
                    results.append((name, hz, measure(run, args.seconds)))
    finally:
        container.remove(force=True)

    print(f"one idle container, {args.seconds:.0f} s per run, {os.cpu_count()} CPUs")
    print(f"{'method':<20}{'rate':>6}{'samples':>9}{'own CPU %':>11}{'daemon CPU %':>14}"
          f"{'jitter p99 ms':>15}{'bytes/sample':>14}")
    for name, hz, r in results:
        size = f"{r['bytes_per_sample']:.0f}" if r["bytes_per_sample"] else "-"
        print(f"{name:<20}{hz:>4}Hz{r['samples']:>9}{r['cpu_pct']:>11.2f}{r['daemon_pct']:>14.2f}"
              f"{r['jitter_p99_ms']:>15.2f}{size:>14}")


if __name__ == "__main__":
    main()
