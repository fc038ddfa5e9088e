"""The one Dagster code location of Decode Arena: composes assets, jobs, sensors and resources."""
from dagster import Definitions

from orchestration.assets import evaluation, leaderboard, scores, submission_image
from orchestration.fleet import io_manager_resources
from orchestration.jobs import evaluate_submission, refresh_leaderboard
from orchestration.maintenance import compact_lake, compact_lake_hourly, lake_maintenance
from orchestration.resources import ArenaStorage, Sandbox
from orchestration.sensors import (cancelled_run_sensor, intake_sensor, leaderboard_sensor,
                                   platform_failure_sensor)

defs = Definitions(
    assets=[submission_image, evaluation, scores, leaderboard, lake_maintenance],
    jobs=[evaluate_submission, refresh_leaderboard, compact_lake],
    schedules=[compact_lake_hourly],
    sensors=[intake_sensor, leaderboard_sensor, platform_failure_sensor, cancelled_run_sensor],
    # fleet mode: run outputs in S3 (io_manager_resources), so any worker host reads them
    resources={"storage": ArenaStorage(), "sandbox": Sandbox()} | io_manager_resources(),
)
