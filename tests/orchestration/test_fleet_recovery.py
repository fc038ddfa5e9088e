"""`make up` after `make down` (or a crash) with submissions queued and running, embedded mode."""
from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, job, op
from dagster._core.storage.dagster_run import DagsterRun

from orchestration.config import write_dagster_yaml
from orchestration.recovery import fail_orphaned_runs
from orchestration.sensors import will_retry


@op
def noop():
    pass


@job
def work():
    noop()


def test_runs_cut_off_by_a_stop_fail_and_are_retried_queued_ones_stay(tmp_path, monkeypatch):
    monkeypatch.delenv("ARENA_DAGSTER_MODE", raising=False)
    write_dagster_yaml(tmp_path)       # the platform's embedded dagster.yaml: run retries on
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        runs = {}
        for status in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED,
                       DagsterRunStatus.CANCELING, DagsterRunStatus.SUCCESS):
            run = instance.create_run_for_job(work, tags={"arena/submission": status.value})
            runs[status] = _set_status(instance, run, status)
        ended = fail_orphaned_runs(instance)
        assert set(ended) == {runs[s].run_id for s in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING,
                                                       DagsterRunStatus.CANCELING)}
        after = {s: instance.get_run_by_id(r.run_id) for s, r in runs.items()}
        assert after[DagsterRunStatus.STARTED].status == DagsterRunStatus.FAILURE
        assert after[DagsterRunStatus.STARTING].status == DagsterRunStatus.FAILURE
        assert after[DagsterRunStatus.CANCELING].status == DagsterRunStatus.CANCELED
        assert after[DagsterRunStatus.NOT_STARTED].status == DagsterRunStatus.NOT_STARTED   # never launched: untouched
        assert after[DagsterRunStatus.SUCCESS].status == DagsterRunStatus.SUCCESS
        assert will_retry(instance, after[DagsterRunStatus.STARTED])               # a platform failure: retried
        assert fail_orphaned_runs(instance) == []                                   # idempotent


def _set_status(instance, run: DagsterRun, status: DagsterRunStatus) -> DagsterRun:
    """The run as the stop left it (its status as stored, with no process behind it)."""
    updated = run.with_status(status)
    instance.run_storage.delete_run(run.run_id)
    instance.run_storage.add_run(updated)
    return updated
