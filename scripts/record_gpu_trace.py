#!/usr/bin/env python3
"""Record a GPU trace for the telemetry replay: real NVML + GPM values during a memory-bound workload.

The workload is torch device-to-device copies of large buffers (idle, copy, idle). Each second (by
default) the recorder reads the same NVML calls the sidecar's NVML source makes and writes them in
the trace format ``sandbox.telemetry.replay`` plays (``arena-gpu-trace/1``). It also records the
bandwidth the copy itself achieved (bytes read + written / CUDA-event time), to compare with what GPM
reports.

    python scripts/record_gpu_trace.py --out tests/fixtures/telemetry/h200_replay_trace.json
    python scripts/record_gpu_trace.py --replay tests/fixtures/telemetry/h200_replay_trace.json --out /tmp/x.json
        (a dry run without a GPU: reads through the replay instead of NVML, no workload)

Needs nvidia-ml-py and, for the workload, torch with CUDA.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import pynvml

GPM_KEYS = (("dram_bw_util", pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL),
            ("sm_util", pynvml.NVML_GPM_METRIC_SM_UTIL),
            ("sm_occupancy", pynvml.NVML_GPM_METRIC_SM_OCCUPANCY),
            ("any_tensor_util", pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL))


def recorded(call):
    """The call's value, or {"nvml_error": code} exactly as the trace format stores a failed call."""
    try:
        return call()
    except pynvml.NVMLError as exc:
        return {"nvml_error": exc.value}


class CopyWorkload(threading.Thread):
    """Copies one large device buffer into another until stopped; keeps what the copies achieved."""

    def __init__(self, gpu: int, nbytes: int):
        super().__init__(daemon=True)
        import torch
        self.torch = torch
        self.device = torch.device(f"cuda:{gpu}")
        self.src = torch.empty(nbytes, dtype=torch.uint8, device=self.device).fill_(1)
        self.dst = torch.empty_like(self.src)
        self.go, self.halt = threading.Event(), threading.Event()
        self.bytes_moved, self.seconds = 0, 0.0

    def run(self) -> None:
        torch = self.torch
        self.go.wait()
        with torch.cuda.device(self.device):
            while not self.halt.is_set():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(10):
                    self.dst.copy_(self.src)
                end.record()
                end.synchronize()
                self.seconds += start.elapsed_time(end) / 1000
                self.bytes_moved += 10 * 2 * self.src.numel()   # each copy reads and writes the buffer

    @property
    def achieved_GBs(self) -> float | None:
        return self.bytes_moved / self.seconds / 1e9 if self.seconds else None


def static_info(nvml, handle, index: int) -> dict:
    name = recorded(lambda: nvml.nvmlDeviceGetName(handle))
    support = recorded(lambda: nvml.nvmlGpmQueryDeviceSupport(handle))
    return {"index": index, "name": name.decode() if isinstance(name, bytes) else name,
            "max_mem_clock_mhz": recorded(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            "memory_bus_width_bits": recorded(lambda: nvml.nvmlDeviceGetMemoryBusWidth(handle)),
            "memory_total_bytes": nvml.nvmlDeviceGetMemoryInfo(handle).total,
            "gpm_supported": bool(getattr(support, "isSupportedDevice", 0))}


def read_sample(nvml, handle, t_s: float, gpm: dict) -> dict:
    util = recorded(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    fields = recorded(lambda: nvml.nvmlDeviceGetFieldValues(
        handle, [nvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, nvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES]))
    pcie = [{"nvml_error": fields["nvml_error"]}] * 2 if isinstance(fields, dict) else [
        v.value.ullVal if v.nvmlReturn == nvml.NVML_SUCCESS else {"nvml_error": v.nvmlReturn} for v in fields]
    procs = recorded(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    memory = recorded(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
        or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return {
        "t_s": round(t_s, 6),
        "utilization": util if isinstance(util, dict) else {"gpu": util.gpu, "memory": util.memory},
        "memory_used_bytes": memory if isinstance(memory, dict) else memory.used,
        "power_mw": recorded(lambda: nvml.nvmlDeviceGetPowerUsage(handle)),
        "energy_mj": recorded(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
        "sm_clock_mhz": recorded(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "mem_clock_mhz": recorded(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        "temperature_c": recorded(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        "throttle_reasons": recorded(lambda: reasons(handle)),
        "pcie_tx_bytes": pcie[0], "pcie_rx_bytes": pcie[1],
        "processes": procs if isinstance(procs, dict) else [
            {"pid": p.pid, "used_gpu_memory_bytes": p.usedGpuMemory or 0} for p in procs],
        "gpm": read_gpm(nvml, handle, gpm),
    }


def read_gpm(nvml, handle, gpm: dict) -> dict | None:
    """GPM metrics over the interval since the previous call; None on the first call or without GPM."""
    if not gpm.get("samples"):
        return None
    previous, current = gpm["samples"]
    try:
        nvml.nvmlGpmSampleGet(handle, current)
    except nvml.NVMLError as exc:
        gpm["have_previous"] = False
        return {key: {"nvml_error": exc.value} for key, _ in GPM_KEYS}
    out = None
    if gpm.get("have_previous"):
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(GPM_KEYS)
        request.sample1, request.sample2 = previous, current
        for i, (_, metric) in enumerate(GPM_KEYS):
            request.metrics[i].metricId = metric
        result = recorded(lambda: nvml.nvmlGpmMetricsGet(request))
        if isinstance(result, dict):
            out = {key: result for key, _ in GPM_KEYS}
        else:
            out = {key: (result.metrics[i].value if result.metrics[i].nvmlReturn == nvml.NVML_SUCCESS
                         else {"nvml_error": result.metrics[i].nvmlReturn}) for i, (key, _) in enumerate(GPM_KEYS)}
    gpm["samples"] = [current, previous]
    gpm["have_previous"] = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--idle", type=float, default=5.0, help="idle seconds before and after the copy")
    parser.add_argument("--copy", type=float, default=20.0, help="seconds of device-to-device copying")
    parser.add_argument("--gib", type=float, default=8.0, help="size of each copy buffer, GiB")
    parser.add_argument("--replay", type=Path, help="dry run: read through this trace instead of NVML")
    args = parser.parse_args()

    if args.replay:
        from sandbox.telemetry.replay import ReplayNvml
        nvml, workload = ReplayNvml.from_file(args.replay), None
    else:
        nvml = pynvml
        workload = CopyWorkload(args.gpu, int(args.gib * (1 << 30)))
        workload.start()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(args.gpu)
    device = static_info(nvml, handle, args.gpu)
    gpm = {"samples": [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()] if device["gpm_supported"] else None}

    samples, total = [], 2 * args.idle + args.copy
    t0 = time.monotonic()
    k = 0
    while (t := time.monotonic() - t0) < total:
        if workload and args.idle <= t and not workload.go.is_set():
            workload.go.set()
        if workload and t >= args.idle + args.copy:
            workload.halt.set()
        samples.append(read_sample(nvml, handle, t, gpm))
        k = int((time.monotonic() - t0) / args.interval) + 1     # skip, never catch up
        time.sleep(max(0.0, t0 + k * args.interval - time.monotonic()))
    if workload:
        workload.halt.set()
        workload.join()
    device["samples"] = samples
    driver = recorded(lambda: nvml.nvmlSystemGetDriverVersion()) if not args.replay else None
    trace = {
        "format": "arena-gpu-trace/1",
        "provenance": ("dry run through a replayed trace; not recorded on hardware" if args.replay else
                       "recorded on hardware with scripts/record_gpu_trace.py"),
        "recorded_with": f"scripts/record_gpu_trace.py, nvidia-ml-py, driver {driver}",
        "interval_s": args.interval,
        "workload": {"kind": f"device-to-device copy (torch), 2 x {args.gib:g} GiB buffers",
                     "seconds": [args.idle, args.idle + args.copy],
                     "achieved_copy_GBs": workload.achieved_GBs if workload else None},
        "devices": [device],
    }
    nvml.nvmlShutdown()
    args.out.write_text(json.dumps(trace, indent=1) + "\n")
    achieved = trace["workload"]["achieved_copy_GBs"]
    print(f"wrote {len(samples)} samples to {args.out}; copy achieved "
          + (f"{achieved:.1f} GB/s" if achieved else "n/a (no workload)"))


if __name__ == "__main__":
    main()
