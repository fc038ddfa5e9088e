"""Real CPU hogs for the interference tests: plain host processes spinning in a loop."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

from sandbox import cpus

SPIN = "while True: pass"


@contextmanager
def hog(cpu: int | None = None, unmovable: bool = False):
    """A spinning process: pinned to `cpu` (affinity) or free to land anywhere (None). `unmovable`
    puts it into the evaluation cpuset cgroup, so that `cpus.exclusive` cannot move it off (like a
    kernel thread, or another container pinned to the same CPU); without that cgroup (no isolation
    on this host) the pin alone does it, and the caller runs with ARENA_CPU_ISOLATION=off."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        if unmovable:
            d = cpus.group_dir(cpus.EVAL_GROUP)
            if d is not None:
                (d / "cgroup.procs").write_text(str(proc.pid))
        yield proc
    finally:
        proc.kill()
        proc.wait()


def eval_cpu() -> int:
    return min(cpus.CpuSplit.of().evaluation)


def isolation_available() -> bool:
    return cpus.isolation_enabled() and cpus.group_dir(cpus.EVAL_GROUP) is not None and os.geteuid() == 0
