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


def test_a_run_whose_embedded_run_worker_was_killed_fails_at_once_and_is_retried(tmp_path, monkeypatch):
    """Embedded mode: run monitoring asks ArenaDefaultRunLauncher about a STARTED run; while the run's
    process (a real one, reported the way Dagster's run worker reports itself) lives, the run stays;
    once it is SIGKILLed (reaped, or left a zombie) the run fails as a platform failure, retried."""
    import logging
    import signal
    import subprocess

    from dagster._core.events import EngineEventData
    from dagster._core.storage.dagster_run import RunsFilter
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from orchestration.launcher import RUN_PROCESS_EVENT, ArenaDefaultRunLauncher

    monkeypatch.delenv("ARENA_DAGSTER_MODE", raising=False)
    write_dagster_yaml(tmp_path)
    log = logging.getLogger("test")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, ArenaDefaultRunLauncher)
        for reap in (True, False):
            worker = subprocess.Popen(["sleep", "300"])
            run = _set_status(instance, instance.create_run_for_job(work), DagsterRunStatus.STARTED)
            instance.report_engine_event(f"{RUN_PROCESS_EVENT} (pid: {worker.pid}).", run,
                                         EngineEventData.in_process(worker.pid))

            def monitor():
                record = instance.get_run_records(RunsFilter(run_ids=[run.run_id]))[0]
                if record.dagster_run.status == DagsterRunStatus.STARTED:
                    monitor_started_run(instance, None, record, log)
                return instance.get_run_by_id(run.run_id)

            assert monitor().status == DagsterRunStatus.STARTED        # its process lives: left alone
            worker.send_signal(signal.SIGKILL)
            if reap:
                worker.wait()
            else:   # a zombie until its parent reaps it: dead all the same
                import time
                time.sleep(0.5)
            after = monitor()
            assert after.status == DagsterRunStatus.FAILURE, after.status
            assert will_retry(instance, after)
            failure = [e for e in instance.all_logs(run.run_id) if e.dagster_event and
                       e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
            assert failure and f"pid {worker.pid}" in failure[-1].message
            worker.wait()


def test_a_run_whose_pid_was_reused_by_a_younger_process_is_lost(tmp_path, monkeypatch):
    """The pid reported is alive but belongs to a process that started after the report: not the run's."""
    import subprocess
    import time

    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData

    from orchestration.launcher import RUN_PROCESS_EVENT

    monkeypatch.delenv("ARENA_DAGSTER_MODE", raising=False)
    write_dagster_yaml(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = _set_status(instance, instance.create_run_for_job(work), DagsterRunStatus.STARTED)
        health = instance.run_launcher.check_run_worker_health
        assert health(run).status.value == "RUNNING"                 # no process reported yet

        process = subprocess.Popen(["sleep", "60"])
        try:
            def report(pid, when):
                instance.report_dagster_event(DagsterEvent(
                    event_type_value=DagsterEventType.ENGINE_EVENT.value, job_name=run.job_name,
                    message=f"{RUN_PROCESS_EVENT} (pid: {pid}).",
                    event_specific_data=EngineEventData.in_process(pid)), run.run_id, timestamp=when)

            report(process.pid, time.time())
            assert health(run).status.value == "RUNNING"             # the process that reported itself
            report(process.pid, time.time() - 60)                   # reported a minute before it started
            assert health(run).status.value == "FAILED"
        finally:
            process.kill()
            process.wait()
