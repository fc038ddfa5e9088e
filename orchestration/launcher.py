"""The run launchers: embedded mode's (Dagster's DefaultRunLauncher with a health check), and the
fleet's (Dagster's CeleryRunLauncher, with a cancel that ends CANCELED and a health check that notices
a lost worker).

- Embedded, run worker killed: the DefaultRunLauncher has no health check, so a run whose process
  was SIGKILLed stayed STARTED until its `dagster/max_runtime`. ArenaDefaultRunLauncher reads the run
  process's pid from the run's own "Started process for run (pid: N)" event and, when that process
  is gone (or a zombie, or the pid now belongs to a younger process), run monitoring fails the run at
  once as a platform failure, which run retries start again. Embedded mode is one host, so the pid is
  on the daemon's host.

- Cancel: Celery's revoke(terminate=True) kills the run's process, and the run ends FAILURE. Here
  the run is marked CANCELING, a task not started yet is revoked, and the worker's own cancel watcher
  (orchestration/worker.py) interrupts the run, which ends CANCELED after the sandbox cleaned up.
- Lost worker: a worker host that dies leaves its run STARTED and its Celery task STARTED forever.
  Run monitoring calls `check_run_worker_health`; a started run whose task is active on no live
  worker for ARENA_WORKER_LOST_GRACE_S is reported FAILED, so Dagster's run retries start it again
  on another worker of its pool.
"""
from __future__ import annotations

import time

import os
from pathlib import Path

from dagster import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from orchestration.fleet import worker_lost_grace_s


RUN_PROCESS_EVENT = "Started process for run"


def run_process(instance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was reported) of the run's worker process, from the run's engine events."""
    for record in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        if not record.message.startswith(RUN_PROCESS_EVENT):
            continue
        metadata = record.dagster_event.engine_event_data.metadata if record.dagster_event else {}
        if "pid" in metadata:
            return int(metadata["pid"].value), record.timestamp
    return None


def process_started_at(pid: int) -> float | None:
    """Epoch seconds the live process `pid` started at; None when there is none (or only a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()     # after "pid (comm) ": state is field 3
    if fields[0] in ("Z", "X"):
        return None
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class ArenaDefaultRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        found = run_process(self._instance, run.run_id)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run process reported yet")
        pid, reported_at = found
        started = process_started_at(pid)
        # the process reports its own pid, so it started before its report; a younger one reused the pid
        if started is not None and started <= reported_at + 2.0:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker lost: its process (pid {pid}) is gone (platform failure; retried)")


class ArenaCeleryRunLauncher(CeleryRunLauncher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._missing_since: dict[str, float] = {}

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run, message="Cancel requested: the worker interrupts the run")
        if task_id := run.tags.get(DAGSTER_CELERY_TASK_ID_TAG):
            # a task still waiting in the broker never starts; a started one is interrupted by its worker
            self.celery.control.revoke(task_id)
        return True

    def active_task_ids(self) -> set[str] | None:
        """Ids of the tasks every live worker is executing; None when no worker answered."""
        try:
            replies = self.celery.control.inspect(timeout=2.0).active()
        except Exception:
            return None
        if not replies:
            return None
        return {task["id"] for tasks in replies.values() for task in tasks or []}

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if not task_id:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no Celery task id yet")
        state = self.celery.AsyncResult(task_id).state
        if state == "SUCCESS":
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        if state == "FAILURE":
            return CheckRunHealthResult(WorkerStatus.FAILED, "Celery task failed.")
        active = self.active_task_ids()
        if active is not None and task_id in active:
            self._missing_since.pop(run.run_id, None)
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        first = self._missing_since.setdefault(run.run_id, time.monotonic())
        missing = time.monotonic() - first
        if missing < worker_lost_grace_s():
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"task {task_id} not seen on a worker for {missing:.0f} s")
        self._missing_since.pop(run.run_id, None)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"worker lost: Celery task {task_id} (state {state}) has been active on no live worker for "
            f"{missing:.0f} s (platform failure; retried on another worker)")
