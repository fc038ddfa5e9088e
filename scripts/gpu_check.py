#!/usr/bin/env python3
"""The GPU check: the sidecar's NVML/GPM source against a real GPU during a known memory-bound load.

For a GPU machine that may have no Docker and no package registry: it needs this repository and a
Python with nvidia-ml-py and pyarrow (and torch or CuPy for the load), nothing else. While a
device-to-device copy runs (idle, ~20 s of copying, idle), it

* samples with the sidecar's own code (``NvmlSource`` in a ``Sampler``, as during an evaluation)
  into ``<out>/<device>_sidecar.parquet``;
* records the raw NVML/GPM readings in the replay format (``scripts/record_gpu_trace.py``) as
  ``<out>/<device>_replay_trace.json``, labelled with the real device name: the fixture that can
  replace the synthetic one;
* prints the bandwidth the copy achieved (bytes read + written over CUDA-event time) next to the
  DRAM bandwidth GPM reported over the copy window.

    scripts/gpu_check.sh                      # on the GPU machine
    python scripts/gpu_check.py --replay tests/fixtures/telemetry/h200_replay_trace.json --out /tmp/x
        (a dry run without a GPU: reads a trace through the replay, no load; every output says so)
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import pyarrow.parquet as pq  # noqa: E402

import record_gpu_trace as rec  # noqa: E402
from sandbox.telemetry.nvml import NvmlSource  # noqa: E402
from sandbox.telemetry.parquet_stream import ParquetStream  # noqa: E402
from sandbox.telemetry.sampler import Sampler  # noqa: E402


class CupyCopy(threading.Thread):
    """The same load as record_gpu_trace.CopyWorkload, with CuPy where torch is missing."""

    def __init__(self, gpu: int, nbytes: int):
        super().__init__(daemon=True)
        import cupy
        self.cp = cupy
        with cupy.cuda.Device(gpu):
            self.src = cupy.ones(nbytes, dtype=cupy.uint8)
            self.dst = cupy.empty_like(self.src)
        self.gpu, self.go, self.halt = gpu, threading.Event(), threading.Event()
        self.bytes_moved, self.seconds = 0, 0.0

    def run(self) -> None:
        cp = self.cp
        self.go.wait()
        with cp.cuda.Device(self.gpu):
            while not self.halt.is_set():
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record()
                for _ in range(10):
                    cp.copyto(self.dst, self.src)
                end.record()
                end.synchronize()
                self.seconds += cp.cuda.get_elapsed_time(start, end) / 1000
                self.bytes_moved += 10 * 2 * self.src.size

    @property
    def achieved_GBs(self) -> float | None:
        return self.bytes_moved / self.seconds / 1e9 if self.seconds else None


def make_load(gpu: int, gib: float):
    for kind, make in (("torch", lambda: rec.CopyWorkload(gpu, int(gib * (1 << 30)))),
                       ("cupy", lambda: CupyCopy(gpu, int(gib * (1 << 30))))):
        try:
            return kind, make()
        except ImportError:
            continue
    return None, None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--copy", type=float, default=20.0, help="seconds of copying")
    parser.add_argument("--idle", type=float, default=3.0, help="idle seconds before and after")
    parser.add_argument("--gib", type=float, default=4.0, help="size of each copy buffer, GiB")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "telemetry")
    parser.add_argument("--replay", type=Path, help="dry run through this trace (no GPU, no load)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.replay:
        from sandbox.telemetry.replay import ReplayNvml
        nvml, load_kind, load = ReplayNvml.from_file(args.replay), None, None
    else:
        import pynvml as nvml
        load_kind, load = make_load(args.gpu, args.gib)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(args.gpu)
    device = rec.static_info(nvml, handle, args.gpu)
    name = device["name"] if not args.replay else f"{device['name']} (dry run)"
    stem = slug(device["name"]) + ("_dryrun" if args.replay else "")
    print(f"[gpu-check] {name}: GPM {'supported' if device['gpm_supported'] else 'NOT supported'}; "
          f"load: {load_kind or 'none (neither torch nor CuPy, or a dry run)'}")

    # The sidecar's own source, sampling as during an evaluation (no container source here).
    nvml.nvmlInit()             # NVML counts initialisations: this one is the source's, closed with it
    source = NvmlSource(nvml, [args.gpu])
    print("[gpu-check] " + "; ".join(source.notes))
    sidecar_path = args.out / f"{stem}_sidecar.parquet"
    sampler = Sampler([source], ParquetStream(sidecar_path, metadata={"device": name}), args.interval)
    # The raw readings for the replay fixture, on a handle of their own.
    gpm = {"samples": [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()] if device["gpm_supported"] else None}
    if load is not None:
        load.start()
    sampler.start()
    t0 = time.monotonic()
    samples, total = [], 2 * args.idle + args.copy
    while (t := time.monotonic() - t0) < total:
        if load is not None and args.idle <= t < args.idle + args.copy and not load.go.is_set():
            load.go.set()
        if load is not None and t >= args.idle + args.copy:
            load.halt.set()
        samples.append(rec.read_sample(nvml, handle, t, gpm))
        time.sleep(max(0.0, t0 + (len(samples)) * args.interval - time.monotonic()))
    if load is not None:
        load.halt.set()
        load.join()
    sampler.stop(30)
    device["samples"] = samples
    trace = {
        "format": "arena-gpu-trace/1",
        "provenance": ("dry run through a replayed trace; not recorded on hardware" if args.replay else
                       f"recorded on hardware ({device['name']}) by scripts/gpu_check.py"),
        "recorded_with": "scripts/gpu_check.py, nvidia-ml-py",
        "interval_s": args.interval,
        "workload": {"kind": f"device-to-device copy ({load_kind}), 2 x {args.gib:g} GiB buffers" if load else "none",
                     "seconds": [args.idle, args.idle + args.copy],
                     "achieved_copy_GBs": load.achieved_GBs if load else None},
        "devices": [device],
    }
    trace_path = args.out / f"{stem}_replay_trace.json"
    trace_path.write_text(json.dumps(trace, indent=1) + "\n")
    nvml.nvmlShutdown()

    rows = pq.read_table(sidecar_path).to_pylist()
    start_ns = min(r["mono_ns"] for r in rows) if rows else 0
    copy_lo = start_ns + (args.idle + args.interval) * 1e9     # a GPM value covers the interval before it
    copy_hi = start_ns + (args.idle + args.copy) * 1e9
    inside = [r["dram_bw_GBs"] for r in rows if r["dram_bw_GBs"] is not None and copy_lo <= r["mono_ns"] <= copy_hi]
    achieved = load.achieved_GBs if load else None
    print(f"[gpu-check] sidecar rows: {len(rows)} in {sidecar_path}; replay trace: {trace_path}")
    print(f"[gpu-check] copy achieved: {f'{achieved:.1f} GB/s' if achieved else 'n/a (no load)'}; "
          f"GPM DRAM bandwidth over the copy: "
          + (f"median {statistics.median(inside):.1f} GB/s, max {max(inside):.1f} GB/s ({len(inside)} samples)"
             if inside else "n/a (no GPM samples in the copy window)")
          + (f"; ratio GPM/achieved {statistics.median(inside) / achieved:.3f}" if inside and achieved else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
