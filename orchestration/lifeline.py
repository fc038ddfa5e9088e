"""A step process never outlives the run worker that started it.

Embedded runs use Dagster's multiprocess executor: the run worker starts one subprocess per step
(the build, the evaluation). When the run worker dies (SIGKILL, the OOM killer), Dagster marks the
run failed and run retries start it again, but the step subprocess, reparented to init, went on: it
kept its container on the evaluation CPU and wrote its result beside the retry's. Each step process
that uses the sandbox therefore watches its parent, and interrupts itself the way Dagster's own
termination thread does (SIGINT to itself, which Dagster raises as an execution interrupt in the
step), so the sandbox's cleanup runs: the container is removed and the step ends.
"""
from __future__ import annotations

import os
import signal
import threading

POLL_S = 1.0
_watching: set[int] = set()     # pids (this process, after forks) that already watch their parent
_lock = threading.Lock()


def follow_parent(poll_s: float = POLL_S) -> bool:
    """Interrupt this process once its parent is gone (it was reparented). Idempotent per process;
    returns whether a watcher runs (not for a process whose parent is already init)."""
    me, parent = os.getpid(), os.getppid()
    if parent <= 1:
        return False
    with _lock:
        if me in _watching:
            return True
        _watching.add(me)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(poll_s)
        os.kill(me, signal.SIGINT)

    threading.Thread(target=watch, daemon=True, name="arena-follow-parent").start()
    return True
