"""Exclusive evaluation CPUs (sandbox/cpus.py) and the interference monitor (sandbox/interference.py),
against real processes pinned to the evaluation CPU."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cpu_hogs import eval_cpu, hog, isolation_available
from sandbox import cpus
from sandbox.interference import InterferenceMonitor, TimedRunGuard, InterferencePolicy

needs_two_cpus = pytest.mark.skipif(len(cpus.host_cpus()) < 2, reason="a one-CPU host has nothing to split")


def test_cpuset_syntax_round_trips():
    assert cpus.parse_cpuset("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert cpus.format_cpuset({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    split = cpus.CpuSplit.of(str(max(cpus.host_cpus())))
    assert split.evaluation | split.platform == cpus.host_cpus()
    if len(cpus.host_cpus()) > 1:
        assert not split.evaluation & split.platform


def window(monitor: InterferenceMonitor, seconds: float) -> dict:
    a = monitor.snapshot()
    time.sleep(seconds)
    return monitor.figures(a, monitor.snapshot())


@needs_two_cpus
def test_the_monitor_sees_a_hog_pinned_to_the_evaluation_cpu():
    monitor = InterferenceMonitor(frozenset({eval_cpu()}))
    with hog(eval_cpu()):
        time.sleep(0.2)
        figures = window(monitor, 1.5)
    # a spinning process owns the CPU it is pinned to (whatever else shares it takes the rest)
    assert figures["foreign_fraction"] > 0.5, figures


@needs_two_cpus
@pytest.mark.skipif(not isolation_available(), reason="needs root and scripts/setup-cpus.sh")
def test_exclusive_moves_a_host_hog_off_the_evaluation_cpu_and_back():
    cpu = eval_cpu()
    split = cpus.CpuSplit.of(str(cpu))
    before = os.sched_getaffinity(0)    # (another harness's window may have moved this process already)
    with hog(cpu) as proc:
        with cpus.exclusive(split) as ev:
            assert cpu not in os.sched_getaffinity(proc.pid)
            assert proc.pid in ev.moved and ev.moved[proc.pid] == {cpu}
            assert cpu not in os.sched_getaffinity(0)     # the harness itself is platform work
        assert os.sched_getaffinity(proc.pid) == {cpu}
    assert os.sched_getaffinity(0) == before


@needs_two_cpus
@pytest.mark.skipif(not isolation_available(), reason="needs root and scripts/setup-cpus.sh")
def test_a_platform_process_is_confined_to_the_platform_cpus():
    split = cpus.CpuSplit.of(str(eval_cpu()))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert cpus.confine(proc.pid, split) == "cgroup"
        assert set(os.sched_getaffinity(proc.pid)) == split.platform
        child = subprocess.run(["cat", f"/proc/{proc.pid}/cgroup"], capture_output=True, text=True).stdout
        assert f"/{cpus.PLATFORM_GROUP}" in child
    finally:
        proc.kill()
        proc.wait()


def make_guard(monkeypatch) -> TimedRunGuard:
    if not isolation_available():
        monkeypatch.setenv("ARENA_CPU_ISOLATION", "off")
    # No container here: every busy moment of the CPU is foreign, so the threshold is set above what
    # this shared host's own noise reaches on an evicted CPU, and far below a spinning hog.
    return TimedRunGuard.for_container(str(eval_cpu()), None, None, InterferencePolicy(0.3, 2))


@needs_two_cpus
def test_the_guard_gives_up_at_the_limit_when_every_attempt_is_disturbed(monkeypatch):
    guard = make_guard(monkeypatch)

    def run_with_hog(label):
        with hog(eval_cpu(), unmovable=True):
            time.sleep(1.0)
        return label

    assert guard.run("perf-1", run_with_hog) == "perf-1-remeasure-2"
    assert guard.disturbed and guard.remeasured == 2
    report = guard.report()
    assert [r["label"] for r in report["runs"]] == ["perf-1", "perf-1-remeasure-1", "perf-1-remeasure-2"]
    assert all(r["disturbed"] and r["foreign_fraction"] > 0.5 for r in report["runs"])
    assert report["max_remeasures"] == 2 and report["threshold"] == 0.3


@needs_two_cpus
def test_the_guard_remeasures_a_run_disturbed_once(monkeypatch):
    """A hog that isolation cannot move, during the first attempt only."""
    guard = make_guard(monkeypatch)
    state = {"n": 0}

    def run_with_hog_first_time(label):
        state["n"] += 1
        if state["n"] == 1:
            with hog(eval_cpu(), unmovable=True):
                time.sleep(1.0)
        else:
            time.sleep(1.0)
        return label

    assert guard.run("perf-1", run_with_hog_first_time) in ("perf-1-remeasure-1", "perf-1-remeasure-2")
    assert guard.runs[0]["disturbed"] and guard.runs[0]["foreign_fraction"] > 0.5
    assert guard.remeasured >= 1
    if guard.disturbed and all((r["eviction"] or {}).get("unmovable_threads") for r in guard.runs[1:]):
        pytest.skip(f"another task pinned to the evaluation CPU (another evaluation) kept it busy: {guard.runs}")
    assert not guard.disturbed


@needs_two_cpus
@pytest.mark.skipif(not isolation_available(), reason="needs root and scripts/setup-cpus.sh")
def test_the_data_path_runs_first_in_line_during_a_timed_run_and_is_restored():
    split = cpus.CpuSplit.of(str(eval_cpu()))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.getpid() in cpus.data_path_pids(None)
        with cpus.exclusive(split, data_path={proc.pid}) as ev:
            assert os.getpriority(os.PRIO_PROCESS, proc.pid) == cpus.DATA_PATH_NICE
            assert ev.boosted_threads >= 1
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 0
    finally:
        proc.kill()
        proc.wait()


@needs_two_cpus
def test_the_default_evaluation_cpu_does_not_follow_this_process_affinity():
    """A harness started on the platform CPUs (or forked during another evaluation's timed run)
    still pins evaluations to the host's last CPU, never to its own CPUs."""
    from sandbox.config import default_cpuset
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpus.host_cpus())})
        assert default_cpuset() == str(max(cpus.host_cpus()))
        assert cpus.CpuSplit.of().evaluation == {max(cpus.host_cpus())}
    finally:
        os.sched_setaffinity(0, before)


@needs_two_cpus
@pytest.mark.skipif(not isolation_available(), reason="needs root and scripts/setup-cpus.sh")
def test_a_harness_killed_mid_window_has_its_evicted_threads_put_back(tmp_path, monkeypatch):
    """The window's harness is SIGKILLed (no finally runs); the next window restores what it moved."""
    monkeypatch.setenv("ARENA_CPU_STATE_DIR", str(tmp_path))
    cpu = eval_cpu()
    with hog(cpu) as victim:
        code = ("import time; from sandbox import cpus\n"
                f"with cpus.exclusive(cpus.CpuSplit.of('{cpu}')):\n"
                "    print('in', flush=True); time.sleep(60)\n")
        harness = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                   env=os.environ | {"PYTHONPATH": os.getcwd()})
        assert harness.stdout.readline().strip() == "in"
        assert cpu not in os.sched_getaffinity(victim.pid)
        harness.kill()
        harness.wait()
        assert cpu not in os.sched_getaffinity(victim.pid)      # nobody restored it
        assert cpus.recover_abandoned() >= 1
        assert os.sched_getaffinity(victim.pid) == {cpu}
    assert not list(tmp_path.glob("evicted-*.json"))
