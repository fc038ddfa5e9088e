"""DuckDB views over the lake, for analysts, dashboards and the leaderboard (lake/README.md).

Each table's view is its compacted files (listed in the manifest) plus the tail: the per-submission
files journaled since the last compaction, which win over their compacted copies. Opening the views
reads four small manifests and lists four short journals; no view binds a glob or a union of footers,
every column has the type of the table's fixed schema. On S3 DuckDB reads through the lake's fsspec
filesystem (``register_filesystem``): no httpfs extension needed.

Per-run reads touch only that run's file: ``run_relation(con, lake, "telemetry", challenge, sid, attempt)``
or ``Lake.read_run`` (the views' ``WHERE submission_id = … AND attempt = …`` also prunes: compacted
files are sorted by submission, so row-group statistics skip the others).
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from lake.layout import TABLES, TableSpec
from lake.storage import Storage
from lake.tables import Lake, as_lake

VIEW_NAMES = ("submissions", "evaluations", "requests", "telemetry", "leaderboard")


def _lit(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _list(items) -> str:
    return "[" + ", ".join(_lit(i) for i in items) + "]"


def _duck_type(t) -> str:
    import pyarrow as pa
    return {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE",
            pa.bool_(): "BOOLEAN"}.get(t, "TIMESTAMP WITH TIME ZONE" if pa.types.is_timestamp(t) else "VARCHAR")


def key_expr(spec: TableSpec) -> str:
    return " || '/' || ".join(f'CAST("{c}" AS VARCHAR)' for c in spec.key)


def files_sql(spec: TableSpec, uris: list[str]) -> str:
    """SELECT every column of the table's full schema, typed, from per-submission files (the path's
    hive keys become columns where the file does not hold them)."""
    typed = ", ".join(f'CAST("{f.name}" AS {_duck_type(f.type)}) AS "{f.name}"' for f in spec.full_schema)
    if spec.path_columns:
        hive = (", hive_partitioning = true, hive_types = {'challenge': VARCHAR, "
                "'submission_id': VARCHAR, 'attempt': INTEGER}")
    else:
        hive = ", hive_partitioning = false"
    return f"SELECT {typed} FROM read_parquet({_list(uris)}{hive})"


def table_sql(lake: Lake, spec: TableSpec) -> str | None:
    """The view of one table: compacted parts, minus rows a newer per-submission file replaces, plus
    those files. None when the table has no data yet."""
    from lake.compaction import row_key
    manifest = lake.manifest(spec.name)
    if manifest.get("parts") and manifest.get("schema_version") != spec.version:
        raise RuntimeError(f"the compacted {spec.name} table is schema version {manifest.get('schema_version')}, "
                           f"this code reads version {spec.version}: run `arena lake migrate`")
    tail = sorted({key for _, key in lake.journal_after(spec.name, manifest.get("watermark", ""))})
    if tail and lake.storage.is_local:
        tail = [k for k in tail if Path(lake.uri(k)).exists()]
    elif tail:
        tail = [k for k in tail if lake.storage.exists(k)]
    columns = ", ".join(f'"{f.name}"' for f in spec.full_schema)
    selects = []
    if manifest.get("parts"):
        files = _list(lake.uri(p["key"]) for p in manifest["parts"])
        where = ""
        if tail:
            where = f" WHERE {key_expr(spec)} NOT IN ({', '.join(_lit(row_key(spec, k)) for k in tail)})"
        selects.append(f"SELECT {columns} FROM read_parquet({files}){where}")
    if tail:
        selects.append(files_sql(spec, [lake.uri(k) for k in tail]))
    return " UNION ALL ".join(selects) or None


def leaderboard_sql(lake: Lake) -> str | None:
    keys = [k for k in lake.storage.list_after("leaderboard/") if k.endswith("/leaderboard.parquet")]
    if not keys:
        return None
    return (f"SELECT * FROM read_parquet({_list(lake.uri(k) for k in keys)}, hive_partitioning = true, "
            "union_by_name = true)")


def prepare(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    con.execute("SET enable_progress_bar = false")
    if not lake.storage.is_local:
        con.register_filesystem(lake.storage.fs)


def connect(where: "Lake | Storage | str | Path", database: str = ":memory:",
            tables: tuple[str, ...] = VIEW_NAMES) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per lake table that has data (missing tables have no view).
    ``tables`` limits which views are made (each costs one manifest read and one journal listing)."""
    lake = as_lake(where)
    con = duckdb.connect(database)
    prepare(con, lake)
    for name in tables:
        sql = leaderboard_sql(lake) if name == "leaderboard" else table_sql(lake, TABLES[name])
        if sql:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    return con


def run_relation(con: duckdb.DuckDBPyConnection, where, table: str, challenge: str, sid: str,
                 attempt: int) -> duckdb.DuckDBPyRelation:
    """One attempt's ``requests`` or ``telemetry`` rows, read from that attempt's own file only."""
    lake = as_lake(where)
    return con.sql(f"SELECT * FROM read_parquet({_lit(lake.uri(Lake.run_key(table, challenge, sid, attempt)))})")


def available_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
