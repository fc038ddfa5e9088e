"""Build a submission's image: its own files only as context, network for pip, no secrets, capped."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker.errors

from sandbox.config import SandboxSettings
from lake.vocabulary import LABEL_MANAGED
from sandbox.engine import client


#: Where the Docker engine is: the only host variables the docker CLI of a build sees (no
#: credentials: the build pulls nothing, and DOCKER_CONFIG is an empty directory).
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
BUILD_LINE_CHUNK = 64 << 10


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


def first_base_image(dockerfile: Path) -> str | None:
    for line in dockerfile.read_text(errors="replace").splitlines():
        m = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)", line, re.I)
        if m:
            return m.group(1)
    return None


def build_image(context: Path, tag: str, settings: SandboxSettings,
                on_line: Callable[[str], None] = lambda line: None,
                labels: dict[str, str] | None = None) -> BuildResult:
    """`docker build` the context, streaming each log line to `on_line` as it happens.

    The build has network (bridge) for `pip install` but no build args, no secrets and no mounts;
    the docker CLI gets no environment from the host beyond where the engine is. Each RUN step is
    held to `build_memory_bytes` (no swap) and the sandbox's cpuset. A build over the time limit is
    killed; an image over the size cap is removed. Log lines are read in bounded chunks: a step that
    prints gigabytes without a newline costs the host no memory.
    """
    started = time.monotonic()
    base = first_base_image(context / "Dockerfile") if (context / "Dockerfile").exists() else None
    label_args = [a for k, v in {LABEL_MANAGED: "1", **(labels or {})}.items() for a in ("--label", f"{k}={v}")]
    limits = ["--memory", str(settings.build_memory_bytes), "--memory-swap", str(settings.build_memory_bytes)]
    if settings.cpuset:
        limits += ["--cpuset-cpus", settings.cpuset]
    cmd = ["docker", "build", "--rm", "--force-rm", "--network", "bridge", "--pull=false",
           *limits, *label_args, "-t", tag, str(context)]
    engine_env = {k: v for k, v in os.environ.items() if k in ENGINE_VARIABLES}
    no_config = tempfile.mkdtemp(prefix="arena-docker-config-")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_BUILDKIT": "0",
                                 "DOCKER_CONFIG": no_config, **engine_env})
    timed_out = threading.Event()

    def kill_on_deadline():
        try:
            proc.wait(settings.build_timeout_s)
        except subprocess.TimeoutExpired:
            timed_out.set()
            proc.kill()

    watchdog = threading.Thread(target=kill_on_deadline, daemon=True)
    watchdog.start()
    logged = 0
    assert proc.stdout is not None
    while raw := proc.stdout.readline(BUILD_LINE_CHUNK):
        logged += len(raw)
        if logged <= settings.build_log_cap_bytes:
            on_line(raw.decode("utf-8", errors="replace").rstrip("\n"))
    rc = proc.wait()
    shutil.rmtree(no_config, ignore_errors=True)
    seconds = time.monotonic() - started
    if logged > settings.build_log_cap_bytes:
        on_line(f"[arena] build log truncated: {logged} bytes, cap {settings.build_log_cap_bytes}")
    if timed_out.is_set():
        return BuildResult(False, tag, None, None, base, seconds,
                           f"build exceeded the time limit of {settings.build_timeout_s:.0f} s")
    if rc != 0:
        return BuildResult(False, tag, None, None, base, seconds, f"docker build exited with status {rc}")
    image = client().images.get(tag)
    size = int(image.attrs.get("Size") or 0)
    if size > settings.max_image_bytes:
        remove_image(tag)
        return BuildResult(False, tag, None, size, base, seconds,
                           f"image is {size} bytes, over the cap of {settings.max_image_bytes} bytes")
    return BuildResult(True, tag, image.id, size, base, seconds)


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


def remove_image(tag: str) -> None:
    try:
        client().images.remove(tag, force=True, noprune=False)
    except docker.errors.ImageNotFound:
        pass
