"""Container sources: the container's own cgroup, with Docker's stats API as the fallback.

Where the cgroup is found: from ``/proc/<State.Pid>/cgroup`` of the container's init process, checked
by finding that pid in the directory's ``cgroup.procs``. What was found on the development host
(cgroup v1, cgroupfs driver):

* runc: ``/sys/fs/cgroup/<controller>/docker/<id>``, holding only the container's processes.
* runsc (gVisor, ptrace platform): the same path exists, but it holds the whole sandbox — the gofer,
  the Sentry and its ptrace stubs — so CPU and memory include gVisor's own overhead and ``pids``
  counts Sentry threads (38 for one idle python process), not the application's processes. Rows still
  say ``cgroup``, because that is what was read; the summary's notes say the runtime.

When the cgroup is absent or cannot be confirmed (a systemd driver inside another cgroup namespace,
a runtime that puts the sandbox elsewhere), the Docker stats API is read instead and rows say
``docker``. A vanished cgroup or container ends sampling normally (``ContainerGone``).
"""
from __future__ import annotations

import time
from pathlib import Path

import docker.errors
import requests.exceptions

from sandbox.telemetry.sampler import ContainerGone, FieldReader

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpuacct", "memory", "pids", "blkio")


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def _read_keyed(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def locate_cgroup(pid: int, root: Path = CGROUP_ROOT) -> dict[str, Path] | None:
    """The cgroup directories of ``pid``: {'cpuacct': …, 'memory': …} on v1, {'unified': …} on v2."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller or "unified"] = path.lstrip("/")
    if all(c in paths for c in V1_CONTROLLERS) and (root / "memory" / "memory.stat").exists():
        found = {c: root / c / paths[c] for c in V1_CONTROLLERS}
    elif "unified" in paths and (root / "cgroup.controllers").exists():
        found = {"unified": root / paths["unified"]}
    else:
        return None
    for directory in found.values():
        try:
            procs = directory.joinpath("cgroup.procs").read_text().split()
        except OSError:
            return None
        if str(pid) not in procs:   # a path relative to another cgroup namespace, not the container's
            return None
    return found


class _CpuPercent:
    """Percent of one core between consecutive readings of a cumulative CPU-time counter (ns)."""

    def __init__(self):
        self._last: tuple[int, int] | None = None

    def __call__(self, usage_ns: int | None) -> float | None:
        now = time.monotonic_ns()
        last, self._last = self._last, (None if usage_ns is None else (usage_ns, now))
        if usage_ns is None or last is None or now <= last[1]:
            return None
        return 100.0 * (usage_ns - last[0]) / (now - last[1])


class CgroupSource:
    name = "cgroup"
    expected_errors = (OSError, ValueError, KeyError, IndexError)

    def __init__(self, dirs: dict[str, Path]):
        self.dirs = dirs
        self.v2 = "unified" in dirs
        self._cpu = _CpuPercent()

    def _dir(self, controller: str) -> Path:
        return self.dirs["unified" if self.v2 else controller]

    def pids(self) -> set[int]:
        """Host pids of the processes in the container's cgroup (for per-process GPU memory)."""
        return {int(p) for p in self._dir("cpuacct").joinpath("cgroup.procs").read_text().split()}

    def labels(self) -> tuple[str, ...]:
        return (self.name,)

    def sample(self, read: FieldReader) -> list[dict]:
        if not all(d.is_dir() for d in self.dirs.values()):
            raise ContainerGone(f"cgroup {self._dir('memory')} was removed")
        row = {"source": self.name, "device": "container"}
        row["cpu_percent"] = self._cpu(read("cpu_percent", self._cpu_usage_ns))
        row["memory_bytes"] = read("memory_bytes", self._working_set)
        row["memory_peak_bytes"] = read("memory_peak_bytes", self._peak)
        row["pids"] = read("pids", lambda: _read_int(self._dir("pids") / "pids.current"))
        io = read("io_read_bytes", self._io) or (None, None)
        row["io_read_bytes"], row["io_write_bytes"] = io
        if not all(d.is_dir() for d in self.dirs.values()):
            raise ContainerGone(f"cgroup {self._dir('memory')} was removed")
        return [row]

    def _cpu_usage_ns(self) -> int:
        if self.v2:
            return _read_keyed(self.dirs["unified"] / "cpu.stat")["usage_usec"] * 1000
        return _read_int(self.dirs["cpuacct"] / "cpuacct.usage")

    def _working_set(self) -> int:
        d = self._dir("memory")
        if self.v2:
            return _read_int(d / "memory.current") - _read_keyed(d / "memory.stat")["inactive_file"]
        return _read_int(d / "memory.usage_in_bytes") - _read_keyed(d / "memory.stat")["total_inactive_file"]

    def _peak(self) -> int:
        d = self._dir("memory")
        return _read_int(d / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes"))

    def _io(self) -> tuple[int, int]:
        read = write = 0
        if self.v2:
            for line in (self.dirs["unified"] / "io.stat").read_text().splitlines():
                fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
                read += int(fields.get("rbytes", 0))
                write += int(fields.get("wbytes", 0))
        else:
            for line in (self.dirs["blkio"] / "blkio.throttle.io_service_bytes_recursive").read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    read += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    write += int(parts[2])
        return read, write

    def close(self) -> None:
        pass


class DockerStatsSource:
    """Docker's one-shot stats (no two-sample wait inside the daemon); CPU percent computed here."""
    name = "docker"
    expected_errors = (KeyError, TypeError, ValueError, docker.errors.APIError,
                       requests.exceptions.RequestException)

    def __init__(self, container):
        self.container = container
        self._cpu = _CpuPercent()

    def pids(self) -> set[int]:
        top = self.container.top(ps_args="-eo pid")
        return {int(p[0]) for p in top.get("Processes") or []}

    def labels(self) -> tuple[str, ...]:
        return (self.name,)

    def sample(self, read: FieldReader) -> list[dict]:
        try:
            stats = self.container.stats(stream=False, one_shot=True)
        except docker.errors.NotFound as gone:
            raise ContainerGone(str(gone)) from gone
        except self.expected_errors:
            stats = {}
        if stats and not stats.get("pids_stats") and not stats.get("memory_stats"):
            raise ContainerGone(f"container {self.container.id[:12]} is no longer running")
        mem = stats.get("memory_stats") or {}
        row = {"source": self.name, "device": "container"}
        row["cpu_percent"] = self._cpu(read("cpu_percent", lambda: stats["cpu_stats"]["cpu_usage"]["total_usage"]))
        row["memory_bytes"] = read("memory_bytes", lambda: mem["usage"] - mem["stats"].get(
            "total_inactive_file", mem["stats"].get("inactive_file", 0)))
        row["memory_peak_bytes"] = read("memory_peak_bytes", lambda: mem.get("max_usage"))  # absent on cgroup v2
        row["pids"] = read("pids", lambda: stats["pids_stats"]["current"])
        io = read("io_read_bytes", lambda: self._io(stats)) or (None, None)
        row["io_read_bytes"], row["io_write_bytes"] = io
        return [row]

    @staticmethod
    def _io(stats: dict) -> tuple[int, int]:
        entries = stats["blkio_stats"]["io_service_bytes_recursive"] or []
        read = sum(e["value"] for e in entries if e["op"].lower() == "read")
        write = sum(e["value"] for e in entries if e["op"].lower() == "write")
        return read, write

    def close(self) -> None:
        pass


def container_source(container) -> CgroupSource | DockerStatsSource:
    """The cgroup source when the container's cgroup can be confirmed here, else Docker's stats."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    dirs = locate_cgroup(pid) if pid else None
    return CgroupSource(dirs) if dirs else DockerStatsSource(container)


def runtime_of(container) -> str:
    return container.attrs.get("HostConfig", {}).get("Runtime") or "unknown"
