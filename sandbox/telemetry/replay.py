"""Replays a GPU trace through the same interface as ``pynvml``, so the real NVML source code runs
on machines without a GPU.

``ReplayNvml`` has pynvml's function names and returns pynvml's own ctypes structures
(``c_nvmlUtilization_t``, ``c_nvmlMemory_t``, ``c_nvmlFieldValue_t``, ``c_nvmlGpmMetricsGet_t``, ...);
errors are pynvml's ``NVMLError`` subclasses. Constants and structure classes are pynvml's.

Playback: each function plays the trace one row per call, per device, looping at the end (the
energy counter keeps counting up across loops). A sampling pass calls each function once, so pass k
sees row k whatever the sampling interval. A GPM sample captures the row of its call; metrics between
two GPM samples are the second sample's row (a trace row's GPM values cover the interval ending at it).

Trace format (JSON, ``"format": "arena-gpu-trace/1"``): top-level ``provenance``, ``interval_s``,
``workload``; ``devices``: [{``index``, ``name``, ``max_mem_clock_mhz``, ``memory_bus_width_bits``,
``memory_total_bytes``, ``gpm_supported``, ``samples``: [{``t_s``, ``utilization``: {gpu, memory},
``memory_used_bytes``, ``power_mw``, ``energy_mj`` (cumulative), ``sm_clock_mhz``, ``mem_clock_mhz``,
``temperature_c``, ``throttle_reasons``, ``pcie_tx_bytes``, ``pcie_rx_bytes``, ``processes``:
[{pid, used_gpu_memory_bytes}], ``gpm``: {dram_bw_util, sm_util, sm_occupancy, any_tensor_util}}]}].
Any value may instead be ``{"nvml_error": code}``: that call returned that NVML error when recorded.
"""
from __future__ import annotations

import ctypes
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import pynvml

TRACE_FORMAT = "arena-gpu-trace/1"
_FORWARDED_PREFIXES = ("NVML_", "c_nvml", "struct_c_nvml", "NVMLError")
_GPM_KEYS = {  # GPM metric id -> trace key
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: "dram_bw_util",
    pynvml.NVML_GPM_METRIC_SM_UTIL: "sm_util",
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: "sm_occupancy",
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: "any_tensor_util",
}


def load_trace(path: Path) -> dict:
    trace = json.loads(Path(path).read_text())
    if trace.get("format") != TRACE_FORMAT:
        raise ValueError(f"{path}: format must be {TRACE_FORMAT!r}, got {trace.get('format')!r}")
    for device in trace["devices"]:
        if not device["samples"]:
            raise ValueError(f"{path}: device {device['index']} has no samples")
    return trace


class _Handle:
    def __init__(self, index: int):
        self.index = index

    def __repr__(self):
        return f"<replay GPU {self.index}>"


class ReplayNvml:
    """A pynvml-like object playing ``trace``; ``faults`` maps a function name to the call numbers
    (0-based, per device) at which it raises ``NVMLError(NVML_ERROR_UNKNOWN)``."""

    arena_replay = True

    def __init__(self, trace: dict, *, faults: Mapping[str, Iterable[int]] | None = None):
        self.trace = trace
        self.devices = {d["index"]: d for d in trace["devices"]}
        self.faults = {name: set(calls) for name, calls in (faults or {}).items()}
        self._calls: dict[tuple[str, int], int] = defaultdict(int)
        self._energy: dict[int, int] = {}
        self._gpm_rows: dict[int, dict] = {}     # address of a GPM sample -> captured row
        self._gpm_keep: dict[int, object] = {}
        self._initialised = 0

    @classmethod
    def from_file(cls, path: Path, **kwargs) -> "ReplayNvml":
        return cls(load_trace(path), **kwargs)

    def __getattr__(self, name: str):
        if name.startswith(_FORWARDED_PREFIXES):
            return getattr(pynvml, name)
        raise AttributeError(f"ReplayNvml does not implement {name}")

    # -- plumbing -------------------------------------------------------------------------------
    def _check_init(self) -> None:
        if not self._initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _row(self, fn: str, handle: _Handle) -> tuple[int, dict]:
        self._check_init()
        k = self._calls[(fn, handle.index)]
        self._calls[(fn, handle.index)] = k + 1
        if k in self.faults.get(fn.split(":")[0], ()):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        samples = self.devices[handle.index]["samples"]
        return k, samples[k % len(samples)]

    @staticmethod
    def _value(value):
        if isinstance(value, dict) and "nvml_error" in value:
            raise pynvml.NVMLError(value["nvml_error"])
        return value

    def _field(self, fn: str, handle: _Handle, key: str):
        return self._value(self._row(fn, handle)[1][key])

    # -- init and devices -----------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._initialised += 1

    def nvmlShutdown(self) -> None:
        self._check_init()
        self._initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check_init()
        if index not in self.devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self.devices[handle.index]["name"]

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, clock_type: int) -> int:
        self._check_init()
        if clock_type != pynvml.NVML_CLOCK_MEM:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self._value(self.devices[handle.index]["max_mem_clock_mhz"])

    def nvmlDeviceGetMemoryBusWidth(self, handle: _Handle) -> int:
        self._check_init()
        return self._value(self.devices[handle.index]["memory_bus_width_bits"])

    # -- per-sample readings --------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle):
        u = self._field("nvmlDeviceGetUtilizationRates", handle, "utilization")
        return pynvml.c_nvmlUtilization_t(gpu=u["gpu"], memory=u["memory"])

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle):
        used = self._field("nvmlDeviceGetMemoryInfo", handle, "memory_used_bytes")
        total = self.devices[handle.index]["memory_total_bytes"]
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._field("nvmlDeviceGetPowerUsage", handle, "power_mw")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        k, row = self._row("nvmlDeviceGetTotalEnergyConsumption", handle)
        samples = self.devices[handle.index]["samples"]
        energy = self._value(row["energy_mj"])
        if k < len(samples):
            self._energy[handle.index] = energy
            return energy
        # Past the end of the trace: keep the counter monotonic by adding this row's recorded step.
        i = k % len(samples)
        previous = samples[i - 1]["energy_mj"] if i else samples[0]["energy_mj"]
        step = energy - previous if i else samples[1]["energy_mj"] - samples[0]["energy_mj"]
        self._energy[handle.index] += step
        return self._energy[handle.index]

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        if clock_type == pynvml.NVML_CLOCK_SM:
            return self._field("nvmlDeviceGetClockInfo:sm", handle, "sm_clock_mhz")
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return self._field("nvmlDeviceGetClockInfo:mem", handle, "mem_clock_mhz")
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self._field("nvmlDeviceGetTemperature", handle, "temperature_c")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        return self._field("nvmlDeviceGetCurrentClocksEventReasons", handle, "throttle_reasons")

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: list[int]):
        _, row = self._row("nvmlDeviceGetFieldValues", handle)
        keys = {pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: "pcie_tx_bytes",
                pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: "pcie_rx_bytes"}
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for value, field_id in zip(values, field_ids):
            value.fieldId = field_id
            recorded = row.get(keys.get(field_id, ""), {"nvml_error": pynvml.NVML_ERROR_NOT_SUPPORTED})
            if isinstance(recorded, dict):
                value.nvmlReturn = recorded["nvml_error"]
            else:
                value.nvmlReturn = pynvml.NVML_SUCCESS
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                value.value.ullVal = recorded
        return values

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle):
        procs = self._field("nvmlDeviceGetComputeRunningProcesses", handle, "processes")
        return [pynvml.c_nvmlProcessInfo_t(pid=p["pid"], usedGpuMemory=p["used_gpu_memory_bytes"])
                for p in procs]

    # -- GPM ------------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, handle: _Handle):
        self._check_init()
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = pynvml.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = int(bool(self.devices[handle.index].get("gpm_supported")))
        return support

    def nvmlGpmSampleAlloc(self):
        self._check_init()
        target = pynvml.struct_c_nvmlGpmSample_t()
        sample = ctypes.pointer(target)
        self._gpm_keep[ctypes.addressof(target)] = target
        return sample

    def nvmlGpmSampleFree(self, sample) -> None:
        address = ctypes.addressof(sample.contents)
        self._gpm_keep.pop(address, None)
        self._gpm_rows.pop(address, None)

    def nvmlGpmSampleGet(self, handle: _Handle, sample):
        if not self.devices[handle.index].get("gpm_supported"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        _, row = self._row("nvmlGpmSampleGet", handle)
        self._gpm_rows[ctypes.addressof(sample.contents)] = row
        return sample

    def nvmlGpmMetricsGet(self, request):
        self._check_init()
        if request.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        first = self._gpm_rows.get(ctypes.addressof(request.sample1.contents))
        second = self._gpm_rows.get(ctypes.addressof(request.sample2.contents))
        if first is None or second is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpm = second.get("gpm") or {}
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            value = gpm.get(_GPM_KEYS.get(metric.metricId, ""))
            if value is None or isinstance(value, dict):
                metric.nvmlReturn = value["nvml_error"] if isinstance(value, dict) else pynvml.NVML_ERROR_NOT_SUPPORTED
            else:
                metric.nvmlReturn = pynvml.NVML_SUCCESS
                metric.value = float(value)
        return request
