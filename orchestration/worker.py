"""The Celery app of a fleet worker (`arena worker start` runs `celery -A orchestration.worker`).

It executes whole Dagster runs like dagster_celery's own app, with the fleet's Celery settings and
three additions: the run is tagged with the worker and its devices, a cancel requested in Dagster
interrupts the run (so it ends CANCELED after cleanup), and a message Redis delivers again after
its worker died never executes a run twice.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading

from dagster import DagsterInstance, DagsterRunStatus
from dagster._cli.api import _execute_run_command_body
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import unpack_value
from dagster_celery.config import TASK_EXECUTE_JOB_NAME
from dagster_celery.make_app import make_app

from lake.vocabulary import TAG_DEVICES, TAG_WORKER
from orchestration.fleet import celery_app_args
from sandbox.devices import bound

app = make_app(app_args=celery_app_args())


def _watch_for_cancel(instance: DagsterInstance, run_id: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status == DagsterRunStatus.CANCELING:
            os.kill(os.getpid(), signal.SIGINT)   # Dagster turns this into a cancelled run
            return


@app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(self, execute_job_args_packed) -> int:
    args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None:
            return 0
        if run.status in (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED):
            if run.status == DagsterRunStatus.CANCELING:
                instance.report_run_canceled(run, message="Cancelled before a worker started it")
            return 0
        if run.is_finished:
            instance.report_engine_event(f"Worker {self.request.hostname} ignored a repeated delivery "
                                         f"of this finished run", run)
            return 0
        if run.status == DagsterRunStatus.STARTED:
            # Redis gave the message back: the worker that started this run died with it.
            instance.report_run_failed(run, message=f"run worker lost: the run's task came back to "
                                                    f"{self.request.hostname} after its worker died")
            return 0
        devices = bound()
        instance.add_run_tags(run.run_id, {TAG_WORKER: self.request.hostname,
                                           TAG_DEVICES: str(devices) if devices else "none"})
        instance.report_engine_event(f"Worker {self.request.hostname} runs this on devices {devices}", run)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Celery's pool process is daemonic, and a daemonic process may not start children; the
        # run's executor starts one per step. The pool process serves this one task, then exits.
        # (billiard's authkey object cannot be pickled by multiprocessing: give it a standard one)
        process_config = multiprocessing.current_process()._config
        process_config.pop("daemon", None)
        process_config["authkey"] = multiprocessing.process.AuthenticationString(os.urandom(32))
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_for_cancel, args=(instance, run.run_id, stop), daemon=True)
        watcher.start()
        try:
            return _execute_run_command_body(instance=instance, run_id=run.run_id,
                                             write_stream_fn=lambda _event: None, set_exit_code_on_failure=True)
        finally:
            stop.set()
            watcher.join(timeout=5)
