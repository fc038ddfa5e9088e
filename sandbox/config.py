"""Sandbox settings: limits of the build and run steps, from the environment (DESIGN.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def default_cpuset() -> str:
    """The host's last CPU: evaluations run pinned there, away from CPU 0 where the kernel, Docker
    and the harness itself are busiest, so every submission sees the same core. The host's CPUs, not
    this process's affinity: a platform process is confined to the platform CPUs (sandbox/cpus.py),
    and one forked while another evaluation's timed run held its CPU inherits an affinity without it."""
    from sandbox.cpus import host_cpus
    return str(max(host_cpus()))


@dataclass(frozen=True)
class SandboxSettings:
    """Every limit of the sandbox. `from_env` reads the ARENA_SANDBOX_* variables documented in the README.

    CPU placement: the container gets `cpus` cores of quota and is pinned to `cpuset` (Docker's
    `--cpuset-cpus` syntax, e.g. "3" or "2-3"). By default that is the host's last CPU, so that a
    measurement always runs on the same core; set ARENA_SANDBOX_CPUSET to choose others (one set per
    device queue on a bigger host), or ARENA_SANDBOX_CPUSET=none to not pin at all.
    """
    runtime: str = "auto"                # auto | runsc | runc
    user: str = "10001:10001"            # non-root uid:gid inside the container
    memory_bytes: int = 2 << 30          # memory limit (swap disabled: memswap = memory)
    pids_limit: int = 256
    cpus: float = 1.0                    # CPU quota, in cores
    cpuset: str | None = field(default_factory=default_cpuset)   # e.g. "1"; None: not pinned
    tmpfs_bytes: int = 64 << 20          # size of the /tmp tmpfs
    load_timeout_s: float = 60.0         # container start -> {"ready": true}
    run_timeout_s: float = 600.0         # wall clock for the whole evaluation session
    stall_timeout_s: float = 30.0        # requests outstanding and no output for this long: timeout
    build_timeout_s: float = 600.0
    max_image_bytes: int = 4 << 30
    stderr_cap_bytes: int = 1 << 20      # run-log bytes kept from the container's stderr
    build_log_cap_bytes: int = 4 << 20
    build_memory_bytes: int = 4 << 30    # memory of the build, every RUN step together (swap disabled)
    build_pids_limit: int = 1024         # processes and threads of the build (host side of gVisor included)
    build_cpus: float = 1.0              # CPU quota of each RUN step, in cores
    build_disk_bytes: int = 8 << 30      # bytes a build may write into its layers (watched while it runs)
    official_images_dir: str = "/var/lib/decode-arena/official-images"   # image IDs build-images.sh recorded
    build_wheels_dir: str = "/opt/wheels"   # the platform's own wheels, offered to requirements.txt (if present)
    nofile: int = 4096                   # open files per process in the container
    gpus: tuple[str, ...] = field(default_factory=tuple)   # GPU device ids requested explicitly
    threads: int | None = None           # threads the decoder is told to use (a challenge's [limits] threads)

    @classmethod
    def from_env(cls) -> "SandboxSettings":
        gpus = tuple(g for g in _env("ARENA_SANDBOX_GPUS", "").split(",") if g)
        return cls(
            runtime=_env("ARENA_SANDBOX_RUNTIME", "auto"),
            memory_bytes=int(_env("ARENA_SANDBOX_MEMORY_BYTES", str(2 << 30))),
            pids_limit=int(_env("ARENA_SANDBOX_PIDS", "256")),
            cpus=float(_env("ARENA_SANDBOX_CPUS", "1.0")),
            cpuset=_cpuset(_env("ARENA_SANDBOX_CPUSET", "")),
            tmpfs_bytes=int(_env("ARENA_SANDBOX_TMPFS_BYTES", str(64 << 20))),
            load_timeout_s=float(_env("ARENA_SANDBOX_LOAD_TIMEOUT_S", "60")),
            run_timeout_s=float(_env("ARENA_SANDBOX_RUN_TIMEOUT_S", "600")),
            stall_timeout_s=float(_env("ARENA_SANDBOX_STALL_TIMEOUT_S", "30")),
            build_timeout_s=float(_env("ARENA_SANDBOX_BUILD_TIMEOUT_S", "600")),
            max_image_bytes=int(_env("ARENA_SANDBOX_MAX_IMAGE_BYTES", str(4 << 30))),
            stderr_cap_bytes=int(_env("ARENA_SANDBOX_STDERR_CAP_BYTES", str(1 << 20))),
            build_memory_bytes=int(_env("ARENA_SANDBOX_BUILD_MEMORY_BYTES", str(4 << 30))),
            build_pids_limit=int(_env("ARENA_SANDBOX_BUILD_PIDS", "1024")),
            build_cpus=float(_env("ARENA_SANDBOX_BUILD_CPUS", "1.0")),
            build_disk_bytes=int(_env("ARENA_SANDBOX_BUILD_DISK_BYTES", str(8 << 30))),
            official_images_dir=_env("ARENA_OFFICIAL_IMAGES_DIR", "/var/lib/decode-arena/official-images"),
            build_wheels_dir=_env("ARENA_BUILD_WHEELS_DIR", "/opt/wheels"),
            gpus=gpus,
        )

    def with_(self, **changes) -> "SandboxSettings":
        return replace(self, **changes)


def _cpuset(value: str) -> str | None:
    if value.strip().lower() == "none":
        return None
    return value.strip() or default_cpuset()
