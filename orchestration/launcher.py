"""The fleet's run launcher: Dagster's CeleryRunLauncher, with a cancel that ends CANCELED and a
health check that notices a lost worker.

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

from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from orchestration.fleet import worker_lost_grace_s


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
