"""Hostile builds through the real engine: every RUN step in gVisor (runsc-build, the engine's default
runtime), no network, limits held during the build, a refusal naming its rule or limit.

Fixtures: tests/fixtures/hostile_builds/ (README there). Real Docker, real gVisor, real cgroups.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from intake.validation import SubmissionRejected, validate_zip
from sandbox.build import build_image, build_submission_zip, image_exists, remove_image
from sandbox.config import SandboxSettings
from sandbox.engine import available_runtimes, client
from sandbox_workloads import FIXTURES, SESSION

HOSTILE = FIXTURES / "hostile_builds"
#: Small limits, so that every bomb goes off within seconds; still far above what runsc itself needs.
LIMITS = SandboxSettings(build_memory_bytes=512 << 20, build_pids_limit=256, build_disk_bytes=256 << 20,
                         build_timeout_s=180)

pytestmark = pytest.mark.skipif(
    (client().info().get("DefaultRuntime") != "runsc-build"),
    reason="the engine's default runtime is not runsc-build (run scripts/setup-engine.sh as root)")


def context_of(name: str, tmp_path: Path) -> Path:
    ctx = tmp_path / name
    shutil.copytree(HOSTILE / name, ctx)
    return ctx


def build(ctx: Path, settings: SandboxSettings = LIMITS, **kw) -> tuple:
    tag = f"arena-test/hostile-build-{ctx.name.replace('_', '-')}:{SESSION}"
    log: list[str] = []
    result = build_image(ctx, tag, settings, log.append, **kw)
    return result, log, tag


def our_leftovers(tag: str) -> list:
    return client().images.list(name=tag)


def assert_contained(result, tag, limit_words: str) -> None:
    assert not result.ok, result
    assert limit_words in result.error, result.error
    assert not our_leftovers(tag)


def test_fork_bomb_in_run_stops_at_the_pids_limit(tmp_path):
    result, log, tag = build(context_of("fork_bomb", tmp_path))
    assert_contained(result, tag, f"pids limit of {LIMITS.build_pids_limit} processes")
    assert result.seconds < 60, result.seconds   # stopped by the limit, not by the build's time limit


def test_memory_bomb_in_run_stops_at_the_memory_limit(tmp_path):
    result, log, tag = build(context_of("memory_bomb", tmp_path))
    assert_contained(result, tag, f"memory limit of {LIMITS.build_memory_bytes} bytes")
    hoarded = [int(m.group(1)) for line in log if (m := re.match(r"(\d+) MiB$", line))]
    assert hoarded and max(hoarded) * 2**20 <= LIMITS.build_memory_bytes


def test_disk_fill_in_run_stops_at_the_disk_limit(tmp_path):
    result, log, tag = build(context_of("disk_fill", tmp_path))
    assert_contained(result, tag, f"disk limit of {LIMITS.build_disk_bytes} bytes")
    written = int(re.search(r"\((\d+) bytes in its layers\)", result.error).group(1))
    assert written < LIMITS.build_disk_bytes + (1 << 30)   # caught within a second of writing
    assert shutil.disk_usage("/var/lib/docker").free > 4 * LIMITS.build_disk_bytes   # far below the disk


def test_build_over_the_time_limit_is_stopped(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\nRUN sleep 120\n")
    result, log, tag = build(tmp_path, LIMITS.with_(build_timeout_s=5))
    assert_contained(result, tag, "time limit of 5 s")


class Listener:
    """A TCP server on every host address: what a build step must never reach."""

    def __init__(self):
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def host_addresses() -> tuple[str, str | None]:
    """The host's LAN address (the source of its default route) and the LAN's default gateway."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.123", 9))   # no packet is sent: this only picks the route's source address
        lan = s.getsockname()[0]
    gateway = None
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            gateway = socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return lan, gateway


def test_probe_sees_gvisor_no_network_and_the_limits(tmp_path):
    """Kernel, network and limits as seen from a RUN step (as root inside it). The build itself passes:
    the probe only looks. Its output is printed (pytest -s) for the security notes."""
    ctx = context_of("probe", tmp_path)
    listener = Listener()
    lan, gateway = host_addresses()
    targets = [f"host listener on the bridge gateway 172.17.0.1 {listener.port}",
               f"host listener on the LAN address {lan} {listener.port}"]
    if gateway:
        targets.append(f"LAN gateway {gateway} 80")
    (ctx / "targets.txt").write_text("\n".join(targets) + "\n")
    try:
        result, log, tag = build(ctx)
    finally:
        listener.close()
    remove_image(tag)
    probe = {k: v for line in log if line.startswith("PROBE ") for k, _, v in [line[6:].partition(": ")]}
    print("\n".join(f"{k}: {v}" for k, v in probe.items()))
    assert result.ok, (result.error, log[-20:])
    # gVisor's kernel, not the host's
    assert os.uname().release not in probe["uname"] and "4.4.0" in probe["uname"]
    assert "Starting gVisor" in probe["dmesg"], probe["dmesg"]   # the kernel log root reads is gVisor's own
    # the root file system is served by gVisor's gofer over 9p, not an overlay mount of the host kernel
    assert " 9p " in probe["root mount"] and "trans=fd" in probe["root mount"], probe["root mount"]
    assert probe["id"].startswith("uid=0(root)")
    # no network: loopback only, no route, no name resolution, nothing reachable
    assert probe["interfaces"] == "lo" and probe["routes"].startswith("0 route")
    assert "does not resolve" in probe["resolv"]
    connects = {k: v for k, v in probe.items() if k.startswith("connect ")}
    assert len(connects) >= 9 and all(v.startswith("refused") for v in connects.values()), connects
    assert any("169.254.169.254" in k for k in connects) and any(lan in k for k in connects)
    assert listener.accepted == 0
    # the limits, as the step sees them
    mem_kib = int(re.search(r"(\d+) kB", probe["MemTotal"]).group(1))
    assert mem_kib * 1024 <= LIMITS.build_memory_bytes
    assert "os.cpu_count()=1" in probe["cpus"]


@pytest.mark.parametrize(("name", "rules"), [
    ("heredoc_from", {"dockerfile.heredoc", "dockerfile.multi_stage"}),
    ("heredoc_add", {"dockerfile.heredoc", "dockerfile.add_url"}),
])
def test_heredoc_tricks_are_refused_by_validation_and_by_the_build(tmp_path, name, rules):
    ctx = context_of(name, tmp_path)
    (ctx / "decoder.py").write_text("print('never runs')\n")
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(ctx.iterdir()):
            zf.write(f, f.name)
    with pytest.raises(SubmissionRejected) as caught:
        validate_zip(archive)
    found = {p.rule for p in caught.value.problems}
    assert rules <= found, caught.value.problems
    for p in caught.value.problems:
        assert p.rule in p.message and "Dockerfile line " in p.message
    # the build holds the same rules: a zip that reached the bucket some other way is refused too
    tag = f"arena-test/hostile-build-{name.replace('_', '-')}:{SESSION}"
    log: list[str] = []
    result = build_submission_zip(archive, tag, LIMITS, log.append)
    assert not result.ok and result.error.startswith("Dockerfile refused:")
    assert all(rule in result.error for rule in rules)
    assert not any("Sending build context" in line for line in log)   # docker never saw it
    assert not image_exists(tag)


def test_requirements_come_from_a_host_side_wheelhouse(tmp_path):
    """`pip install -r requirements.txt` inside a step without network, from the wheels the host fetched."""
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM arena/python-cpu:1\nCOPY requirements.txt /app/\n"
        "RUN pip install --no-cache-dir -r /app/requirements.txt && python3 -c 'import six; print(six.__version__)'\n")
    result, log, tag = build(tmp_path)
    try:
        assert result.ok, (result.error, log[-20:])
        assert "1.16.0" in log and any("Successfully installed six-1.16.0" in line for line in log)
        assert not any("Using cache" in line for line in log)
    finally:
        remove_image(tag)
    wheels = [m.group(1) for line in log if (m := re.match(r"Step 1/\d+ : FROM (arena-wheels/\S+)", line))]
    assert len(wheels) == 1 and not image_exists(wheels[0])   # the wheelhouse layer's tag is gone


@pytest.mark.parametrize("line", ["six @ https://evil.example/six.whl", "-e git+https://evil.example/x.git",
                                  "--extra-index-url https://evil.example/simple"])
def test_requirements_beyond_names_and_versions_are_refused_before_any_download(tmp_path, line):
    (tmp_path / "requirements.txt").write_text(f"numpy\n{line}\n")
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\n")
    result, log, tag = build(tmp_path)
    assert not result.ok and "requirements.line" in result.error and line in result.error
    assert "requirements.txt line 2" in result.error
    assert not any(line.startswith("[pip download]") for line in log)


def test_base_image_must_have_the_recorded_id(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\n")
    records = tmp_path / "records"
    records.mkdir()
    result, _, tag = build(tmp_path, LIMITS.with_(official_images_dir=str(records)))
    assert not result.ok and "has no recorded image ID" in result.error
    (records / "arena_python-cpu_1").write_text("sha256:" + "0" * 64 + "\n")
    result, _, tag = build(tmp_path, LIMITS.with_(official_images_dir=str(records)))
    assert not result.ok and "not the recorded official image sha256:000" in result.error
    (tmp_path / "Dockerfile").write_text("FROM arena/torch-cuda-missing:1\n")
    result, _, tag = build(tmp_path, trusted_bases={"arena/torch-cuda-missing:1": "sha256:" + "1" * 64})
    assert not result.ok and "not on this host (the engine never pulls)" in result.error


def test_no_layer_is_shared_between_builds(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM arena/python-cpu:1\nRUN head -c 16 /dev/urandom | od -x > /app/stamp\n")
    first, log1, tag = build(tmp_path)
    second_tag = tag + "-again"
    log2: list[str] = []
    second = build_image(tmp_path, second_tag, LIMITS, log2.append)
    try:
        assert first.ok and second.ok
        assert first.image_id != second.image_id
        assert not any("Using cache" in line for line in log1 + log2)
    finally:
        remove_image(tag)
        remove_image(second_tag)


def test_build_steps_run_under_the_gvisor_build_runtime():
    runtimes = available_runtimes()
    assert "runsc-build" in runtimes and "runsc" in runtimes
    info = client().info()
    assert info["DefaultRuntime"] == "runsc-build"
    path = info["Runtimes"]["runsc-build"]["path"]
    wrapper = Path(path).read_text()
    assert all(flag in wrapper for flag in ("--network=none", "--overlay2=none"))


# -- seccomp under runsc: the evaluation's profile is enforced inside gVisor (runsc --oci-seccomp) --

SYSCALLS = """
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(result):
    return 0 if result == 0 else ctypes.get_errno()
# what a decoder needs keeps working: threads (clone3, then clone) and fork
thread = threading.Thread(target=lambda: None); thread.start(); thread.join()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
unshare = errno_of(libc.unshare(0))                   # no namespace flag: allowed by the kernel itself
ptrace = errno_of(libc.ptrace(0, 0, None, None))      # PTRACE_TRACEME: needs no capability
CLONE_NEWUSER, SIGCHLD, SYS_clone = 0x10000000, 17, 56
child = libc.syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, None, None, None, None)
if child == 0:
    os._exit(0)
newuser = 0 if child > 0 else ctypes.get_errno()
if child > 0:
    os.waitpid(child, 0)
sys.exit(unshare * 64 + ptrace * 8 + newuser)
"""


def run_evaluation_container(security_opt: list[str] | None = None, runtime: str = "runsc") -> int:
    """`python3 -c SYSCALLS` in a container configured exactly as an evaluation's (sandbox.runner), under
    runsc; its exit status encodes the errno of unshare(0), ptrace(PTRACE_TRACEME) and
    clone(CLONE_NEWUSER), after a thread and a fork that must work (else the status is 1)."""
    from sandbox.runner import container_config
    cfg = container_config("arena/python-cpu:1", SandboxSettings(), runtime, None,
                           {"org.decode-arena.test": f"seccomp-{SESSION}"})
    if security_opt is not None:
        cfg["security_opt"] = security_opt
    container = client().containers.create(command=["python3", "-c", SYSCALLS], **cfg)
    try:
        container.start()
        return container.wait(timeout=120)["StatusCode"]
    finally:
        container.remove(force=True)


def test_the_seccomp_profile_is_enforced_in_evaluations_under_runsc(runtime: str = "runsc"):
    import errno
    assert "--oci-seccomp" in client().info()["Runtimes"][runtime].get("runtimeArgs", [])
    # the same calls succeed in gVisor when no profile applies: what fails below is the profile's doing
    assert run_evaluation_container(["no-new-privileges:true", "seccomp=unconfined"], runtime) == 0
    status = run_evaluation_container(runtime=runtime)
    assert (status // 64, status // 8 % 8, status % 8) == (errno.EPERM,) * 3, status
