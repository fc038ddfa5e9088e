"""What a finished sidecar hands back, and the metrics it gives for the harness's timed window."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

_WINDOW_COLUMNS = ["mono_ns", "source", "device", "cpu_percent", "memory_bytes", "memory_peak_bytes",
                   "energy_mj_delta", "energy_method", "dram_bw_GBs", "dram_bw_peak_GBs", "gpu_memory_used_bytes",
                   "process_gpu_memory_bytes"]
_GPU_SOURCES = ("nvml", "nvml-gpm", "dcgm", "replay")


@dataclass
class TelemetrySummary:
    path: Path | None
    samples: int                      # sampling passes written (each pass writes one row per source and device)
    field_errors: dict[str, int]      # "<source>.<column>" -> values that came back null because reading failed
    crashed: bool
    error: str | None
    sources: tuple[str, ...]          # e.g. ('cgroup',) or ('cgroup', 'replay')
    ended_because: str | None = None  # 'stopped', 'container gone: …', 'crashed'
    ticks_skipped: int = 0            # ticks passed over because a pass overran the interval
    notes: tuple[str, ...] = ()       # runtime, what the GPU sources found (DRAM peak, GPM, DCGM, NVML)
    lags_ns: list[int] = field(default_factory=list, repr=False)  # how late each pass started

    def window(self, start_mono_ns: int, end_mono_ns: int) -> dict:
        """Metrics over [start, end] in ``time.monotonic_ns()`` terms; a value is None when not measured.

        ``energy_joules`` pro-rates each energy delta by how much of its interval lies in the window;
        ``energy_method`` says where the deltas came from: ``counter``, ``power-x-time`` (a GPU with no
        energy counter) or both joined by ``+``.
        ``peak_memory_bytes`` is the largest sampled working set, raised to the kernel's high-water
        mark when that mark grew during the window (so a spike between samples is not missed).
        """
        out = {"peak_memory_bw_GBs": None, "dram_bw_peak_GBs": None, "energy_joules": None, "energy_method": None,
               "peak_memory_bytes": None, "peak_gpu_memory_bytes": None, "cpu_percent_mean": None,
               "container_source": None, "gpu_source": None, "replay": False,
               "telemetry_missing": self.crashed or self.path is None}
        if self.path is None or not Path(self.path).exists():
            out["telemetry_missing"] = True
            return out
        rows = pq.read_table(self.path, columns=_WINDOW_COLUMNS).to_pylist()
        rows.sort(key=lambda r: r["mono_ns"])
        inside = [r for r in rows if start_mono_ns <= r["mono_ns"] <= end_mono_ns]
        container = [r for r in inside if r["device"] == "container"]
        gpu = [r for r in inside if r["source"] in _GPU_SOURCES]
        out["container_source"] = container[0]["source"] if container else None
        out["gpu_source"] = gpu[0]["source"] if gpu else None
        out["replay"] = any(r["source"] == "replay" for r in inside)

        cpu = [r["cpu_percent"] for r in container if r["cpu_percent"] is not None]
        out["cpu_percent_mean"] = sum(cpu) / len(cpu) if cpu else None
        out["peak_memory_bytes"] = _peak_memory(rows, container, start_mono_ns)
        out["peak_memory_bw_GBs"] = _max(gpu, "dram_bw_GBs")
        out["dram_bw_peak_GBs"] = _max(gpu, "dram_bw_peak_GBs")
        out["peak_gpu_memory_bytes"] = _max(gpu, "process_gpu_memory_bytes")
        out["energy_joules"] = _energy_joules(rows, start_mono_ns, end_mono_ns)
        methods = sorted({r["energy_method"] for r in gpu if r["energy_method"]})
        out["energy_method"] = "+".join(methods) if out["energy_joules"] is not None and methods else None
        return out


def _max(rows: list[dict], column: str):
    values = [r[column] for r in rows if r[column] is not None]
    return max(values) if values else None


def _peak_memory(rows: list[dict], container: list[dict], start_mono_ns: int) -> int | None:
    peak = _max(container, "memory_bytes")
    marks_before = [r["memory_peak_bytes"] for r in rows if r["device"] == "container"
                    and r["mono_ns"] < start_mono_ns and r["memory_peak_bytes"] is not None]
    marks_inside = [r["memory_peak_bytes"] for r in container if r["memory_peak_bytes"] is not None]
    if marks_inside and (not marks_before or max(marks_inside) > max(marks_before)):
        # The high-water mark rose inside the window, so the true peak happened inside it.
        peak = max(marks_inside) if peak is None else max(peak, max(marks_inside))
    return peak


def _energy_joules(rows: list[dict], start: int, end: int) -> float | None:
    """Each delta covers (previous pass of its device, its pass]; count the part inside the window."""
    deltas: dict[str, dict[int, int | None]] = defaultdict(dict)   # device -> tick -> delta
    for r in rows:
        if r["source"] in _GPU_SOURCES:
            ticks = deltas[r["device"]]
            if ticks.get(r["mono_ns"]) is None:
                ticks[r["mono_ns"]] = r["energy_mj_delta"]
    total, measured = 0.0, False
    for ticks in deltas.values():
        interval_start = None
        for tick in sorted(ticks):
            delta = ticks[tick]
            if delta is not None and interval_start is not None:
                lo, hi = max(interval_start, start), min(tick, end)
                if hi > lo:
                    total += delta * (hi - lo) / (tick - interval_start)
                    measured = True
            if delta is not None or interval_start is None:
                interval_start = tick
    return total / 1000.0 if measured else None
