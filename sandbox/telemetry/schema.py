"""The telemetry row: one wide Parquet row per source, device and sampling pass.

This module is the one place the column list lives; the sampler, the writer, the summary and the lake
all read it from here.

Counters (``io_*_bytes``, ``pcie_*_bytes``) are the raw cumulative values the source reports;
``energy_mj_delta`` is the one delta: energy used since the previous successful reading of the same
device, from the GPU's energy counter, or where it has none, power x time (``energy_method`` says
which). A metric that could not be read is null, never invented.
"""
from __future__ import annotations

import pyarrow as pa

#: Every value ``source`` may take. Rows from ``replay`` come from a recorded (or synthetic) trace and
#: never reach a leaderboard.
SOURCES = ("cgroup", "docker", "nvml", "nvml-gpm", "dcgm", "replay")

#: Columns that say where and when a row was taken.
KEY_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("ts", pa.timestamp("ns", tz="UTC")),   # UTC time of the scheduled tick
    ("mono_ns", pa.int64()),                # time.monotonic_ns() of the scheduled tick (the harness's clock)
    ("source", pa.string()),
    ("device", pa.string()),                # 'container' or 'gpu0', 'gpu1', ...
)

#: Metric columns, all nullable.
METRIC_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("cpu_percent", pa.float64()),          # percent of one core since the previous sample
    ("memory_bytes", pa.int64()),           # working set: usage minus inactive file cache
    ("memory_peak_bytes", pa.int64()),      # the kernel's high-water mark since the container started
    ("pids", pa.int64()),
    ("io_read_bytes", pa.int64()),
    ("io_write_bytes", pa.int64()),
    ("gpu_util_percent", pa.float64()),
    ("gpu_mem_util_percent", pa.float64()),
    ("gpu_memory_used_bytes", pa.int64()),
    ("power_w", pa.float64()),
    ("energy_mj_delta", pa.int64()),
    ("energy_method", pa.string()),         # 'counter' (the GPU's energy counter) or 'power-x-time'
                                            # (no counter: mean of two power readings x their interval)
    ("sm_clock_mhz", pa.int64()),
    ("mem_clock_mhz", pa.int64()),
    ("temperature_c", pa.int64()),
    ("throttle_reasons", pa.int64()),       # NVML clock event reason bitmask
    ("pcie_tx_bytes", pa.int64()),
    ("pcie_rx_bytes", pa.int64()),
    ("process_gpu_memory_bytes", pa.int64()),  # summed over the GPU processes in the container's cgroup
    ("dram_bw_util_percent", pa.float64()),
    ("dram_bw_GBs", pa.float64()),          # dram_bw_util_percent / 100 * dram_bw_peak_GBs
    ("dram_bw_peak_GBs", pa.float64()),     # the peak used for that conversion
    ("sm_util_percent", pa.float64()),
    ("sm_occupancy_percent", pa.float64()),
    ("tensor_util_percent", pa.float64()),
    ("pcie_tx_Bps", pa.float64()),          # DCGM profiling rates, bytes per second over the last interval
    ("pcie_rx_Bps", pa.float64()),
    ("nvlink_tx_Bps", pa.float64()),
    ("nvlink_rx_Bps", pa.float64()),
)

COLUMNS: tuple[str, ...] = tuple(name for name, _ in KEY_COLUMNS + METRIC_COLUMNS)
METRICS: tuple[str, ...] = tuple(name for name, _ in METRIC_COLUMNS)
SCHEMA = pa.schema([pa.field(name, typ, nullable=name not in ("ts", "mono_ns", "source", "device"))
                    for name, typ in KEY_COLUMNS + METRIC_COLUMNS])
