"""Orchestration settings: queues, devices, Dagster home (environment, embedded defaults)."""
from __future__ import annotations

import os
from pathlib import Path

from lake.config import arena_home
from lake.vocabulary import TAG_QUEUE

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
    """Dagster's own storage in PostgreSQL (production); unset means SQLite under DAGSTER_HOME."""
    return os.environ.get(DAGSTER_POSTGRES_URL_ENV) or None


def write_dagster_yaml(home: Path | None = None) -> Path:
    """dagster.yaml with the QueuedRunCoordinator: one concurrent run per device of each queue."""
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
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
{storage}telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
"""
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


if __name__ == "__main__":
    print(write_dagster_yaml())
