"""The sandbox's settings as Docker actually applied them, the build step's limits, and cleanup after
a crash of the platform itself. Real Docker throughout."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.build import build_image, remove_image
from sandbox.cpus import host_cpus
from sandbox.config import SandboxSettings, default_cpuset
from lake.vocabulary import LABEL_MANAGED, LABEL_SUBMISSION
from sandbox.engine import client, remove_leftovers, resolve_runtime
from sandbox.runner import MODEL_MOUNT, run_sandboxed
from sandbox_workloads import SESSION

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


def host_config(image: str, settings: SandboxSettings, model_dir: Path | None) -> dict:
    with run_sandboxed(image, settings, model_dir=model_dir, on_line=lambda t, line: None) as box:
        box.container.reload()
        return box.container.attrs


def test_auto_means_gvisor_where_registered():
    runtimes = set((client().info().get("Runtimes") or {}))
    assert resolve_runtime("auto") == ("runsc" if "runsc" in runtimes else "runc")


@pytest.mark.parametrize("runtime", ["auto", "runc"])
def test_every_limit_is_applied(calibrated, tmp_path, runtime):
    model = tmp_path / "model"
    model.mkdir()
    settings = SandboxSettings(runtime=runtime)
    attrs = host_config(calibrated, settings, model)
    hc = attrs["HostConfig"]
    assert hc["Runtime"] == resolve_runtime(runtime)
    assert hc["NetworkMode"] == "none"
    assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert any(opt.startswith("seccomp=") and "ptrace" in opt for opt in hc["SecurityOpt"])
    assert hc["Privileged"] is False and not hc["Devices"] and not hc["DeviceRequests"]
    assert attrs["Config"]["User"] == "10001:10001"
    assert hc["ReadonlyRootfs"] is True
    assert hc["Tmpfs"] == {"/tmp": f"rw,nosuid,nodev,noexec,size={settings.tmpfs_bytes}"}
    assert hc["Memory"] == hc["MemorySwap"] == settings.memory_bytes   # no swap
    assert hc["PidsLimit"] == settings.pids_limit
    assert hc["NanoCpus"] == int(settings.cpus * 1e9)
    assert hc["CpusetCpus"] == default_cpuset() == str(max(host_cpus()))   # the host's, not our affinity
    assert attrs["Config"]["Env"] and not any(k.startswith(("DOCKER", "ARENA_SECRET", "AWS"))
                                              for k in attrs["Config"]["Env"])
    mounts = attrs["Mounts"]
    assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in mounts] == \
        [("bind", str(model.resolve()), MODEL_MOUNT, False)]


def test_cpuset_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ARENA_SANDBOX_CPUSET", "0")
    assert SandboxSettings.from_env().cpuset == "0"
    monkeypatch.setenv("ARENA_SANDBOX_CPUSET", "none")
    assert SandboxSettings.from_env().cpuset is None
    monkeypatch.delenv("ARENA_SANDBOX_CPUSET")
    assert SandboxSettings.from_env().cpuset == default_cpuset()


def test_image_volumes_get_no_storage(tmp_path):
    """A VOLUME in the Dockerfile would give the container a writable, unlimited anonymous volume."""
    (tmp_path / "Dockerfile").write_text('FROM arena/python-cpu:1\nVOLUME ["/data"]\nCMD ["sleep", "60"]\n')
    tag = f"arena-test/volume:{SESSION}"
    assert build_image(tmp_path, tag, SandboxSettings()).ok
    try:
        attrs = host_config(tag, SandboxSettings(runtime="runc"), None)
        assert attrs["Mounts"] == []
        assert attrs["HostConfig"]["Tmpfs"]["/data"].startswith("ro,")
    finally:
        remove_image(tag)


def test_build_gets_no_host_secrets_and_streams_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_SECRET_KEY", "do-not-leak-4711")
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\nRUN env; echo step-one-done\n")
    lines: list[tuple[float, str]] = []
    tag = f"arena-test/env:{SESSION}"
    result = build_image(tmp_path, tag, SandboxSettings(), lambda line: lines.append((time.monotonic(), line)))
    try:
        assert result.ok, result.error
        log = "\n".join(line for _, line in lines)
        assert "step-one-done" in log and "do-not-leak-4711" not in log
        assert client().images.get(tag).labels.get(LABEL_MANAGED) == "1"
    finally:
        remove_image(tag)


def test_build_over_the_time_limit_is_stopped(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\nRUN sleep 120\n")
    tag = f"arena-test/slow:{SESSION}"
    result = build_image(tmp_path, tag, SandboxSettings(build_timeout_s=3))
    remove_image(tag)
    assert not result.ok and "time limit of 3 s" in result.error


def test_build_over_the_size_cap_is_removed(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\n")
    tag = f"arena-test/big:{SESSION}"
    result = build_image(tmp_path, tag, SandboxSettings(max_image_bytes=1 << 20))
    assert not result.ok and "over the cap" in result.error
    assert not client().images.list(name=tag)


EVALUATE_FOREVER = """
import sys
from pathlib import Path
from sandbox.config import SandboxSettings
from sandbox.evaluate import evaluate_image
from sandbox_workloads import calibrated_workload
evaluate_image(sys.argv[1], submission_id=sys.argv[2], challenge="test",
               workload=calibrated_workload(repeats=1000, min_duration_ms=60_000),
               model_dir=None, settings=SandboxSettings(), log_root=Path(sys.argv[3]))
"""


def test_leftovers_of_a_killed_platform_are_removed(calibrated, tmp_path):
    """SIGKILL the process in the middle of an evaluation: its container survives it, and
    `remove_leftovers` (what the platform calls at startup) removes it."""
    submission = f"killed-{SESSION}"
    env = os.environ | {"PYTHONPATH": f"{REPO}:{REPO / 'tests' / 'sandbox'}"}
    proc = subprocess.Popen([sys.executable, "-c", EVALUATE_FOREVER, calibrated, submission, str(tmp_path)],
                            env=env, cwd=REPO)
    mine = {"label": [LABEL_MANAGED, f"org.decode-arena.submission={submission}"]}
    try:
        deadline = time.monotonic() + 60
        while not (running := client().containers.list(filters=mine)):
            assert proc.poll() is None and time.monotonic() < deadline, "the evaluation never started"
            time.sleep(0.2)
        while not (tmp_path / "accuracy").exists():   # in the middle: LoadGen is driving it
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [c.id for c in client().containers.list(all=True, filters=mine)] == [running[0].id]
    assert remove_leftovers(labels={"org.decode-arena.submission": submission}) == 1
    assert client().containers.list(all=True, filters=mine) == []


def test_a_submission_image_left_by_a_dead_platform_is_removed_at_startup(tmp_path):
    submission = f"orphan-image-{SESSION}"
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\nCMD [\"true\"]\n")
    tag = f"arena-sub/{submission}:latest"
    built = build_image(tmp_path, tag, SandboxSettings(), labels={LABEL_SUBMISSION: submission})
    assert built.ok, built.error
    remove_leftovers(labels={LABEL_SUBMISSION: submission})
    assert client().images.list(filters={"label": f"{LABEL_SUBMISSION}={submission}"}) == []
