"""Container sources against real containers: runc reads its own cgroup; runsc's cgroup is the
whole gVisor sandbox and says so; Docker's stats API is the fallback and agrees with the cgroup."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sandbox.telemetry import Sidecar
from sandbox.telemetry.container import DockerStatsSource, locate_cgroup
from sandbox.telemetry.parquet_stream import ParquetStream
from sandbox.telemetry.sampler import Sampler

pytestmark = pytest.mark.docker
MiB = 1 << 20
BUSY_ONE_CORE = "while True: pass"
HOLD_500_MIB = ("import time\n"
                "b = bytearray(500 * 1024 * 1024)\n"
                "b[::4096] = b'\\x01' * len(range(0, len(b), 4096))   # touch every page\n"
                "print('held', flush=True)\n"
                "time.sleep(600)\n")
IDLE = "import time; time.sleep(600)"


def sample_for(container, tmp_path: Path, seconds: float = 5.0, client=None, during=None):
    sidecar = Sidecar.start(container.id, tmp_path / "telemetry.parquet", interval_s=0.5, docker_client=client)
    try:
        time.sleep(0.6)    # the first sample has no CPU delta yet
        start = time.monotonic_ns()
        before = during() if during else None
        time.sleep(seconds)
        after = during() if during else None
        end = time.monotonic_ns()
    finally:
        summary = sidecar.stop()
    if during:
        return summary, summary.window(start, end), (before, after, end - start)
    return summary, summary.window(start, end)


def cpu_seconds_from_proc(container) -> float:
    """CPU time of the container's processes from /proc/<pid>/stat: an account independent of the
    cgroup's cpuacct counter, to check the sidecar against on a machine other jobs also load."""
    container.reload()
    dirs = locate_cgroup(container.attrs["State"]["Pid"])
    procs = (dirs.get("cpuacct") or dirs["unified"]).joinpath("cgroup.procs").read_text().split()
    ticks = 0
    for pid in procs:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])     # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_container_burning_one_core_reads_100_percent(run_container, docker_client, tmp_path, runtime):
    container = run_container(BUSY_ONE_CORE, runtime=runtime)
    time.sleep(1)   # let the interpreter (and gVisor) finish starting
    summary, window, (before, after, window_ns) = sample_for(
        container, tmp_path, client=docker_client, during=lambda: cpu_seconds_from_proc(container))

    assert not summary.crashed and summary.error is None
    assert summary.sources == ("cgroup",)
    assert window["container_source"] == "cgroup"
    # One core burnt: 100 %. On this shared 2-core host other jobs can take part of that core, so the
    # reading is held to what the kernel's per-process accounting says the loop actually got.
    got = 100 * (after - before) / (window_ns / 1e9)
    assert window["cpu_percent_mean"] == pytest.approx(got, abs=5)
    assert window["cpu_percent_mean"] <= 105


def test_a_container_holding_500_mib_reads_500_mib_under_runc(run_container, docker_client, tmp_path):
    container = run_container(HOLD_500_MIB, wait_for="held")
    summary, window = sample_for(container, tmp_path, seconds=2, client=docker_client)

    assert window["container_source"] == "cgroup"
    assert window["peak_memory_bytes"] == pytest.approx(500 * MiB, rel=0.05)


def test_under_runsc_memory_includes_the_gvisor_sandbox_and_the_summary_says_so(
        run_container, docker_client, tmp_path):
    container = run_container(HOLD_500_MIB, runtime="runsc", wait_for="held")
    summary, window = sample_for(container, tmp_path, seconds=2, client=docker_client)

    assert window["container_source"] == "cgroup"
    assert "runtime: runsc" in summary.notes
    assert any("gVisor sandbox" in note for note in summary.notes)
    # The application's 500 MiB plus the Sentry's own memory, never less than what the app holds.
    assert 500 * MiB <= window["peak_memory_bytes"] <= 600 * MiB
    # pids counts Sentry threads, not the one application process.
    assert pq.read_table(summary.path)["pids"].to_pylist()[-1] > 1


def test_runsc_container_cgroup_holds_the_sandbox_processes(run_container):
    container = run_container(IDLE, runtime="runsc")
    container.reload()
    dirs = locate_cgroup(container.attrs["State"]["Pid"])

    assert dirs is not None
    procs = (dirs.get("cpuacct") or dirs["unified"]).joinpath("cgroup.procs").read_text().split()
    assert len(procs) > 1   # gofer, Sentry and stubs: the whole sandbox, not one app process


def test_docker_stats_fallback_labels_its_rows_docker_and_agrees_with_the_cgroup(
        run_container, docker_client, tmp_path):
    container = run_container(HOLD_500_MIB, wait_for="held")
    stream = ParquetStream(tmp_path / "docker.parquet")
    sampler = Sampler([DockerStatsSource(container)], stream, interval_s=0.5)
    sampler.start()
    time.sleep(2)
    assert sampler.stop(30)

    rows = pq.read_table(tmp_path / "docker.parquet").to_pylist()
    assert rows and {r["source"] for r in rows} == {"docker"}
    assert not sampler.crashed
    assert rows[-1]["memory_bytes"] == pytest.approx(500 * MiB, rel=0.05)
    assert rows[-1]["pids"] == 1


def test_the_sampler_stops_by_itself_when_the_container_goes_away(run_container, docker_client, tmp_path):
    container = run_container(IDLE)
    sidecar = Sidecar.start(container.id, tmp_path / "t.parquet", interval_s=0.2, docker_client=docker_client)
    time.sleep(0.6)
    container.remove(force=True)
    deadline = time.monotonic() + 30
    while sidecar.running and time.monotonic() < deadline:
        time.sleep(0.1)

    assert not sidecar.running
    summary = sidecar.stop()
    assert summary.ended_because.startswith("container gone")
    assert not summary.crashed
    assert pq.read_table(summary.path).num_rows >= 1


def test_a_missing_container_gives_a_crashed_summary_not_an_exception(docker_client, tmp_path):
    sidecar = Sidecar.start("no-such-container-arena", tmp_path / "t.parquet", docker_client=docker_client)
    summary = sidecar.stop()

    assert summary.crashed and "NotFound" in summary.error
    assert summary.path is None
    assert summary.window(0, 2**62)["telemetry_missing"] is True
