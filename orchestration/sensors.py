"""Sensors: intake markers -> one run per submission; finished runs -> leaderboard; broken runs ->
a terminal status, so no accepted submission is left without one."""

import functools
import os

from dagster import (DagsterRunStatus, RunRequest, SensorEvaluationContext, SensorResult,
                     DefaultSensorStatus, RunFailureSensorContext, RunStatusSensorContext,
                     run_failure_sensor, run_status_sensor, sensor)
from ulid import ULID

from lake.bucket import Bucket
from lake.config import StorageSettings
from orchestration.assets import submissions_partitions
from orchestration.jobs import evaluate_submission, refresh_leaderboard
from dagster._core.storage.tags import RETRY_NUMBER_TAG, WILL_RETRY_TAG
from lake.vocabulary import TAG_PRIORITY, TAG_QUEUE, TAG_RERUN, TAG_SUBMISSION, TAG_WORKER, is_terminal
from orchestration.fleet import CONTROL_QUEUE, TAG_CELERY_QUEUE, evaluation_tags

#: Operator reruns jump the queue; quick checks could use a value in between.
RERUN_PRIORITY = 10


def lookback_s() -> float:
    """How far behind the newest marker seen the sensor keeps listing (ARENA_SENSOR_LOOKBACK_S)."""
    return float(os.environ.get("ARENA_SENSOR_LOOKBACK_S", str(24 * 3600)))


def max_runs_per_tick() -> int:
    """At most this many new submissions become runs per tick (ARENA_SENSOR_MAX_RUNS_PER_TICK); the
    rest wait for the next tick, oldest first. The daemon creates and queues every requested run inside
    the tick (tens of PostgreSQL round trips each), so an unbounded tick after a burst of uploads would
    hold the sensor daemon for minutes, and the other sensors with it."""
    return max(1, int(os.environ.get("ARENA_SENSOR_MAX_RUNS_PER_TICK", "100")))


def listing_floor(cursor: str | None) -> str:
    """The smallest submission id worth listing: a window behind the newest id seen. Ids are ULIDs,
    so this is a time bound; a late marker inside the window is still new."""
    if not cursor:
        return ""
    newest_ms = ULID.from_str(cursor).milliseconds
    return str(ULID.from_timestamp(max(newest_ms / 1000 - lookback_s(), 0)))[:10]


def run_tags(sid: str, queue: str, priority: int, challenge: str | None = None,
             pool_tags=evaluation_tags) -> dict[str, str]:
    """A run's priority and pool, plus (fleet.evaluation_tags, or ``pool_tags``: the same, memoised) the
    Celery queue of the pool, the challenge's maximum runtime and the retry strategy: identical in
    embedded and fleet mode."""
    return {TAG_PRIORITY: str(priority), TAG_QUEUE: queue, TAG_SUBMISSION: sid} | pool_tags(queue, challenge)


@sensor(job=evaluate_submission, minimum_interval_seconds=2, default_status=DefaultSensorStatus.RUNNING,
        description="One run per committed intake marker; every marker without a partition is new.")
def intake_sensor(context: SensorEvaluationContext) -> SensorResult:
    bucket = Bucket(StorageSettings.from_env().bucket)
    known = set(context.instance.get_dynamic_partitions(submissions_partitions.name))
    # The cursor only bounds how far back to list: a late marker (slow upload, second replica) has an
    # id older than newer ones, so list a window behind the newest id seen rather than after it. The
    # listing starts after that id (S3 StartAfter), and only markers without a partition are read.
    # At most the cap of unseen markers, oldest first; the listing stops there (a backlog is not listed
    # whole on every tick). newest_listed is None when it was cut.
    unseen, newest_listed = bucket.unseen_marker_keys(listing_floor(context.cursor), known, max_runs_per_tick())
    new = bucket.read_markers_parallel(unseen)
    # a pool's and challenge's tags (the challenge's limits, read from its spec) once per tick, not once
    # per run: 10,000 new markers took 43 s of TOML parsing in one tick
    pool_tags = functools.cache(evaluation_tags)
    requests = [RunRequest(run_key=m.id, partition_key=m.id,
                           tags=run_tags(m.id, m.queue, m.priority, m.challenge, pool_tags))
                for m in new]
    for rerun in bucket.reruns():
        marker = bucket.marker(rerun["id"])
        if marker is not None and marker.id in known:
            requests.append(RunRequest(run_key=rerun["key"], partition_key=marker.id,
                                       tags=run_tags(marker.id, marker.queue, RERUN_PRIORITY, marker.challenge)
                                       | {TAG_RERUN: rerun["key"]}))
    # Capped: the cursor stops at the newest id requested, so the listing floor stays behind every marker
    # left for the next tick (they sort after it).
    seen = [bucket.id_of(k) for k in unseen] if newest_listed is None else [newest_listed]
    newest = max(seen + ([context.cursor] if context.cursor else []), default=None)
    return SensorResult(
        run_requests=requests, cursor=newest,
        dynamic_partitions_requests=[submissions_partitions.build_add_request([m.id for m in new])] if new else [],
    )


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[evaluate_submission],
                   request_job=refresh_leaderboard, minimum_interval_seconds=2,
                   default_status=DefaultSensorStatus.RUNNING,
                   description="Rebuild the leaderboard after every finished evaluation.")
def leaderboard_sensor(context: RunStatusSensorContext):
    return RunRequest(run_key=f"leaderboard-after-{context.dagster_run.run_id}",
                      tags={TAG_PRIORITY: "5", TAG_CELERY_QUEUE: CONTROL_QUEUE})


@run_failure_sensor(monitored_jobs=[evaluate_submission], minimum_interval_seconds=2,
                    default_status=DefaultSensorStatus.RUNNING,
                    description="A run that broke (platform error) still gives its submission a terminal status.")
def platform_failure_sensor(context: RunFailureSensorContext) -> None:
    message = context.failure_event.message or "run failed"
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    sid = run.tags.get(TAG_SUBMISSION)
    if will_retry(context.instance, run):
        note_retry(sid, run, message)
        return
    attempts = int(run.tags.get(RETRY_NUMBER_TAG, "0")) + 1
    close_unfinished(sid, f"platform error after {attempts} attempt(s): {message[:500]}")


def will_retry(instance, run) -> bool:
    """Whether Dagster's run retries start this failed run again (every run failure here is a
    platform failure: a participant's failure ends as data in a successful run)."""
    from dagster._core.execution.retries import auto_reexecution_should_retry_run
    if (tag := run.tags.get(WILL_RETRY_TAG)) is not None:
        return tag == "true"
    return instance.run_retries_enabled and auto_reexecution_should_retry_run(instance, run, None)


def note_retry(sid: str | None, run, message: str) -> None:
    """A retried run leaves its submission active; its run log says why it starts again."""
    if not sid:
        return
    bucket = Bucket(StorageSettings.from_env().bucket)
    bucket.append_log(sid, "run", f"[arena] platform failure on {run.tags.get(TAG_WORKER, 'this host')}, "
                                  f"retried automatically: {message[:300]}")


@run_status_sensor(run_status=DagsterRunStatus.CANCELED, monitored_jobs=[evaluate_submission],
                   minimum_interval_seconds=2, default_status=DefaultSensorStatus.RUNNING,
                   description="A run an operator cancelled still gives its submission a terminal status.")
def cancelled_run_sensor(context: RunStatusSensorContext) -> None:
    close_unfinished(context.dagster_run.tags.get(TAG_SUBMISSION),
                     f"run {context.dagster_run.run_id} was cancelled by an operator")


def close_unfinished(sid: str | None, why: str) -> None:
    """Give a submission whose run ended abnormally the terminal status failed/platform."""
    if not sid:
        return
    bucket = Bucket(StorageSettings.from_env().bucket)
    if not is_terminal((bucket.status(sid) or {}).get("status")):
        bucket.set_status(sid, "failed", "platform",
                          detail=f"{why} (an operator can rerun it with `arena admin rerun {sid}`)")
