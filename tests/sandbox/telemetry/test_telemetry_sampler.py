"""The sampling loop: skips ticks after an overrun, survives a crash with its rows, stops cleanly."""
from __future__ import annotations

import threading
import time

import pyarrow.parquet as pq
import pytest

from sandbox.telemetry import Sidecar
from sandbox.telemetry.replay import ReplayNvml

pytestmark = pytest.mark.docker
INTERVAL_S = 0.1


class SlowTemperature(ReplayNvml):
    """A GPU whose temperature read takes 2.5 intervals on calls 2 and 5."""

    def nvmlDeviceGetTemperature(self, handle, sensor):
        if self._calls[("nvmlDeviceGetTemperature", handle.index)] in (2, 5):
            time.sleep(2.5 * INTERVAL_S)
        return super().nvmlDeviceGetTemperature(handle, sensor)


class BrokenPower(ReplayNvml):
    """A source with a bug: the fourth power reading raises something no source expects."""

    def nvmlDeviceGetPowerUsage(self, handle):
        if self._calls[("nvmlDeviceGetPowerUsage", handle.index)] == 3:
            raise RuntimeError("bug in a source")
        return super().nvmlDeviceGetPowerUsage(handle)


def wait_for_samples(sidecar: Sidecar, n: int) -> None:
    deadline = time.monotonic() + 30
    while sidecar.running and sidecar.samples < n and time.monotonic() < deadline:
        time.sleep(INTERVAL_S / 2)


def test_an_overrun_skips_ticks_instead_of_catching_up(idle_container, docker_client, tmp_path, trace):
    sidecar = Sidecar.start(idle_container.id, tmp_path / "t.parquet", interval_s=INTERVAL_S,
                            gpu_indices=(0,), nvml=SlowTemperature(trace), docker_client=docker_client)
    try:
        wait_for_samples(sidecar, 9)
    finally:
        summary = sidecar.stop()

    ticks = sorted(set(pq.read_table(summary.path)["mono_ns"].to_pylist()))
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    interval_ns = round(INTERVAL_S * 1e9)
    assert all(gap % interval_ns == 0 for gap in gaps)        # always on the absolute schedule
    assert all(gap >= interval_ns for gap in gaps)            # never two passes for one tick
    assert sum(gap >= 3 * interval_ns for gap in gaps) >= 2   # each 2.5-interval stall skipped ticks
    assert summary.ticks_skipped >= 4


def test_a_crashing_source_leaves_a_readable_file_and_says_so(idle_container, docker_client, tmp_path, trace):
    sidecar = Sidecar.start(idle_container.id, tmp_path / "t.parquet", interval_s=INTERVAL_S,
                            gpu_indices=(0,), nvml=BrokenPower(trace), docker_client=docker_client)
    deadline = time.monotonic() + 30
    while sidecar.running and time.monotonic() < deadline:
        time.sleep(INTERVAL_S)
    summary = sidecar.stop()

    assert summary.crashed
    assert summary.error == "RuntimeError: bug in a source"
    assert summary.samples == 3
    table = pq.read_table(summary.path)
    assert len(set(table["mono_ns"].to_pylist())) == 3
    assert summary.window(0, 2**62)["telemetry_missing"] is True


def test_stop_is_idempotent_and_no_sampler_thread_remains(idle_container, docker_client, tmp_path):
    path = tmp_path / "t.parquet"
    sidecar = Sidecar.start(idle_container.id, path, interval_s=INTERVAL_S, docker_client=docker_client)
    wait_for_samples(sidecar, 2)
    assert not path.exists()                    # only the hidden temporary file while sampling

    first, second = sidecar.stop(), sidecar.stop()

    assert first is second
    assert first.path == path and path.exists()
    assert not [t for t in threading.enumerate() if t.name == "arena-telemetry"]
    assert not list(tmp_path.glob(".*partial"))


def test_intervals_faster_than_10_hz_are_refused(idle_container, tmp_path):
    with pytest.raises(ValueError, match="10 Hz"):
        Sidecar.start(idle_container.id, tmp_path / "t.parquet", interval_s=0.05)
