"""The NVML source, run over a replayed trace through the sidecar: the real sampling code, no GPU."""
from __future__ import annotations

import time

import pyarrow.parquet as pq
import pynvml
import pytest

from sandbox.telemetry import Sidecar
from sandbox.telemetry.nvml import peak_dram_GBs
from sandbox.telemetry.replay import ReplayNvml

pytestmark = pytest.mark.docker


def run_replay(idle_container, docker_client, tmp_path, nvml, passes: int = 12, interval_s: float = 0.1):
    sidecar = Sidecar.start(idle_container.id, tmp_path / "gpu.parquet", interval_s=interval_s,
                            gpu_indices=(0,), nvml=nvml, docker_client=docker_client)
    try:
        while sidecar.running and sidecar.samples < passes:
            time.sleep(interval_s / 2)
    finally:
        summary = sidecar.stop()
    return summary, pq.read_table(summary.path).to_pylist()


def test_replayed_rows_say_replay_and_bandwidth_is_util_times_peak(idle_container, docker_client, tmp_path, trace):
    summary, rows = run_replay(idle_container, docker_client, tmp_path, ReplayNvml(trace))
    device = trace["devices"][0]
    peak = peak_dram_GBs(device["max_mem_clock_mhz"], device["memory_bus_width_bits"])

    gpu_rows = [r for r in rows if r["device"] == "gpu0"]
    assert gpu_rows and {r["source"] for r in gpu_rows} == {"replay"}
    assert summary.sources == ("cgroup", "replay")
    assert not summary.crashed and summary.field_errors == {}
    gpm_rows = [r for r in gpu_rows if r["dram_bw_util_percent"] is not None]
    assert gpm_rows
    for r in gpm_rows:
        assert r["dram_bw_peak_GBs"] == pytest.approx(peak)
        assert r["dram_bw_GBs"] == pytest.approx(r["dram_bw_util_percent"] / 100 * peak)


def test_window_takes_peak_bandwidth_and_energy_from_the_trace(idle_container, docker_client, tmp_path, trace):
    summary, rows = run_replay(idle_container, docker_client, tmp_path, ReplayNvml(trace))
    samples = trace["devices"][0]["samples"]
    peak = peak_dram_GBs(trace["devices"][0]["max_mem_clock_mhz"], trace["devices"][0]["memory_bus_width_bits"])
    ticks = sorted({r["mono_ns"] for r in rows if r["device"] == "gpu0"})
    passes = len(ticks)
    assert passes < len(samples)    # pass k plays trace row k

    window = summary.window(ticks[0], ticks[-1])
    assert window["gpu_source"] == "replay" and window["replay"] is True
    # Energy: the trace's cumulative counter from the first to the last pass played.
    assert window["energy_joules"] == pytest.approx(
        (samples[passes - 1]["energy_mj"] - samples[0]["energy_mj"]) / 1000)
    # Peak bandwidth: the highest GPM DRAM utilisation among the rows played (row 0 has none).
    assert window["peak_memory_bw_GBs"] == pytest.approx(
        max(s["gpm"]["dram_bw_util"] for s in samples[1:passes]) / 100 * peak)
    assert window["dram_bw_peak_GBs"] == pytest.approx(peak)


def test_a_window_outside_the_samples_measures_nothing(idle_container, docker_client, tmp_path, trace):
    summary, rows = run_replay(idle_container, docker_client, tmp_path, ReplayNvml(trace), passes=3)
    after = max(r["mono_ns"] for r in rows) + 10**9

    window = summary.window(after, after + 10**9)
    assert window["energy_joules"] is None
    assert window["peak_memory_bw_GBs"] is None
    assert window["peak_memory_bytes"] is None


def test_a_failing_nvml_call_gives_null_and_an_error_count_and_sampling_goes_on(
        idle_container, docker_client, tmp_path, trace):
    nvml = ReplayNvml(trace, faults={"nvmlDeviceGetPowerUsage": {2}})
    summary, rows = run_replay(idle_container, docker_client, tmp_path, nvml, passes=6)

    nvml_rows = [r for r in rows if r["device"] == "gpu0" and r["gpu_util_percent"] is not None]
    powers = [r["power_w"] for r in nvml_rows]
    assert powers[2] is None
    assert all(p is not None for i, p in enumerate(powers) if i != 2)
    assert len(nvml_rows) >= 6
    assert summary.field_errors == {"replay.power_w": 1}
    assert not summary.crashed


def test_the_replay_returns_pynvml_structures(trace):
    nvml = ReplayNvml(trace)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)

    assert isinstance(nvml.nvmlDeviceGetUtilizationRates(handle), pynvml.c_nvmlUtilization_t)
    assert isinstance(nvml.nvmlDeviceGetMemoryInfo(handle), pynvml.c_nvmlMemory_t)
    assert isinstance(nvml.nvmlGpmSampleAlloc(), pynvml.c_nvmlGpmSample_t)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(7)
    with pytest.raises(AttributeError, match="nvmlDeviceGetPcieThroughput"):
        nvml.nvmlDeviceGetPcieThroughput   # the blocking call is deliberately absent


def test_the_fixture_says_it_is_synthetic(trace_json):
    assert trace_json["provenance"] == "synthetic, built from documented NVML structures; not recorded on hardware"
