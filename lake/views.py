"""DuckDB views over the lake, for analysts, dashboards and the leaderboard asset."""
from __future__ import annotations

from pathlib import Path

import duckdb

# view name -> glob under the lake root (hive partitions become columns)
TABLES = {
    "submissions": "submissions/*/*.parquet",
    "evaluations": "evaluations/*/*/evaluation.parquet",
    "requests": "requests/*/*/*/*.parquet",
    "telemetry": "telemetry/*/*/*/*.parquet",
    "leaderboard": "leaderboard/*/leaderboard.parquet",
}


def connect(lake_root: Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per lake table that has data (missing tables have no view)."""
    con = duckdb.connect(database)
    for name, pattern in TABLES.items():
        glob = Path(lake_root) / pattern
        if any(Path(lake_root).glob(pattern)):
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet("
                        f"'{glob}', hive_partitioning = true, union_by_name = true)")
    return con


def available_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
