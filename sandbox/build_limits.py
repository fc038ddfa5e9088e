"""The limits of a running build: its own cgroup parent and a watchdog over it (sandbox/build.py).

Docker's classic builder has no pids or disk limit for RUN steps, and its `--memory` holds one step at
a time. Each build therefore gets a cgroup parent of its own (`docker build --cgroup-parent`), cgroup
v1: `pids.max` and a memory limit over every step together, and counters that say afterwards which
limit a failed build reached. A watchdog thread kills the build (its step containers, then the docker
CLI) at the pids limit, past the disk limit (bytes in the step containers' upper directories) or past
the time limit, and says which.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import docker.errors

from sandbox.config import SandboxSettings
from sandbox.engine import client

CGROUP_ROOT = Path("/sys/fs/cgroup")


class BuildCgroup:
    """The build's own cgroup parent (cgroup v1, cgroupfs): pids.max and memory over every step.

    Its counters tell which limit a failed build reached: `pids.events` (max) and the memory
    controller's `oom_kill`."""

    def __init__(self, settings: SandboxSettings):
        sweep_stale_cgroups(older_than_s=settings.build_timeout_s + 3600)
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

    def _remove_once(self) -> bool:
        """One pass of rmdir over every controller's directory of this name (runsc/runc make some of
        them, and the step containers' below); True when none is left."""
        for d in [d for d in CGROUP_ROOT.glob(f"*/{self.name}") if d.is_dir()]:
            for child in sorted(d.glob("*/"), key=lambda p: -len(p.parts)):
                try:
                    child.rmdir()
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass
        return not any(d.is_dir() for d in CGROUP_ROOT.glob(f"*/{self.name}"))

    def remove(self) -> None:
        """Remove the cgroup; a step's runtime may still be tearing down under load, so what is left
        after two seconds is retried in the background for a minute (and swept by a later build)."""
        for _ in range(8):
            if self._remove_once():
                return
            time.sleep(0.25)

        def later():
            for _ in range(60):
                time.sleep(1)
                if self._remove_once():
                    return
        threading.Thread(target=later, daemon=True).start()


def sweep_stale_cgroups(older_than_s: float) -> None:
    """Remove empty build cgroups left by a platform that died mid-build (older than any build can be)."""
    now = time.time()
    for d in CGROUP_ROOT.glob("*/arena-build-*"):
        try:
            if now - d.stat().st_ctime < older_than_s or (d / "cgroup.procs").read_text().strip():
                continue
            for child in d.glob("*/"):
                child.rmdir()
            d.rmdir()
        except OSError:
            pass


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
