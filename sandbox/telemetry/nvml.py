"""GPU sources over NVML, and GPM (Hopper and later) for DRAM bandwidth, SM and tensor activity.

The ``nvml`` object is injected: the real ``pynvml`` module, or anything with the same function
names returning the same structures (``sandbox.telemetry.replay.ReplayNvml``). Only the real module
yields rows labelled ``nvml`` / ``nvml-gpm``; any other object yields ``replay``, so nothing that was
not measured on hardware can reach a leaderboard.

Never called: ``nvmlDeviceGetPcieThroughput`` (it blocks ~20 ms per call); PCIe traffic comes from
the cumulative byte counters in ``nvmlDeviceGetFieldValues``.

DRAM bandwidth: GPM's DRAM_BW_UTIL (percent of the theoretical peak) times that peak, computed from
the maximum memory clock and the bus width: ``2 (double data rate) * clock * bus_bytes``. That
matches the datasheets (H100 SXM: 2619 MHz, 5120 bit -> 3352 GB/s). The peak used is in every GPM row.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from sandbox.telemetry.sampler import FieldReader

GPM_COLUMNS = (  # (column, pynvml metric constant)
    ("dram_bw_util_percent", "NVML_GPM_METRIC_DRAM_BW_UTIL"),
    ("sm_util_percent", "NVML_GPM_METRIC_SM_UTIL"),
    ("sm_occupancy_percent", "NVML_GPM_METRIC_SM_OCCUPANCY"),
    ("tensor_util_percent", "NVML_GPM_METRIC_ANY_TENSOR_UTIL"),
)


def peak_dram_GBs(max_mem_clock_mhz: int, bus_width_bits: int) -> float:
    return 2 * max_mem_clock_mhz * 1e6 * (bus_width_bits / 8) / 1e9


def is_real_pynvml(nvml: object) -> bool:
    try:
        import pynvml
    except ImportError:
        return False
    return nvml is pynvml


def open_real_nvml() -> tuple[object | None, str]:
    """The real pynvml module, initialised, or None and why not."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - any failure here just means: no GPU source
        return None, f"nvml: unavailable ({type(exc).__name__}: {exc})"
    return pynvml, "nvml: initialised"


def energy_from_power(gpu, row: dict, now_ns: int) -> None:
    """Without an energy counter: the energy since the previous power reading is the mean of the two
    readings times the time between them (trapezoid), labelled ``power-x-time``. A gap in the power
    readings leaves that interval's energy null rather than bridging it."""
    power = row.get("power_w")
    if power is None:
        gpu.last_power = None
        return
    if gpu.last_power is not None:
        then, before = gpu.last_power
        row["energy_mj_delta"] = round((before + power) / 2 * (now_ns - then) / 1e6)
        row["energy_method"] = "power-x-time"
    gpu.last_power = (now_ns, power)


class _Gpu:
    def __init__(self, nvml, index: int):
        self.index = index
        self.device = f"gpu{index}"
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.last_energy_mj: int | None = None
        self.energy_counter = True              # False: the GPU has none, energy is power x time
        self.last_power: tuple[int, float] | None = None   # (monotonic ns, watts) of the last reading
        self.peak_GBs: float | None = None
        self.gpm_samples: list | None = None   # [previous, current]
        self.gpm_have_previous = False


class NvmlSource:
    def __init__(self, nvml, indices: Sequence[int], *, container_pids: Callable[[], set[int]] | None = None,
                 gpm: bool = True):
        self.nvml = nvml
        self.name = "nvml" if is_real_pynvml(nvml) else "replay"
        self.gpm_name = "nvml-gpm" if self.name == "nvml" else "replay"
        self.expected_errors = (nvml.NVMLError,)
        self.container_pids = container_pids
        self.notes: list[str] = []
        self.gpus = [_Gpu(nvml, i) for i in indices]
        for gpu in self.gpus:
            if gpm:     # off when DCGM's profiling module owns the counters (sandbox/telemetry/dcgm.py)
                self._setup_gpm(gpu)
            else:
                self._setup_peak(gpu)

    def labels(self) -> tuple[str, ...]:
        """The ``source`` values this source writes."""
        gpm = any(g.gpm_samples is not None for g in self.gpus)
        return (self.name, self.gpm_name) if gpm else (self.name,)

    def _setup_peak(self, gpu: _Gpu) -> None:
        nvml = self.nvml
        try:
            clock = nvml.nvmlDeviceGetMaxClockInfo(gpu.handle, nvml.NVML_CLOCK_MEM)
            width = nvml.nvmlDeviceGetMemoryBusWidth(gpu.handle)
            gpu.peak_GBs = peak_dram_GBs(clock, width)
            self.notes.append(f"{gpu.device}: DRAM peak {gpu.peak_GBs:.1f} GB/s from {clock} MHz x {width} bit")
        except nvml.NVMLError as exc:
            self.notes.append(f"{gpu.device}: no DRAM peak ({exc}); dram_bw_GBs stays null")

    def peaks(self) -> dict[int, float | None]:
        """GPU index -> the DRAM peak (GB/s) that turns a utilisation into a bandwidth."""
        return {gpu.index: gpu.peak_GBs for gpu in self.gpus}

    def _setup_gpm(self, gpu: _Gpu) -> None:
        nvml = self.nvml
        self._setup_peak(gpu)
        try:
            supported = nvml.nvmlGpmQueryDeviceSupport(gpu.handle).isSupportedDevice
        except (nvml.NVMLError, AttributeError) as exc:
            self.notes.append(f"{gpu.device}: GPM unavailable ({exc})")
            return
        if not supported:
            self.notes.append(f"{gpu.device}: GPM not supported (needs Hopper or later)")
            return
        gpu.gpm_samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
        self.notes.append(f"{gpu.device}: GPM enabled")

    def sample(self, read: FieldReader) -> list[dict]:
        rows = []
        pids = None
        if self.container_pids is not None:
            try:
                pids = self.container_pids()
            except Exception:  # noqa: BLE001 - the container source reports its own failures
                read.failed("process_gpu_memory_bytes")
        for gpu in self.gpus:
            rows.append(self._nvml_row(gpu, read, pids))
            if gpu.gpm_samples is not None:
                rows.append(self._gpm_row(gpu, read))
        return rows

    def _nvml_row(self, gpu: _Gpu, read: FieldReader, pids: set[int] | None) -> dict:
        nvml, h = self.nvml, gpu.handle
        row = {"source": self.name, "device": gpu.device}
        util = read("gpu_util_percent", lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        row["gpu_util_percent"] = None if util is None else float(util.gpu)
        row["gpu_mem_util_percent"] = None if util is None else float(util.memory)
        row["gpu_memory_used_bytes"] = read("gpu_memory_used_bytes", lambda: nvml.nvmlDeviceGetMemoryInfo(h).used)
        power_mw = read("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        row["power_w"] = None if power_mw is None else power_mw / 1000.0
        energy = None
        if gpu.energy_counter:
            try:
                energy = nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            except nvml.NVMLError_NotSupported:   # no counter on this GPU: power x time from now on
                gpu.energy_counter = False
            except nvml.NVMLError:
                read.failed("energy_mj_delta")
        if gpu.energy_counter:
            if energy is not None:
                if gpu.last_energy_mj is not None:
                    row["energy_mj_delta"], row["energy_method"] = energy - gpu.last_energy_mj, "counter"
                gpu.last_energy_mj = energy
        else:
            energy_from_power(gpu, row, time.monotonic_ns())
        row["sm_clock_mhz"] = read("sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
        row["mem_clock_mhz"] = read("mem_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))
        row["temperature_c"] = read("temperature_c",
                                    lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        row["throttle_reasons"] = read("throttle_reasons", lambda: reasons(h))
        self._pcie(row, read, h)
        if pids is not None:
            procs = read("process_gpu_memory_bytes", lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h))
            if procs is not None:
                row["process_gpu_memory_bytes"] = sum(p.usedGpuMemory or 0 for p in procs if p.pid in pids)
        return row

    def _pcie(self, row: dict, read: FieldReader, h) -> None:
        nvml = self.nvml
        fields = (("pcie_tx_bytes", nvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES),
                  ("pcie_rx_bytes", nvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES))
        values = read("pcie_tx_bytes", lambda: nvml.nvmlDeviceGetFieldValues(h, [f for _, f in fields]))
        if values is None:
            read.failed("pcie_rx_bytes")
            return
        for (column, _), value in zip(fields, values):
            if value.nvmlReturn == nvml.NVML_SUCCESS:
                row[column] = int(value.value.ullVal)
            else:
                read.failed(column)

    def _gpm_row(self, gpu: _Gpu, read: FieldReader) -> dict:
        nvml = self.nvml
        row = {"source": self.gpm_name, "device": gpu.device, "dram_bw_peak_GBs": gpu.peak_GBs}
        previous, current = gpu.gpm_samples
        try:
            nvml.nvmlGpmSampleGet(gpu.handle, current)
        except nvml.NVMLError:
            for column, _ in GPM_COLUMNS:
                read.failed(column)
            gpu.gpm_have_previous = False
            return row
        if gpu.gpm_have_previous:
            request = nvml.c_nvmlGpmMetricsGet_t()
            request.version = nvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(GPM_COLUMNS)
            request.sample1, request.sample2 = previous, current
            for i, (_, metric) in enumerate(GPM_COLUMNS):
                request.metrics[i].metricId = getattr(nvml, metric)
            try:
                result = nvml.nvmlGpmMetricsGet(request)
            except nvml.NVMLError:
                result = None
            for i, (column, _) in enumerate(GPM_COLUMNS):
                if result is not None and result.metrics[i].nvmlReturn == nvml.NVML_SUCCESS:
                    row[column] = float(result.metrics[i].value)
                else:
                    read.failed(column)
        util = row.get("dram_bw_util_percent")
        if util is not None and gpu.peak_GBs is not None:
            row["dram_bw_GBs"] = util / 100.0 * gpu.peak_GBs
        gpu.gpm_samples = [current, previous]
        gpu.gpm_have_previous = True
        return row

    def close(self) -> None:
        for gpu in self.gpus:
            for s in gpu.gpm_samples or ():
                try:
                    self.nvml.nvmlGpmSampleFree(s)
                except self.nvml.NVMLError:
                    pass
            gpu.gpm_samples = None
        try:
            self.nvml.nvmlShutdown()   # NVML counts nvmlInit calls; this pairs the one the sidecar made
        except self.nvml.NVMLError:
            pass
