"""Fleet mode: the Dagster instance, run launcher and Celery settings shared by the control host
and every worker host.

Embedded mode (the default, `make demo`) runs everything on one host: SQLite under DAGSTER_HOME and
Dagster's default run launcher. Fleet mode (ARENA_DAGSTER_MODE=fleet) puts Dagster's storage in
PostgreSQL, sends each run to a Celery worker of its pool over Redis (CeleryRunLauncher), keeps
priorities and per-pool limits in the QueuedRunCoordinator (the broker only routes), and stores
run outputs and compute logs in S3 so that any host can read them.
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from lake.vocabulary import TAG_QUEUE

#: Runs that need no device (the leaderboard) go to this Celery queue, served by the control worker.
CONTROL_QUEUE = "control"
#: Dagster's run tags read by the Celery launcher and by run monitoring / retries.
TAG_CELERY_QUEUE = "dagster-celery/queue"
TAG_MAX_RUNTIME = "dagster/max_runtime"
TAG_RETRY_STRATEGY = "dagster/retry_strategy"
#: Seconds a run may take beyond its challenge's build + load + run limits (scoring, telemetry, lake).
RUNTIME_MARGIN_S = 300.0


def mode() -> str:
    value = os.environ.get("ARENA_DAGSTER_MODE", "embedded").strip().lower()
    if value not in ("embedded", "fleet"):
        raise ValueError(f"ARENA_DAGSTER_MODE={value!r}: must be embedded or fleet")
    return value


def redis_url() -> str:
    return os.environ.get("ARENA_REDIS_URL", "redis://127.0.0.1:6379/0")


def run_retries() -> int:
    """How often a run that failed for a platform reason is retried (ARENA_RUN_RETRIES, default 1)."""
    return int(os.environ.get("ARENA_RUN_RETRIES", "1"))


def io_url() -> str | None:
    """s3://bucket/prefix for Dagster's run outputs and compute logs (ARENA_DAGSTER_IO_URL)."""
    return os.environ.get("ARENA_DAGSTER_IO_URL") or None


def s3_endpoint_url() -> str | None:
    """An S3-compatible endpoint (a moto server in tests and the fleet demo); unset means AWS."""
    return os.environ.get("ARENA_S3_ENDPOINT_URL") or None


def worker_lost_grace_s() -> float:
    """How long a started run's Celery task may be missing from every live worker before the run is
    failed as lost (ARENA_WORKER_LOST_GRACE_S)."""
    return float(os.environ.get("ARENA_WORKER_LOST_GRACE_S", "10"))


# -- run limits ------------------------------------------------------------------------------------
def max_runtime_s(challenge: str) -> float:
    """Every run can end: the challenge's build, load and run limits plus a margin (dagster/max_runtime)."""
    import tomllib
    from challenges import CHALLENGES_ROOT, SPEC_FILE
    from sandbox.config import SandboxSettings
    defaults = SandboxSettings.from_env()
    spec = CHALLENGES_ROOT / challenge / SPEC_FILE
    # only the [limits] table: this must work for any challenge the sensor meets, whatever its model
    limits = tomllib.loads(spec.read_text()).get("limits", {}) if spec.exists() else {}
    return (float(limits.get("build_timeout_s", defaults.build_timeout_s))
            + float(limits.get("load_timeout_s", defaults.load_timeout_s))
            + float(limits.get("run_timeout_s", defaults.run_timeout_s)) + RUNTIME_MARGIN_S)


def visibility_timeout_s() -> int:
    """Redis re-delivers an unacknowledged task after this long: longer than the longest run."""
    from challenges import challenge_names
    return int(max([max_runtime_s(n) for n in challenge_names()] + [3600]) + 600)


def evaluation_tags(queue: str, challenge: str | None) -> dict[str, str]:
    """Tags of an evaluation run beside its queue and priority: the Celery queue of its pool, its
    maximum runtime, and a retry strategy that rebuilds on the new host."""
    tags = {TAG_CELERY_QUEUE: queue, TAG_RETRY_STRATEGY: "ALL_STEPS"}
    if challenge:
        tags[TAG_MAX_RUNTIME] = str(int(max_runtime_s(challenge)))
    return tags


# -- Celery ----------------------------------------------------------------------------------------
def celery_config() -> dict:
    """The one Celery configuration, written into dagster.yaml for the launcher and loaded by every
    worker (orchestration/worker.py): both ends must agree."""
    from dagster_celery.defaults import broker_transport_options
    visibility = visibility_timeout_s()
    return {
        "worker_prefetch_multiplier": 1,          # a worker reserves no run it cannot start now
        "task_acks_late": True,                   # a run's message is acknowledged when it ends ...
        "task_reject_on_worker_lost": True,       # ... and given back if its process dies
        "broker_transport_options": dict(broker_transport_options, visibility_timeout=visibility),
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "task_default_priority": 5,
        "task_default_queue": CONTROL_QUEUE,
        "result_expires": 7 * 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": True,
    }


def celery_app_args() -> dict:
    from dagster_celery.config import DEFAULT_CONFIG
    return {"broker": redis_url(), "backend": redis_url(), "include": [],
            "config_source": dict(DEFAULT_CONFIG, **celery_config()), "task_default_queue": CONTROL_QUEUE}


# -- dagster.yaml ----------------------------------------------------------------------------------
def postgres_block() -> dict:
    """Dagster storage in PostgreSQL: the URL without its password; the password is an env
    reference (ARENA_DAGSTER_POSTGRES_PASSWORD), never written to the file."""
    url = os.environ.get("ARENA_DAGSTER_POSTGRES_URL")
    if not url:
        raise ValueError("fleet mode needs ARENA_DAGSTER_POSTGRES_URL (postgresql://USER@HOST:PORT/DB)")
    parts = urlsplit(url)
    if parts.password:
        raise ValueError("ARENA_DAGSTER_POSTGRES_URL must not contain a password: "
                         "set ARENA_DAGSTER_POSTGRES_PASSWORD instead")
    db = {"username": unquote(parts.username or "postgres"), "hostname": parts.hostname or "127.0.0.1",
          "port": parts.port or 5432, "db_name": parts.path.lstrip("/") or "dagster",
          "scheme": "postgresql+psycopg2"}   # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3
    if os.environ.get("ARENA_DAGSTER_POSTGRES_PASSWORD"):
        db["password"] = {"env": "ARENA_DAGSTER_POSTGRES_PASSWORD"}
    return {"postgres": {"postgres_db": db}}


#: The sensor daemon, embedded and fleet alike: sensors tick in threads, and a tick's run requests are
#: created and submitted 4 at a time. Run creation, not the sensor, is what a burst of uploads waits on
#: (about 26 storage calls a run on PostgreSQL): 1.58 s a run one at a time, 1.19 s with 4 submit
#: workers, measured by benchmarks/queue_load.py (README "Faults and recovery").
SENSOR_DAEMON = {"use_threads": True, "num_workers": 4, "num_submit_workers": 4}


def fleet_instance_config(limits: dict[str, int]) -> dict:
    """dagster.yaml of fleet mode, identical on the control host and every worker host."""
    launcher_args = celery_app_args()
    config = {
        "storage": postgres_block(),
        "run_coordinator": {
            "module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": sum(limits.values()) + 2, "dequeue_interval_seconds": 1,
                       "tag_concurrency_limits": [{"key": TAG_QUEUE, "value": pool, "limit": n}
                                                  for pool, n in sorted(limits.items())]}},
        "run_launcher": {
            "module": "orchestration.launcher", "class": "ArenaCeleryRunLauncher",
            "config": {"broker": {"env": "ARENA_REDIS_URL"}, "backend": {"env": "ARENA_REDIS_URL"},
                       "default_queue": CONTROL_QUEUE, "config_source": launcher_args["config_source"]}},
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "max_resume_run_attempts": 0,
                           "poll_interval_seconds": 3, "cancel_timeout_seconds": 120},
        "run_retries": {"enabled": True, "max_retries": run_retries(),
                        "retry_on_asset_or_op_failure": True},
        "telemetry": {"enabled": False},
        "sensors": dict(SENSOR_DAEMON),
    }
    if (url := io_url()) and url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        logs = {"bucket": bucket, "prefix": f"{prefix.strip('/') + '/' if prefix.strip('/') else ''}compute-logs",
                "skip_empty_files": True, "upload_interval": 5}
        if s3_endpoint_url():
            logs["endpoint_url"] = s3_endpoint_url()
        config["compute_logs"] = {"module": "dagster_aws.s3.compute_log_manager",
                                  "class": "S3ComputeLogManager", "config": logs}
    return config


def io_manager_resources() -> dict:
    """Dagster's IO manager in fleet mode: run outputs in S3, readable from any host."""
    url = io_url()
    if mode() != "fleet" or not url:
        return {}
    if not url.startswith("s3://"):
        raise ValueError(f"ARENA_DAGSTER_IO_URL={url!r}: fleet mode needs s3://BUCKET/PREFIX")
    from dagster_aws.s3 import S3PickleIOManager, S3Resource
    bucket, _, prefix = url[5:].partition("/")
    s3 = S3Resource(endpoint_url=s3_endpoint_url()) if s3_endpoint_url() else S3Resource()
    return {"io_manager": S3PickleIOManager(s3_resource=s3, s3_bucket=bucket,
                                            s3_prefix=(prefix.strip("/") or "dagster") + "/io")}
