"""Orchestration settings: queues, devices, Dagster home (environment, embedded defaults)."""
from __future__ import annotations

import os
from pathlib import Path

from lake.config import arena_home
from lake.vocabulary import TAG_QUEUE
from orchestration import fleet

#: Devices per run queue: the tag-concurrency limit of each `arena/queue` value in dagster.yaml.
#: ARENA_QUEUES="cpu=1,gpu-h100=8" overrides.
DEFAULT_QUEUES = {"cpu": 1}


def queues() -> dict[str, int]:
    raw = os.environ.get("ARENA_QUEUES", "")
    if not raw:
        return dict(DEFAULT_QUEUES)
    out = {}
    for item in raw.split(","):
        name, _, count = item.partition("=")
        out[name.strip()] = int(count or 1)
    return out


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", str(arena_home() / "dagster"))).resolve()


DAGSTER_POSTGRES_URL_ENV = "ARENA_DAGSTER_POSTGRES_URL"


def dagster_postgres_url() -> str | None:
    """Dagster's own storage in PostgreSQL (production); unset means SQLite under DAGSTER_HOME.
    The driver is pinned to psycopg2 in the environment the Dagster processes inherit: SQLAlchemy 2.1
    maps a plain ``postgresql://`` to psycopg 3, and dagster-postgres' event log then fails at
    ``NOTIFY run_events, $1``."""
    url = os.environ.get(DAGSTER_POSTGRES_URL_ENV) or None
    if url:
        scheme, sep, rest = url.partition("://")
        if sep and scheme in ("postgres", "postgresql", "postgresql+psycopg"):
            url = os.environ[DAGSTER_POSTGRES_URL_ENV] = f"postgresql+psycopg2://{rest}"
    return url


def write_dagster_yaml(home: Path | None = None) -> Path:
    """dagster.yaml with the QueuedRunCoordinator: one concurrent run per device of each queue.
    ARENA_DAGSTER_MODE=fleet writes the fleet's instance instead (fleet_dagster_yaml)."""
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if fleet.mode() == "fleet":
        return _write_if_changed(home / "dagster.yaml", fleet_dagster_yaml())
    limits = "\n".join(f"      - key: {TAG_QUEUE}\n        value: {name}\n        limit: {count}"
                       for name, count in queues().items())
    storage = ""
    if dagster_postgres_url():
        # An `env:` reference: Dagster reads the URL (and its password) from the environment of each of
        # its processes; the password is never written into this file.
        storage = f"storage:\n  postgres:\n    postgres_url:\n      env: {DAGSTER_POSTGRES_URL_ENV}\n"
    text = f"""# Written by orchestration/config.py (make up); edit ARENA_QUEUES instead of this file.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {sum(queues().values()) + 2}
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
{limits}
{storage}run_launcher:
  module: orchestration.launcher
  class: ArenaDefaultRunLauncher
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 10
run_retries:
  enabled: true
  max_retries: {fleet.run_retries()}
  retry_on_asset_or_op_failure: true
sensors:
""" + "".join(f"  {key}: {str(value).lower()}\n" for key, value in fleet.SENSOR_DAEMON.items())
    return _write_if_changed(home / "dagster.yaml", text)


def fleet_dagster_yaml() -> str:
    """The fleet's dagster.yaml: PostgreSQL, the Celery launcher, one tag limit per pool of the
    pools file (its number of workers). The same text on the control host and every worker."""
    import yaml
    from orchestration.pools import pool_limits
    return ("# Written by orchestration/config.py in fleet mode (ARENA_DAGSTER_MODE=fleet); edit the\n"
            "# pools file (ARENA_POOLS_FILE) and the ARENA_* settings instead of this file.\n"
            + yaml.safe_dump(fleet.fleet_instance_config(pool_limits()), sort_keys=False))


def _write_if_changed(path: Path, text: str) -> Path:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
    return path


if __name__ == "__main__":
    print(write_dagster_yaml())
