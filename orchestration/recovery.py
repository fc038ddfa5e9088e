"""What `make up` does for runs the previous `make down` (or a crash) cut off.

In embedded mode every run worker is a child of the Dagster daemon's code server, so when the
platform is stopped, its running evaluations die with it, and Dagster's default launcher cannot
tell later (it has no worker health check): such a run would stay STARTED until its max_runtime.
When the platform starts again and no daemon is running, no run of this instance can be alive, so
every STARTING/STARTED run is failed as a platform failure, and Dagster's run retries start it again
(its submission is closed `failed`/`platform` only if no retry follows). Queued runs stay queued and
start once the daemon is up; a run being cancelled is marked CANCELED.

Fleet mode needs none of this: runs live on the workers, independently of the control plane.
"""
from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Fail the runs no process can still be running (call only while no daemon runs)."""
    ended = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                                                       DagsterRunStatus.CANCELING])):
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message="The platform stopped while this run was being cancelled")
        else:
            instance.report_run_failed(run, message="platform stopped during the run (make down or a crash); "
                                                    "its run worker is gone")
        ended.append(run.run_id)
    return ended
