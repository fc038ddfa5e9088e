"""The code location loads, and dagster.yaml limits each queue to its device count."""
from __future__ import annotations

import yaml

from orchestration.config import write_dagster_yaml
from orchestration.definitions import defs


def test_code_location_has_the_assets_jobs_and_sensors():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"submission_image", "evaluation", "scores", "leaderboard", "lake_maintenance"}
    assert defs.resolve_job_def("evaluate_submission").partitions_def.name == "submissions"
    assert {s.name for s in defs.sensors} == {"intake_sensor", "leaderboard_sensor", "platform_failure_sensor",
                                            "cancelled_run_sensor"}


def test_dagster_yaml_limits_each_queue_to_its_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_QUEUES", "cpu=1,gpu-h100=8")
    config = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert {(l["value"], l["limit"]) for l in coordinator["config"]["tag_concurrency_limits"]} == {
        ("cpu", 1), ("gpu-h100", 8)}
    assert "storage" not in config   # SQLite under DAGSTER_HOME by default
    monkeypatch.setenv("ARENA_DAGSTER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/dagster")
    config = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    # an env reference: the URL (and any password in it) is never written into dagster.yaml
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "ARENA_DAGSTER_POSTGRES_URL"}
