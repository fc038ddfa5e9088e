"""The lake_maintenance asset compacts the lake; the hourly schedule is registered."""
from dagster import materialize

from lake.tables import Lake
from orchestration.definitions import defs
from orchestration.maintenance import lake_maintenance
from orchestration.resources import ArenaStorage
from tests.lake.test_lake import add


def test_lake_maintenance_compacts_and_the_views_read_the_compacted_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_LAKE_URL", f"file://{tmp_path}")
    monkeypatch.setenv("ARENA_LAKE_COMPACT_GRACE_S", "0")
    lake = Lake(tmp_path)
    for i in range(3):
        add(lake, f"S{i}", "alice", f"2026-01-01T00:00:0{i}Z", tps=float(i + 1))
    result = materialize([lake_maintenance], resources={"storage": ArenaStorage()})
    assert result.success
    assert result.output_for_node("lake_maintenance")["evaluations"]["files_compacted"] == 3
    manifest = lake.manifest("evaluations")
    assert manifest["generation"] == 1 and sum(p["rows"] for p in manifest["parts"]) == 3
    assert defs.get_schedule_def("compact_lake_hourly").cron_schedule
