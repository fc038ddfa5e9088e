"""Which host CPUs belong to evaluations and which to the platform, and keeping them apart.

The split: the evaluation CPUs are the cpuset the sandbox pins containers to (SandboxSettings.cpuset,
by default the host's last CPU; one set per worker on a bigger host); every other CPU is the
platform's (services, Docker, builds, the harness, the telemetry sidecar).

Two mechanisms, both set up by `scripts/setup-cpus.sh` and read back here:
- cgroup cpusets: `arena-platform` (the platform CPUs) and `arena-eval` (the evaluation CPUs, the
  cgroup parent of every evaluation container). `confine(pid)` puts a platform process into
  `arena-platform`; its children inherit it.
- `exclusive(cpus)`: while a timed run is in progress every other movable host thread whose affinity
  includes an evaluation CPU is moved off it with sched_setaffinity, and put back afterwards. Kernel
  threads and tasks whose cgroup confines them to evaluation CPUs (other containers pinned there)
  cannot move: they are counted as `unmovable`, and `sandbox.interference` measures what they cost.

ARENA_CPU_ISOLATION=off turns both off (a host where this process cannot write cgroups or set other
processes' affinity, e.g. an unprivileged developer machine); the interference monitor still runs.
Every function takes an explicit cpuset so a worker with its own devices can use its own split.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

CGROUP_ROOT = Path(os.environ.get("ARENA_CGROUP_ROOT", "/sys/fs/cgroup"))
PLATFORM_GROUP = "arena-platform"
EVAL_GROUP = "arena-eval"
PF_KTHREAD = 0x00200000          # /proc/<pid>/stat flags: a kernel thread
SWEEP_S = 0.2                    # during a timed run, new processes are moved off this often
#: nice of the evaluation's data path during a timed run (ARENA_CPU_DATA_PATH_NICE; "off": unchanged)
_nice = os.environ.get("ARENA_CPU_DATA_PATH_NICE", "-10").strip().lower()
DATA_PATH_NICE: int | None = None if _nice in ("off", "none", "") else int(_nice)


def parse_cpuset(text: str) -> frozenset[int]:
    """'0-2,5' -> {0, 1, 2, 5}"""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(cpus)


def format_cpuset(cpus) -> str:
    """{0, 1, 2, 5} -> '0-2,5'"""
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def host_cpus() -> frozenset[int]:
    online = Path("/sys/devices/system/cpu/online")
    return parse_cpuset(online.read_text()) if online.exists() else frozenset(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuSplit:
    evaluation: frozenset[int]
    platform: frozenset[int]

    @classmethod
    def of(cls, cpuset: str | None = None) -> "CpuSplit":
        """The split for one worker's evaluation cpuset ('3', '2-3'); None: ARENA_EVAL_CPUS, else
        ARENA_SANDBOX_CPUSET, else the sandbox's default (the last CPU). The platform is every CPU
        outside all evaluation CPUs (this one's, the arena-eval cgroup's, ARENA_EVAL_CPUS), so that a
        host task moved off one worker's CPUs never lands on another worker's."""
        from sandbox.config import default_cpuset
        if cpuset is None:
            cpuset = os.environ.get("ARENA_EVAL_CPUS") or os.environ.get("ARENA_SANDBOX_CPUSET") or ""
        if cpuset.strip().lower() in ("", "none"):
            cpuset = default_cpuset()
        ev = parse_cpuset(cpuset)
        reserved = ev | (_group_cpus(EVAL_GROUP) or frozenset())
        if os.environ.get("ARENA_EVAL_CPUS"):
            reserved |= parse_cpuset(os.environ["ARENA_EVAL_CPUS"])
        rest = (host_cpus() - reserved) or (host_cpus() - ev)
        return cls(ev, rest or ev)     # a one-CPU host has nothing to split

    def as_dict(self) -> dict:
        return {"evaluation": format_cpuset(self.evaluation), "platform": format_cpuset(self.platform)}


def isolation_enabled() -> bool:
    return os.environ.get("ARENA_CPU_ISOLATION", "on").strip().lower() not in ("off", "0", "false", "no")


def cgroup_version() -> int | None:
    if (CGROUP_ROOT / "cpuset" / "cpuset.cpus").exists():
        return 1
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return 2
    return None


def group_dir(name: str) -> Path | None:
    """The cpuset cgroup directory `name`, if setup-cpus.sh created it."""
    v = cgroup_version()
    d = CGROUP_ROOT / "cpuset" / name if v == 1 else CGROUP_ROOT / name if v == 2 else None
    return d if d is not None and d.is_dir() else None


def _group_cpus(name: str) -> frozenset[int] | None:
    d = group_dir(name)
    if d is None:
        return None
    f = d / ("cpuset.cpus" if cgroup_version() == 1 else "cpuset.cpus.effective")
    try:
        return parse_cpuset(f.read_text())
    except OSError:
        return None


def eval_cgroup_parent(split: CpuSplit) -> str | None:
    """Docker's --cgroup-parent for evaluation containers on `split`: '/arena-eval' where that
    cgroup exists and covers the evaluation CPUs, else None (Docker's default parent)."""
    if not isolation_enabled():
        return None
    cpus = _group_cpus(EVAL_GROUP)
    return f"/{EVAL_GROUP}" if cpus is not None and split.evaluation <= cpus else None


def state(split: CpuSplit | None = None) -> dict:
    """What isolation this host has now, for the result's measurement.interference and `status`."""
    split = split or CpuSplit.of()
    platform = _group_cpus(PLATFORM_GROUP)
    evaluation = _group_cpus(EVAL_GROUP)
    return {
        "enabled": isolation_enabled(), "cgroup_version": cgroup_version(), **split.as_dict(),
        "platform_cgroup": format_cpuset(platform) if platform is not None else None,
        "eval_cgroup": format_cpuset(evaluation) if evaluation is not None else None,
    }


def confine(pid: int, split: CpuSplit | None = None) -> str:
    """Put a platform process (and, through inheritance, its future children) on the platform CPUs.
    Returns how: 'cgroup', 'affinity', or 'off'/'failed: ...'."""
    split = split or CpuSplit.of()
    if not isolation_enabled() or split.platform == split.evaluation:
        return "off"
    d = group_dir(PLATFORM_GROUP)
    if d is not None:
        try:
            (d / "cgroup.procs").write_text(str(pid))
            return "cgroup"
        except OSError:
            pass
    try:
        for tid in _threads(pid):
            try:
                os.sched_setaffinity(tid, split.platform)
            except OSError:
                pass
        return "affinity"
    except OSError as exc:
        return f"failed: {exc}"


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def _is_kernel_thread(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[1].split()
    return bool(int(fields[6]) & PF_KTHREAD)


@dataclass
class Eviction:
    """What `exclusive` did: threads moved off the evaluation CPUs, and those that could not move."""
    cpus: frozenset[int]
    moved: dict[int, frozenset[int]] = field(default_factory=dict)   # tid -> its affinity before
    unmovable: int = 0
    kernel_threads: int = 0
    seconds: float = 0.0                 # host time the sweeps took
    sweeps: int = 0
    boosted_threads: int = 0
    seen: set[int] = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"moved_threads": len(self.moved), "unmovable_threads": self.unmovable,
                "kernel_threads": self.kernel_threads, "sweeps": self.sweeps,
                "boosted_threads": self.boosted_threads, "seconds": round(self.seconds, 4)}


def evict(split: CpuSplit, keep_pids: set[int] = frozenset(), keep_cgroup: str | None = None,
          into: Eviction | None = None, only_new: bool = False) -> Eviction:
    """Move every movable host thread off the evaluation CPUs, except the processes in `keep_pids`
    and those whose cpuset cgroup path contains `keep_cgroup` (the evaluation container).
    `into` + `only_new`: a later sweep that looks only at processes the earlier ones did not see
    (threads and children of moved threads inherit their affinity; a new container does not)."""
    import time
    t0 = time.perf_counter()
    ev = into or Eviction(split.evaluation)
    if split.platform == split.evaluation:
        return ev
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if only_new and pid in ev.seen:
            continue
        ev.seen.add(pid)
        if pid in keep_pids:
            continue
        if _is_kernel_thread(pid):
            ev.kernel_threads += 1
            continue
        if keep_cgroup and keep_cgroup in _cpuset_cgroup(pid):
            continue
        try:
            tids = _threads(pid)
        except OSError:
            continue
        for tid in tids:
            try:
                before = frozenset(os.sched_getaffinity(tid))
            except OSError:
                continue
            if not before & split.evaluation:
                continue
            target = (before - split.evaluation) or split.platform
            try:
                os.sched_setaffinity(tid, target)
                ev.moved.setdefault(tid, before)
            except OSError:
                ev.unmovable += 1     # its cpuset allows only evaluation CPUs, or not ours to move
    ev.seconds += time.perf_counter() - t0
    ev.sweeps += 1
    return ev


def restore(ev: Eviction, split: CpuSplit | None = None) -> None:
    """Give the moved threads their affinity back (the ones still alive), except other workers'
    evaluation CPUs: a thread moved off this worker's CPUs never lands on another's in its window."""
    others = (host_cpus() - split.platform - split.evaluation) if split else frozenset()
    for tid, before in ev.moved.items():
        try:
            os.sched_setaffinity(tid, (before - others) or before)
        except OSError:
            pass


def _cpuset_cgroup(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpuset" in controllers.split(",") or controllers == "":
                return path
    except (OSError, ValueError):
        pass
    return ""


def _state_dir() -> Path | None:
    d = Path(os.environ.get("ARENA_CPU_STATE_DIR", "/run/arena-cpus"))
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d if os.access(d, os.W_OK) else None
    except OSError:
        return None


def _record(ev: Eviction) -> Path | None:
    """What this window moved, on disk, so that a harness killed mid-window (no `finally`) does not
    leave host threads off the evaluation CPUs for good: the next window puts them back."""
    import json
    d = _state_dir()
    if d is None:
        return None
    path = d / f"evicted-{os.getpid()}-{threading.get_ident()}.json"
    path.write_text(json.dumps({str(t): sorted(b) for t, b in ev.moved.items()}))
    return path


def recover_abandoned() -> int:
    """Restore the threads moved by windows whose harness died before restoring them."""
    import json
    d = _state_dir()
    n = 0
    for path in (d.glob("evicted-*.json") if d else ()):
        try:
            owner = int(path.name.split("-")[1])
            os.kill(owner, 0)
            continue                      # still running: its own `finally` restores
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        try:
            moved = json.loads(path.read_text())
        except (OSError, ValueError):
            moved = {}
        for tid, before in moved.items():
            try:
                os.sched_setaffinity(int(tid), set(before))
                n += 1
            except OSError:
                pass
        path.unlink(missing_ok=True)
    return n


def data_path_pids(container_pid: int | None) -> set[int]:
    """The host processes every output byte of an evaluation passes through on the platform CPUs:
    this harness, the container's shim (its parent), containerd and dockerd (docker attach)."""
    pids = {os.getpid()}
    if container_pid:
        try:
            ppid = int(Path(f"/proc/{container_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid > 1:
                pids.add(ppid)
        except (OSError, ValueError, IndexError):
            pass
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() in ("dockerd", "containerd"):
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


def boost(pids: set[int], nice: int) -> dict[int, int]:
    """Give every thread of `pids` the nice value `nice` (lower: first in line on the platform CPUs,
    so that a busy platform CPU does not delay the evaluation's data path); returns the old values."""
    old: dict[int, int] = {}
    for pid in pids:
        try:
            tids = _threads(pid)
        except OSError:
            continue
        for tid in tids:
            try:
                before = os.getpriority(os.PRIO_PROCESS, tid)
                if before > nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
                    old[tid] = before
            except OSError:
                pass
    return old


def unboost(old: dict[int, int]) -> None:
    for tid, nice in old.items():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass


@contextmanager
def exclusive(split: CpuSplit, keep_pids: set[int] = frozenset(),
              keep_cgroup: str | None = None, data_path: set[int] = frozenset()) -> Iterator[Eviction | None]:
    """The evaluation CPUs belong to the evaluation alone inside this block (None: isolation off);
    the `data_path` processes (data_path_pids) run at DATA_PATH_NICE meanwhile."""
    if not isolation_enabled():
        yield None
        return
    recover_abandoned()
    ev = evict(split, keep_pids, keep_cgroup)
    record = _record(ev)
    boosted = boost(set(data_path), DATA_PATH_NICE) if data_path and DATA_PATH_NICE is not None else {}
    ev.boosted_threads = len(boosted)
    stop = threading.Event()

    def sweep_new() -> None:     # processes started during the window (a new container, a build)
        while not stop.wait(SWEEP_S):
            evict(split, keep_pids, keep_cgroup, into=ev, only_new=True)

    sweeper = threading.Thread(target=sweep_new, daemon=True, name="cpu-evict")
    sweeper.start()
    try:
        yield ev
    finally:
        stop.set()
        sweeper.join()
        unboost(boosted)
        restore(ev, split)
        if record is not None:
            record.unlink(missing_ok=True)
