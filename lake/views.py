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

import os
import threading
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


def exclude_sql(spec: TableSpec, keys: list[str]) -> str:
    """A filter keeping the rows of none of these per-submission files. The submission id is tested
    first: rows of other submissions (nearly all) pass without building their key string, which on
    34M telemetry rows cost seconds."""
    from lake.compaction import path_values, row_key
    first = "id" if spec.name == "submissions" else "submission_id"
    ids = sorted({str(path_values(spec, k)[first]) for k in keys})
    return (f'("{first}" NOT IN ({", ".join(_lit(i) for i in ids)}) '
            f"OR {key_expr(spec)} NOT IN ({', '.join(_lit(row_key(spec, k)) for k in keys)}))")


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


def snapshot(lake: Lake, table: str, attempts: int = 5) -> tuple[dict, list[str]]:
    """The table's manifest and the data keys of its tail (journaled after the manifest's watermark),
    consistent with each other: compaction deletes the journal entries its new manifest covers, so
    when the manifest changed while the journal was listed, both are read again."""
    manifest = lake.manifest(table)
    for _ in range(attempts):
        tail = sorted({key for _, key in lake.journal_after(table, manifest.get("watermark", ""))})
        again = lake.manifest(table)
        if again.get("generation") == manifest.get("generation"):
            return manifest, tail
        manifest = again
    raise RuntimeError(f"the compacted {table} table changed {attempts} times while it was read")


def table_sql(lake: Lake, spec: TableSpec) -> str | None:
    """The view of one table: compacted parts, minus rows a newer per-submission file replaces, plus
    those files. None when the table has no data yet."""
    manifest, tail = snapshot(lake, spec.name)
    if manifest.get("parts") and manifest.get("schema_version") != spec.version:
        raise RuntimeError(f"the compacted {spec.name} table is schema version {manifest.get('schema_version')}, "
                           f"this code reads version {spec.version}: run `arena lake migrate`")
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
            where = f" WHERE {exclude_sql(spec, tail)}"
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


_SHARED: dict[tuple, tuple[duckdb.DuckDBPyConnection, object]] = {}
_SHARED_LOCK = threading.Lock()


def _shared_cursor(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A new connection (``cursor()``) to this process's shared in-memory DuckDB database: opening a
    database costs 0.1-0.2 s on a loaded host, a cursor well under 1 ms. One database per process (a
    forked child makes its own) and per file system (S3's is registered in it once)."""
    fs_id = None if lake.storage.is_local else id(lake.storage.fs)
    key = (os.getpid(), fs_id)
    with _SHARED_LOCK:
        if key not in _SHARED:
            base = duckdb.connect(":memory:")
            if fs_id is not None:
                base.register_filesystem(lake.storage.fs)
            _SHARED[key] = (base, lake.storage.fs)      # the file system stays alive with its database
        cursor = _SHARED[key][0].cursor()
    cursor.execute("SET enable_progress_bar = false")
    return cursor


def connect(where: "Lake | Storage | str | Path", database: str = ":memory:",
            tables: tuple[str, ...] = VIEW_NAMES, shared: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per lake table that has data (missing tables have no view).
    ``tables`` limits which views are made (each costs one manifest read and one journal listing).

    ``shared=True``: a cursor of the process's shared in-memory database instead of a new database,
    for short-lived readers (the leaderboard, metrics scrapes); its views are TEMP views, private to
    that cursor, and anything else the caller creates should be TEMP too. Close it when done.
    The default, a database of its own, is the analyst's: whatever they create stays theirs."""
    lake = as_lake(where)
    if shared and database == ":memory:":
        con, kind = _shared_cursor(lake), "TEMP VIEW"
    else:
        con, kind = duckdb.connect(database), "VIEW"
        prepare(con, lake)
    for name in tables:
        sql = leaderboard_sql(lake) if name == "leaderboard" else table_sql(lake, TABLES[name])
        if sql:
            con.execute(f"CREATE OR REPLACE {kind} {name} AS {sql}")
    return con


def run_relation(con: duckdb.DuckDBPyConnection, where, table: str, challenge: str, sid: str,
                 attempt: int) -> duckdb.DuckDBPyRelation:
    """One attempt's ``requests`` or ``telemetry`` rows, read from that attempt's own file only."""
    lake = as_lake(where)
    return con.sql(f"SELECT * FROM read_parquet({_lit(lake.uri(Lake.run_key(table, challenge, sid, attempt)))})")


def available_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
