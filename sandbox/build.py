"""Build a submission's image: its own files as context, every RUN step in gVisor, no network, capped.

What holds a build (README "Security model" > "Builds"):

- The Dockerfile is read as the classic builder reads it and refused when anything could be read
  differently (`sandbox.dockerfile`); its one FROM must be an official base image whose local image
  ID is the one `scripts/build-images.sh` recorded (`official_images_dir`). The engine never pulls.
- Every RUN step runs under the engine's default runtime `runsc-build` (gVisor, `--network=none`,
  OCI seccomp), installed by scripts/setup-engine.sh; the build also asks for `--network none`.
- requirements.txt (names and version ranges only, `sandbox.requirements`) is resolved on the host:
  `pip download` of binary wheels only into a wheelhouse, added under the submission's FROM as a
  layer with `PIP_FIND_LINKS` and `PIP_NO_INDEX=1`, so `pip install -r requirements.txt` inside
  installs from it without any network.
- Limits hold during the build: each build gets its own cgroup parent with `pids.max` and a
  memory limit (swap included) over all of its steps, plus per-step `--memory`, `--cpuset-cpus` and
  `--cpu-quota`; a watchdog kills the build when it reaches the pids limit, writes more than
  `build_disk_bytes` into its layers, or runs past `build_timeout_s`. The error names the limit.
- `--no-cache`: no layer is shared with, or taken from, another submission's build.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker.errors

from lake.vocabulary import LABEL_MANAGED
from sandbox.config import SandboxSettings
from sandbox.dockerfile import OFFICIAL_BASE_IMAGES, parse
from sandbox.engine import client
from sandbox.requirements import check as check_requirements

#: Where the Docker engine is: the only host variables the docker CLI of a build sees (no
#: credentials: the build pulls nothing, and DOCKER_CONFIG is an empty directory).
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
BUILD_LINE_CHUNK = 64 << 10
CGROUP_ROOT = Path("/sys/fs/cgroup")
WHEELHOUSE_IN_IMAGE = "/opt/arena-wheelhouse"
#: The image's interpreter and platform, for which the host downloads wheels.
WHEEL_TARGET = ["--python-version", "3.11", "--implementation", "cp",
                *(a for v in ["manylinux_2_%d_x86_64" % m for m in range(36, 16, -1)]
                  + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
                  for a in ("--platform", v))]


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    tag: str
    image_id: str | None
    size_bytes: int | None
    base_image: str | None
    seconds: float
    error: str | None = None


def extract_submission(zip_path: Path, dest: Path) -> Path:
    """Unpack a (validated) submission zip; names are checked again, the sandbox trusts nobody."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(dest.resolve()) + "/") and target != dest.resolve():
                raise ValueError(f"zip entry {info.filename!r} escapes the build context")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return dest


def recorded_base_id(image: str, settings: SandboxSettings) -> str | None:
    """The image ID scripts/build-images.sh recorded for an official image, if any."""
    path = Path(settings.official_images_dir) / image.replace("/", "_").replace(":", "_")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class BuildCgroup:
    """The build's own cgroup parent (cgroup v1, cgroupfs): pids.max and memory over every step.

    Its counters tell which limit a failed build reached: `pids.events` (max) and the memory
    controller's `oom_kill`."""

    def __init__(self, settings: SandboxSettings):
        self.name = f"arena-build-{uuid.uuid4().hex[:12]}"
        self.pids_refused = 0
        self.pids = CGROUP_ROOT / "pids" / self.name
        self.memory = CGROUP_ROOT / "memory" / self.name
        try:
            self.pids.mkdir()
            (self.pids / "pids.max").write_text(str(settings.build_pids_limit))
            self.memory.mkdir()
            (self.memory / "memory.limit_in_bytes").write_text(str(settings.build_memory_bytes))
            if (self.memory / "memory.memsw.limit_in_bytes").exists():
                (self.memory / "memory.memsw.limit_in_bytes").write_text(str(settings.build_memory_bytes))
            # a new cpuset cgroup starts with no CPUs and no memory nodes: runsc would not fill them in
            cpuset = CGROUP_ROOT / "cpuset" / self.name
            if cpuset.parent.is_dir():
                cpuset.mkdir()
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (cpuset / key).write_text((cpuset.parent / key).read_text().strip() or "0")
        except OSError as err:
            self.remove()
            raise RuntimeError(f"cannot create the build's cgroup {self.name} under {CGROUP_ROOT} "
                               f"(cgroup v1, root needed): {err}") from err

    @property
    def parent(self) -> str:
        return "/" + self.name

    def pids_hit(self) -> int:
        """Forks refused so far. On cgroup v1 the kernel counts a refusal in the forking task's own
        cgroup (a step container's, under ours, gone with the step): read them all, keep the most seen."""
        total = 0
        for events in [self.pids / "pids.events", *self.pids.glob("*/pids.events")]:
            try:
                for line in events.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "max":
                        total += int(value)
            except (OSError, ValueError):
                pass
        self.pids_refused = max(self.pids_refused, total)
        return self.pids_refused

    def kernel_refused_forks(self) -> bool:
        """Whether the kernel log says a fork was refused under this cgroup (the kernel logs the first
        refusal of each cgroup): the evidence left when a step died between two looks at its counters."""
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return False
        wanted = f"fork rejected by pids controller in /{self.name}/".encode()   # the name is unique
        try:
            while True:
                try:
                    record = os.read(fd, 8192)
                except BlockingIOError:
                    return False
                except OSError:   # EPIPE: a record was overwritten while reading; go on
                    continue
                if not record:
                    return False
                if wanted in record:
                    return True
        finally:
            os.close(fd)

    def oom_kills(self) -> int:
        try:
            for line in (self.memory / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def memory_peak(self) -> int:
        try:
            return int((self.memory / "memory.max_usage_in_bytes").read_text())
        except (OSError, ValueError):
            return 0

    def remove(self) -> None:
        """rmdir every controller's directory of this name (runsc/runc may have made more)."""
        for _ in range(20):
            left = [d for d in CGROUP_ROOT.glob(f"*/{self.name}") if d.is_dir()]
            for d in left:
                for child in sorted(d.glob("*/"), key=lambda p: -len(p.parts)):
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass
                try:
                    d.rmdir()
                except OSError:
                    pass
            if not any(d.is_dir() for d in CGROUP_ROOT.glob(f"*/{self.name}")):
                return
            time.sleep(0.25)


def pids_message(settings: SandboxSettings, hits: int) -> str:
    return f"build reached the pids limit of {settings.build_pids_limit} processes ({hits} fork(s) refused)"


def _tree_bytes(root: str, stop_at: int) -> int:
    """Allocated bytes under `root` (st_blocks, hard links once), stopping early past `stop_at`."""
    total, seen = 0, set()
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_nlink > 1:
                        if st.st_ino in seen:
                            continue
                        seen.add(st.st_ino)
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    if total > stop_at:
                        return total
        except OSError:
            continue
    return total


class Watchdog(threading.Thread):
    """Holds one running `docker build` to its limits: time, pids (the cgroup's pids.events) and disk
    (bytes written into the upper directories of the build's step containers, summed over steps).
    Killing a build kills its step containers first, then the docker CLI."""

    def __init__(self, proc: subprocess.Popen, cgroup: BuildCgroup, settings: SandboxSettings,
                 deadline: float):
        super().__init__(daemon=True)
        self.proc, self.cgroup, self.settings, self.deadline = proc, cgroup, settings, deadline
        self.reason: str | None = None
        self.containers: dict[str, str | None] = {}   # id -> upper dir, or None when not ours
        self.written: dict[str, int] = {}
        self.peak_disk = 0

    def _ours(self) -> list[str]:
        try:
            ids = [c["Id"] for c in client().api.containers(all=True)]
        except docker.errors.APIError:
            return []
        for cid in ids:
            if cid not in self.containers:
                try:
                    attrs = client().api.inspect_container(cid)
                except docker.errors.NotFound:
                    continue
                ours = (attrs.get("HostConfig") or {}).get("CgroupParent") == self.cgroup.parent
                self.containers[cid] = ((attrs.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir", "") \
                    if ours else None
        return [cid for cid in ids if self.containers.get(cid) is not None]

    def kill(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        for cid, upper in self.containers.items():
            if upper is not None:
                try:
                    client().api.kill(cid)
                except docker.errors.APIError:
                    pass
        self.proc.kill()

    def run(self) -> None:
        s = self.settings
        tick = 0
        while self.proc.poll() is None:
            # pids every 50 ms: a step's refused forks are counted in its own cgroup, gone with the step
            time.sleep(0.05)
            tick += 1
            if (hits := self.cgroup.pids_hit()) > 0:
                self.kill(pids_message(s, hits))
                return
            if tick % 10:
                continue
            if time.monotonic() > self.deadline:
                self.kill(f"build exceeded the time limit of {s.build_timeout_s:.0f} s")
                return
            for cid in self._ours():
                upper = self.containers[cid]
                if upper:
                    self.written[cid] = max(self.written.get(cid, 0),
                                            _tree_bytes(upper, s.build_disk_bytes + 1))
            self.peak_disk = sum(self.written.values())
            if self.peak_disk > s.build_disk_bytes:
                self.kill(f"build wrote more than the disk limit of {s.build_disk_bytes} bytes "
                          f"({self.peak_disk} bytes in its layers)")
                return

    def remove_containers(self) -> None:
        for cid, upper in self.containers.items():
            if upper is not None:
                try:
                    client().api.remove_container(cid, force=True, v=True)
                except docker.errors.APIError:
                    pass


def _docker_env() -> tuple[dict[str, str], str]:
    engine_env = {k: v for k, v in os.environ.items() if k in ENGINE_VARIABLES}
    no_config = tempfile.mkdtemp(prefix="arena-docker-config-")
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": no_config,
            **engine_env}, no_config


def _docker_build(context: Path, tag: str, settings: SandboxSettings, cgroup: BuildCgroup, deadline: float,
                  on_line: Callable[[str], None], label_args: list[str], logged: list[int]) -> tuple[int, Watchdog]:
    limits = ["--memory", str(settings.build_memory_bytes), "--memory-swap", str(settings.build_memory_bytes),
              "--cpu-period", "100000", "--cpu-quota", str(max(1000, int(settings.build_cpus * 100000)))]
    if settings.cpuset:
        limits += ["--cpuset-cpus", settings.cpuset]
    cmd = ["docker", "build", "--rm", "--force-rm", "--no-cache", "--pull=false", "--network", "none",
           "--cgroup-parent", cgroup.parent, *limits, *label_args, "-t", tag, str(context)]
    env, no_config = _docker_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)
    watchdog = Watchdog(proc, cgroup, settings, deadline)
    watchdog.start()
    assert proc.stdout is not None
    while raw := proc.stdout.readline(BUILD_LINE_CHUNK):
        logged[0] += len(raw)
        if logged[0] <= settings.build_log_cap_bytes:
            on_line(raw.decode("utf-8", errors="replace").rstrip("\n"))
    rc = proc.wait()
    watchdog.join(5)
    shutil.rmtree(no_config, ignore_errors=True)
    return rc, watchdog


def download_wheels(requirements: list[str], wheelhouse: Path, timeout_s: float,
                    on_line: Callable[[str], None]) -> str | None:
    """`pip download` binary wheels (never an sdist: no participant code runs on the host) for the image's
    Python into `wheelhouse`, with the host's pip configuration (its indexes and find-links, e.g. the
    CPU torch wheel in /opt/wheels). None when it worked, else the error."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--only-binary=:all:", *WHEEL_TARGET, "-d", str(wheelhouse), "--", *requirements]
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        return f"downloading the requirements took longer than {timeout_s:.0f} s"
    for line in done.stdout.decode("utf-8", errors="replace").splitlines()[-40:]:
        on_line(f"[pip download] {line}")
    if done.returncode != 0:
        return f"downloading the requirements on the host failed (pip exited with status {done.returncode})"
    return None


def build_image(context: Path, tag: str, settings: SandboxSettings,
                on_line: Callable[[str], None] = lambda line: None,
                labels: dict[str, str] | None = None,
                trusted_bases: dict[str, str] | None = None) -> BuildResult:
    """Check and `docker build` the context under the limits above, streaming each log line to `on_line`.

    `trusted_bases` (tests and tools only, never a submission): extra base images allowed as FROM,
    each with the image ID it must have. Log lines are read in bounded chunks: a step that prints
    gigabytes without a newline costs the host no memory. A build refused or stopped ends with
    `ok=False` and an `error` that names the rule or the limit.
    """
    started = time.monotonic()
    deadline = started + settings.build_timeout_s

    def failed(error: str, base: str | None = None, size: int | None = None) -> BuildResult:
        on_line(f"[arena] {error}")
        return BuildResult(False, tag, None, size, base, time.monotonic() - started, error)

    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        return failed("the build context has no Dockerfile")
    text = dockerfile.read_bytes().decode("utf-8", errors="replace")
    allowed = OFFICIAL_BASE_IMAGES + tuple(trusted_bases or ())
    parsed = parse(text, allowed)
    if not parsed.ok or parsed.base_image is None:
        return failed("Dockerfile refused: " + "; ".join(p.message for p in parsed.problems))
    base = parsed.base_image
    want = (trusted_bases or {}).get(base) or recorded_base_id(base, settings)
    try:
        have = client().images.get(base).id
    except docker.errors.ImageNotFound:
        return failed(f"base image {base} is not on this host (the engine never pulls)", base)
    if want is None:
        return failed(f"base image {base} has no recorded image ID in {settings.official_images_dir} "
                      f"(run scripts/build-images.sh)", base)
    if have != want:
        return failed(f"base image {base} is {have}, not the recorded official image {want}", base)

    requirements: list[str] = []
    if (context / "requirements.txt").is_file():
        requirements, problems = check_requirements(
            (context / "requirements.txt").read_bytes().decode("utf-8", errors="replace"))
        if problems:
            return failed("requirements.txt refused: " + "; ".join(p.message for p in problems), base)

    label_args = [a for k, v in {LABEL_MANAGED: "1", **(labels or {})}.items() for a in ("--label", f"{k}={v}")]
    logged = [0]
    wheel_tag = None
    cgroup = BuildCgroup(settings)
    watchdogs: list[Watchdog] = []
    try:
        with tempfile.TemporaryDirectory(prefix="arena-wheels-") as tmp:
            if requirements:
                # The wheels go in as a layer under the submission's FROM: its own build context stays
                # its own files, and a `COPY . /app` does not copy them twice.
                wheel_ctx = Path(tmp)
                error = download_wheels(requirements, wheel_ctx / "wheelhouse", deadline - time.monotonic(), on_line)
                if error:
                    return failed(error, base)
                (wheel_ctx / "Dockerfile").write_text(
                    f"FROM {base}\nCOPY wheelhouse {WHEELHOUSE_IN_IMAGE}\n"
                    f"ENV PIP_FIND_LINKS={WHEELHOUSE_IN_IMAGE} PIP_NO_INDEX=1\n")
                wheel_tag = f"arena-wheels/{uuid.uuid4().hex[:16]}:build"
                on_line(f"[arena] wheelhouse of {len(requirements)} requirement(s) added under FROM {base}")
                rc, watchdog = _docker_build(wheel_ctx, wheel_tag, settings, cgroup, deadline, lambda line: None,
                                             ["--label", f"{LABEL_MANAGED}=1"], [0])
                watchdogs.append(watchdog)
                if watchdog.reason or rc != 0:
                    return failed(watchdog.reason or f"adding the wheelhouse failed (docker build status {rc})",
                                  base)
                lines = text.removeprefix("\ufeff").split("\n")
                from_ins = next(i for i in parsed.instructions if i.keyword == "FROM")
                stage = from_ins.words()[1:]
                lines[from_ins.line - 1:from_ins.end] = [" ".join(["FROM", wheel_tag, *stage])]
                build_ctx = Path(tmp) / "context"
                shutil.copytree(context, build_ctx, symlinks=True)
                (build_ctx / "Dockerfile").write_text("\n".join(lines))
            else:
                build_ctx = context
            rc, watchdog = _docker_build(build_ctx, tag, settings, cgroup, deadline, on_line, label_args, logged)
            watchdogs.append(watchdog)
        if logged[0] > settings.build_log_cap_bytes:
            on_line(f"[arena] build log truncated: {logged[0]} bytes, cap {settings.build_log_cap_bytes}")
        if watchdog.reason:
            remove_image(tag)
            return failed(watchdog.reason, base)
        if rc != 0:
            if (hits := cgroup.pids_hit()) > 0 or cgroup.kernel_refused_forks():
                return failed(pids_message(settings, max(hits, 1)), base)
            if cgroup.oom_kills() > 0 or cgroup.memory_peak() >= settings.build_memory_bytes * 0.98:
                return failed(f"build reached the memory limit of {settings.build_memory_bytes} bytes "
                              f"(peak {cgroup.memory_peak()} bytes)", base)
            return failed(f"docker build exited with status {rc}", base)
    finally:
        for w in watchdogs:
            w.remove_containers()
        if wheel_tag:
            remove_image(wheel_tag)
        cgroup.remove()
    image = client().images.get(tag)
    size = int(image.attrs.get("Size") or 0)
    if size > settings.max_image_bytes:
        remove_image(tag)
        return failed(f"image is {size} bytes, over the cap of {settings.max_image_bytes} bytes", base, size)
    return BuildResult(True, tag, image.id, size, base, time.monotonic() - started)


def build_submission_zip(zip_path: Path, tag: str, settings: SandboxSettings,
                         on_line: Callable[[str], None] = lambda line: None,
                         labels: dict[str, str] | None = None) -> BuildResult:
    with tempfile.TemporaryDirectory(prefix="arena-build-") as tmp:
        context = extract_submission(zip_path, Path(tmp) / "context")
        return build_image(context, tag, settings, on_line, labels)


def image_exists(tag: str) -> bool:
    try:
        client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def remove_image(tag: str, prune: bool = True) -> None:
    try:
        client().images.remove(tag, force=True, noprune=not prune)
    except docker.errors.ImageNotFound:
        pass
