"""The DCGM profiling source and the power x time energy fallback, run through the real sidecar over
replays (rows say 'replay'; no GPU here). The DCGM trace is synthetic: invented values, named so."""
from __future__ import annotations

import copy
import time

import pyarrow.parquet as pq
import pynvml
import pytest

from sandbox.telemetry import Sidecar
from sandbox.telemetry.dcgm import FIELDS, DcgmError, DcgmSource, ReplayDcgm, open_real_dcgm
from sandbox.telemetry.nvml import peak_dram_GBs
from sandbox.telemetry.replay import ReplayNvml
from sandbox.telemetry.sampler import FieldReader

pytestmark = pytest.mark.docker


def synthetic_dcgm_trace(samples: int = 20) -> dict:
    rows = [{"DCGM_FI_PROF_DRAM_ACTIVE": 0.05 * (k % 10), "DCGM_FI_PROF_SM_ACTIVE": 0.5,
             "DCGM_FI_PROF_SM_OCCUPANCY": 0.25, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": 0.125,
             "DCGM_FI_PROF_PCIE_TX_BYTES": 1e6 * k, "DCGM_FI_PROF_PCIE_RX_BYTES": 2e6,
             "DCGM_FI_PROF_NVLINK_TX_BYTES": None, "DCGM_FI_PROF_NVLINK_RX_BYTES": 3e9} for k in range(samples)]
    return {"format": "arena-dcgm-trace/1", "provenance": "synthetic: invented values for tests",
            "devices": [{"index": 0, "samples": rows}]}


def sample(idle_container, docker_client, tmp_path, passes=8, interval_s=0.1, **sources):
    sidecar = Sidecar.start(idle_container.id, tmp_path / "gpu.parquet", interval_s=interval_s,
                            gpu_indices=(0,), docker_client=docker_client, **sources)
    try:
        while sidecar.running and sidecar.samples < passes:
            time.sleep(interval_s / 2)
    finally:
        summary = sidecar.stop()
    return summary, [r for r in pq.read_table(summary.path).to_pylist() if r["device"] == "gpu0"]


def test_dcgm_rows_carry_dram_sm_tensor_and_link_rates(idle_container, docker_client, tmp_path, trace):
    dcgm = ReplayDcgm(synthetic_dcgm_trace())
    summary, rows = sample(idle_container, docker_client, tmp_path, nvml=ReplayNvml(trace), dcgm=dcgm)
    device = trace["devices"][0]
    peak = peak_dram_GBs(device["max_mem_clock_mhz"], device["memory_bus_width_bits"])
    profiling = [r for r in rows if r["sm_util_percent"] is not None]
    assert profiling and {r["source"] for r in rows} == {"replay"}
    assert all(r["dram_bw_util_percent"] is None for r in rows if r["power_w"] is not None)  # GPM is off
    for k, r in enumerate(profiling):
        assert r["dram_bw_util_percent"] == pytest.approx(5.0 * (k % 10))
        assert r["dram_bw_GBs"] == pytest.approx(r["dram_bw_util_percent"] / 100 * peak)
        assert (r["sm_util_percent"], r["sm_occupancy_percent"], r["tensor_util_percent"]) == (50.0, 25.0, 12.5)
        assert r["nvlink_rx_Bps"] == 3e9 and r["nvlink_tx_Bps"] is None and r["pcie_rx_Bps"] == 2e6
    assert summary.field_errors["replay.nvlink_tx_Bps"] == len(profiling)   # a null value is counted
    assert any("DCGM rows come from a trace" in n for n in summary.notes)
    ticks = sorted({r["mono_ns"] for r in rows})
    window = summary.window(ticks[0], ticks[-1])
    assert window["peak_memory_bw_GBs"] == pytest.approx(max(r["dram_bw_GBs"] for r in profiling))
    assert dcgm.closed


def test_a_failing_dcgm_read_nulls_that_sample_and_is_counted():
    class Broken:
        def latest(self):
            raise DcgmError("DCGM_ST_CONNECTION_NOT_VALID")
    errors = __import__("collections").Counter()
    rows = DcgmSource(Broken(), (0,), {0: 100.0}).sample(FieldReader("dcgm", (DcgmError,), errors))
    assert rows[0]["device"] == "gpu0" and "dram_bw_GBs" not in rows[0]
    assert errors["dcgm.dcgm"] == 1 and errors["dcgm.sm_util_percent"] == 1
    assert len(FIELDS) == 8


def test_without_an_energy_counter_energy_is_power_times_time(idle_container, docker_client, tmp_path, trace):
    no_counter = copy.deepcopy(trace)
    for s in no_counter["devices"][0]["samples"]:
        s["energy_mj"] = {"nvml_error": pynvml.NVML_ERROR_NOT_SUPPORTED}
    summary, rows = sample(idle_container, docker_client, tmp_path, passes=10, nvml=ReplayNvml(no_counter))
    measured = [r for r in rows if r["energy_mj_delta"] is not None]
    assert measured and {r["energy_method"] for r in measured} == {"power-x-time"}
    powers = [r["power_w"] for r in rows if r["power_w"] is not None]
    for r in measured:     # a delta is (mean power) x (interval): between the extremes of the trace
        assert min(powers) * 0.05 * 1000 <= r["energy_mj_delta"] <= max(powers) * 1.0 * 1000
    assert "replay.energy_mj_delta" not in summary.field_errors     # no counter is no error
    ticks = sorted({r["mono_ns"] for r in rows})
    window = summary.window(ticks[0], ticks[-1])
    assert window["energy_method"] == "power-x-time" and window["energy_joules"] > 0


def test_with_a_counter_energy_says_counter(idle_container, docker_client, tmp_path, trace):
    summary, rows = sample(idle_container, docker_client, tmp_path, nvml=ReplayNvml(trace))
    assert {r["energy_method"] for r in rows if r["energy_mj_delta"] is not None} == {"counter"}
    ticks = sorted({r["mono_ns"] for r in rows})
    assert summary.window(ticks[0], ticks[-1])["energy_method"] == "counter"


def test_this_host_has_no_dcgm_and_says_why():
    reader, note = open_real_dcgm((0,), 1.0)
    assert reader is None and note.startswith("dcgm: ") and "NVML/GPM used" in note
