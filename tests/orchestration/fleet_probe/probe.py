"""A code location for the fleet tests: a job that holds its worker for a while and records where
it ran (the worker's devices from its environment, the Celery worker from the run tags)."""
import json
import os
import time
from pathlib import Path

from dagster import Config, Definitions, OpExecutionContext, job, op


class HoldConfig(Config):
    seconds: float = 1.0
    record: str = ""          # a JSON-lines file every run appends its interval to


@op
def hold(context: OpExecutionContext, config: HoldConfig) -> None:
    started = time.time()
    time.sleep(config.seconds)
    if config.record:
        line = {"run_id": context.run_id, "label": context.run.tags.get("probe/label"),
                "pool": os.environ.get("ARENA_WORKER_POOL"), "devices": os.environ.get("ARENA_WORKER_DEVICES"),
                "worker": context.run.tags.get("arena/worker"), "start": started, "end": time.time()}
        with Path(config.record).open("a") as fh:
            fh.write(json.dumps(line) + "\n")


@job
def probe():
    hold()


defs = Definitions(jobs=[probe])
