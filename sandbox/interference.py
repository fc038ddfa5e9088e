"""What else ran on the evaluation CPUs during each timed run, measured from the host, and the
re-measure policy built on it (README "Exclusive CPUs, interference and re-measurement").

For a window [before, after] and the evaluation CPUs E:
- busy: /proc/stat time of E not idle, iowait or steal (user+nice+system+irq+softirq);
- own: the evaluation container's CPU time on E (cgroup v1 cpuacct.usage_percpu; v2 cpu.stat
  usage_usec, the container being pinned to E);
- foreign_fraction = max(0, busy - own) / (wall x |E|): the share of the evaluation CPUs that went to
  anything else (other processes, other containers, interrupts);
- steal_fraction = steal(E) / (wall x |E|): time the hypervisor gave to someone else;
- throttled_ns / nr_throttled: the container's own CFS quota throttling (cpu.stat), recorded, not
  counted as interference.

A run whose foreign_fraction + steal_fraction exceeds the threshold is disturbed and measured again,
up to max_remeasures times; still disturbed at the limit, the evaluation's measurement is invalid.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from sandbox import cpus as cpus_mod
from sandbox.cpus import CGROUP_ROOT, CpuSplit

T = TypeVar("T")
USER_HZ = os.sysconf("SC_CLK_TCK")
#: Default disturbance threshold (foreign + steal share of the evaluation CPUs). A CPU-bound decoder
#: loses about the share of its CPU that others take. The floor measured under isolation on the
#: 2-CPU development VM, with a spinning container alone on the evaluation CPU and the host at load
#: ~10, was 4.2-4.6% (kernel workers, interrupts and 250 Hz tick sampling against the cgroup's exact
#: time); a threshold under the floor would re-measure every run. README: "Exclusive CPUs".
DEFAULT_THRESHOLD = 0.05
DEFAULT_MAX_REMEASURES = 2


@dataclass(frozen=True)
class InterferencePolicy:
    threshold: float = DEFAULT_THRESHOLD
    max_remeasures: int = DEFAULT_MAX_REMEASURES

    @classmethod
    def from_env(cls) -> "InterferencePolicy":
        return cls(float(os.environ.get("ARENA_INTERFERENCE_THRESHOLD", DEFAULT_THRESHOLD)),
                   int(os.environ.get("ARENA_INTERFERENCE_MAX_REMEASURES", DEFAULT_MAX_REMEASURES)))


@dataclass(frozen=True)
class Snapshot:
    t_ns: int
    busy_ns: int
    steal_ns: int
    own_ns: int | None            # the container's CPU time on the evaluation CPUs
    nr_throttled: int | None
    throttled_ns: int | None
    loadavg: float


def _proc_stat(cpus: frozenset[int]) -> tuple[int, int]:
    busy = steal = 0
    scale = 10**9 // USER_HZ
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            if int(name[3:]) not in cpus:
                continue
            v = [int(x) for x in vals] + [0] * 10
            user, nice, system, _idle, _iowait, irq, softirq, st = v[:8]
            busy += (user + nice + system + irq + softirq) * scale
            steal += st * scale
    return busy, steal


def container_cgroups(pid: int) -> dict[str, Path]:
    """The cgroup directories of a process: {'cpuacct': ..., 'cpu': ...} (v1) or {'unified': ...}."""
    out: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            if c in ("cpu", "cpuacct"):
                out[c] = CGROUP_ROOT / c / path.lstrip("/")
        if controllers == "" and (CGROUP_ROOT / "cgroup.controllers").exists():
            out["unified"] = CGROUP_ROOT / path.lstrip("/")
    return out


def _read_kv(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}
    except (OSError, ValueError):
        return {}


class InterferenceMonitor:
    """Snapshots of the evaluation CPUs and (optionally) one container's cgroup."""

    def __init__(self, eval_cpus: frozenset[int], cgroups: dict[str, Path] | None = None):
        self.cpus = frozenset(eval_cpus)
        self.cgroups = cgroups or {}

    @classmethod
    def for_pid(cls, eval_cpus: frozenset[int], pid: int | None) -> "InterferenceMonitor":
        try:
            return cls(eval_cpus, container_cgroups(pid) if pid else None)
        except OSError:
            return cls(eval_cpus)

    def _own(self) -> tuple[int | None, int | None, int | None]:
        own = nr = thr = None
        if "cpuacct" in self.cgroups:
            try:
                per = [int(x) for x in (self.cgroups["cpuacct"] / "cpuacct.usage_percpu").read_text().split()]
                own = sum(v for i, v in enumerate(per) if i in self.cpus)
            except (OSError, ValueError):
                pass
        if "cpu" in self.cgroups:
            st = _read_kv(self.cgroups["cpu"] / "cpu.stat")
            nr, thr = st.get("nr_throttled"), st.get("throttled_time")
        if "unified" in self.cgroups:
            st = _read_kv(self.cgroups["unified"] / "cpu.stat")
            if "usage_usec" in st:
                own = st["usage_usec"] * 1000
            nr = st.get("nr_throttled")
            thr = st["throttled_usec"] * 1000 if "throttled_usec" in st else None
        return own, nr, thr

    def snapshot(self) -> Snapshot:
        own, nr, thr = self._own()
        busy, steal = _proc_stat(self.cpus)
        return Snapshot(time.monotonic_ns(), busy, steal, own, nr, thr, os.getloadavg()[0])

    def figures(self, a: Snapshot, b: Snapshot) -> dict:
        capacity = max(b.t_ns - a.t_ns, 1) * len(self.cpus)
        own = (b.own_ns - a.own_ns) if a.own_ns is not None and b.own_ns is not None else 0
        foreign = max(0, (b.busy_ns - a.busy_ns) - own)
        diff = lambda x, y: (y - x) if x is not None and y is not None else None   # noqa: E731
        return {
            "seconds": round((b.t_ns - a.t_ns) / 1e9, 4),
            "foreign_fraction": round(foreign / capacity, 5),
            "steal_fraction": round((b.steal_ns - a.steal_ns) / capacity, 5),
            "busy_fraction": round((b.busy_ns - a.busy_ns) / capacity, 5),
            "own_fraction": round(own / capacity, 5) if a.own_ns is not None else None,
            "throttled_ns": diff(a.throttled_ns, b.throttled_ns),
            "nr_throttled": diff(a.nr_throttled, b.nr_throttled),
            "host_load_1m": round(b.loadavg, 2),
        }


@dataclass
class TimedRunGuard:
    """Runs each timed run inside `cpus.exclusive`, measures it, and re-measures a disturbed one.

    `run(label, fn)` calls `fn(label)` (one timed run) and returns what the last attempt returned;
    `report()` is the result's `measurement.interference`."""
    policy: InterferencePolicy
    split: CpuSplit
    monitor: InterferenceMonitor
    keep_cgroup: str | None = None          # the evaluation container's id: its threads stay
    container_pid: int | None = None
    on_log: Callable[[str], None] = lambda line: None
    runs: list[dict] = field(default_factory=list)
    remeasured: int = 0
    disturbed: bool = False                 # a timed run was still disturbed at the limit

    @classmethod
    def for_container(cls, cpuset: str | None, container_id: str | None, container_pid: int | None,
                      policy: InterferencePolicy | None = None, on_log=lambda line: None) -> "TimedRunGuard":
        split = CpuSplit.of(cpuset)
        return cls(policy or InterferencePolicy.from_env(), split,
                   InterferenceMonitor.for_pid(split.evaluation, container_pid), container_id, container_pid, on_log)

    def measure(self, label: str, fn: Callable[[str], T]) -> tuple[T, dict]:
        with cpus_mod.exclusive(self.split, keep_cgroup=self.keep_cgroup,
                                data_path=cpus_mod.data_path_pids(self.container_pid)) as eviction:
            before = self.monitor.snapshot()
            value = fn(label)
            after = self.monitor.snapshot()
        entry = {"label": label, **self.monitor.figures(before, after),
                 "eviction": eviction.as_dict() if eviction is not None else None}
        entry["disturbed"] = entry["foreign_fraction"] + entry["steal_fraction"] > self.policy.threshold
        self.runs.append(entry)
        return value, entry

    def run(self, label: str, fn: Callable[[str], T], aborted: Callable[[], bool] = lambda: False) -> T:
        for attempt in range(self.policy.max_remeasures + 1):
            value, entry = self.measure(label if attempt == 0 else f"{label}-remeasure-{attempt}", fn)
            if not entry["disturbed"] or aborted():
                return value
            what = (f"foreign {entry['foreign_fraction']:.1%} + steal {entry['steal_fraction']:.1%} of the "
                    f"evaluation CPUs, threshold {self.policy.threshold:.1%}")
            if attempt == self.policy.max_remeasures:
                self.disturbed = True
                self.on_log(f"[arena] {entry['label']} disturbed ({what}); re-measure limit "
                            f"{self.policy.max_remeasures} reached: measurement invalid")
                return value
            self.remeasured += 1
            self.on_log(f"[arena] {entry['label']} disturbed ({what}); re-measuring")
        raise AssertionError("unreachable")

    def report(self) -> dict:
        return {"threshold": self.policy.threshold, "max_remeasures": self.policy.max_remeasures,
                "remeasured": self.remeasured, "disturbed": self.disturbed,
                "isolation": cpus_mod.state(self.split), "runs": self.runs}
