"""Lake maintenance: an hourly compaction of the lake's per-submission files (lake/compaction.py).

A few lines over the library: the asset calls ``lake.compaction.compact`` and reports what it did; the
schedule runs it every hour (ARENA_LAKE_COMPACT_CRON). One run at a time (the job's own tag limit).
"""
import os

from dagster import (AssetExecutionContext, AssetSelection, DefaultScheduleStatus, Output, asset,
                     define_asset_job, ScheduleDefinition)

from lake.compaction import compact
from orchestration.resources import ArenaStorage


@asset(group_name="lake", description="Per-submission Parquet files compacted into large files sorted by "
                                      "submission, under an atomically swapped manifest.")
def lake_maintenance(context: AssetExecutionContext, storage: ArenaStorage) -> Output[dict]:
    reports = compact(storage.settings().lake)
    summary = {r.table: {"files_compacted": r.files_compacted, "parts_written": r.parts_written,
                         "rows_written": r.rows_written, "generation": r.generation, "seconds": round(r.seconds, 2)}
               for r in reports}
    context.log.info(f"lake compaction: {summary}")
    return Output(summary, metadata={f"{t}_files_compacted": v["files_compacted"] for t, v in summary.items()}
                  | {f"{t}_seconds": v["seconds"] for t, v in summary.items()})


compact_lake = define_asset_job("compact_lake", selection=AssetSelection.assets(lake_maintenance),
                                tags={"dagster/max_runtime": "3600", "arena/maintenance": "lake"},
                                description="Compact the lake (hourly; `arena lake compact` does the same by hand).")

compact_lake_hourly = ScheduleDefinition(name="compact_lake_hourly", job=compact_lake, cron_schedule=os.environ.get("ARENA_LAKE_COMPACT_CRON", "17 * * * *"),
                                         default_status=DefaultScheduleStatus.RUNNING,
                                         description="Hourly lake compaction.")
