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
  memory limit (swap included) over all of its steps, plus per-step `--memory`, `--cpuset-cpus` (the
  platform CPUs: a build never runs on the evaluation CPUs) and
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
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker.errors

from lake.vocabulary import LABEL_MANAGED
from sandbox.build_limits import BuildCgroup, Watchdog, pids_message
from sandbox.config import SandboxSettings
from sandbox.cpus import CpuSplit, format_cpuset
from sandbox.dockerfile import OFFICIAL_BASE_IMAGES, parse
from sandbox.engine import client
from sandbox.requirements import check as check_requirements

#: Where the Docker engine is: the only host variables the docker CLI of a build sees (no
#: credentials: the build pulls nothing, and DOCKER_CONFIG is an empty directory).
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
BUILD_LINE_CHUNK = 64 << 10
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


def _docker_env() -> tuple[dict[str, str], str]:
    engine_env = {k: v for k, v in os.environ.items() if k in ENGINE_VARIABLES}
    no_config = tempfile.mkdtemp(prefix="arena-docker-config-")
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": no_config,
            **engine_env}, no_config


def _docker_build(context: Path, tag: str, settings: SandboxSettings, cgroup: BuildCgroup, deadline: float,
                  on_line: Callable[[str], None], label_args: list[str], logged: list[int]) -> tuple[int, Watchdog]:
    limits = ["--memory", str(settings.build_memory_bytes), "--memory-swap", str(settings.build_memory_bytes),
              "--cpu-period", "100000", "--cpu-quota", str(max(1000, int(settings.build_cpus * 100000)))]
    if settings.cpuset:   # builds are platform work: never on the evaluation CPUs (sandbox/cpus.py)
        platform = CpuSplit.of(settings.cpuset).platform
        if platform:
            limits += ["--cpuset-cpus", format_cpuset(platform)]
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
                    on_line: Callable[[str], None], find_links: str | None = None) -> str | None:
    """`pip download` binary wheels (never an sdist: no participant code runs on the host) for the image's
    Python into `wheelhouse`, with the host's pip configuration (its indexes) plus the platform's own
    wheels in `find_links` (e.g. /opt/wheels, where the CPU build of torch lies). None when it worked,
    else the error."""
    links = ["--find-links", find_links] if find_links and Path(find_links).is_dir() else []
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--only-binary=:all:", *WHEEL_TARGET, *links, "-d", str(wheelhouse), "--", *requirements]
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
                error = download_wheels(requirements, wheel_ctx / "wheelhouse", deadline - time.monotonic(), on_line,
                                        settings.build_wheels_dir)
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
