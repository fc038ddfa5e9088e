"""`arena lake …`: the analyst's and operator's commands over the lake (registered by intake/cli.py).

  arena lake sql "SELECT …"                        a query over the views (lake/views.py)
  arena lake export TABLE|"SELECT …" OUT [--format parquet|csv]   share a table or a query's rows
  arena lake compact [--table T] [--full]          compact per-submission files (lake/compaction.py)
  arena lake migrate                               rewrite files of older schema versions
  arena lake schema                                every table's columns and schema version
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _lake_url() -> str:
    from lake.config import StorageSettings
    return StorageSettings.from_env().lake


def _fail(code: str, message: str) -> int:
    print(f"error: {code}: {message}", file=sys.stderr)
    return 1


def cmd_lake_sql(args) -> int:
    from lake.views import available_views, connect
    con = connect(_lake_url())
    try:
        cursor = con.execute(args.query)
        rows = cursor.fetchall() if cursor.description is not None else None
    except Exception as exc:  # DuckDB's errors are the user's to read
        return _fail("sql", f"{exc} (views: {', '.join(available_views(con)) or 'none yet'})")
    if rows is None:
        return 0
    from intake.cli import table
    print(table([d[0] for d in cursor.description], [list(r) for r in rows]))
    return 0


def cmd_lake_export(args) -> int:
    from lake.views import VIEW_NAMES, available_views, connect
    fmt = args.format or ("csv" if str(args.out).endswith(".csv") else "parquet")
    query = f"SELECT * FROM {args.what}" if args.what in VIEW_NAMES else args.what
    con = connect(_lake_url())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet, COMPRESSION zstd"
    try:
        con.execute(f"COPY ({query}) TO '{str(args.out).replace(chr(39), chr(39) * 2)}' ({options})")
        n = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    except Exception as exc:
        return _fail("export", f"{exc} (views: {', '.join(available_views(con)) or 'none yet'})")
    print(f"wrote {n} rows to {args.out} ({fmt})")
    return 0


def cmd_lake_compact(args) -> int:
    from lake.compaction import MigrationNeeded, compact
    from lake.layout import TABLES
    try:
        reports = compact(_lake_url(), tables=tuple(args.table or TABLES), full=args.full)
    except MigrationNeeded as exc:
        return _fail("migration_needed", str(exc))
    for r in reports:
        print(f"{r.table}: {r.files_compacted} new or changed files of {r.files_seen}, "
              f"{r.parts_written} parts written ({r.rows_written} rows), {r.parts_kept} kept, "
              f"generation {r.generation}, {r.seconds:.1f} s")
    return 0


def cmd_lake_migrate(args) -> int:
    from lake.compaction import compact, migrate
    counts = migrate(_lake_url())
    print(json.dumps({"migrated_files": counts}))
    if any(counts.values()) and not args.no_compact:
        compact(_lake_url(), full=True)
        print("compacted tables rebuilt")
    return 0


def cmd_lake_schema(args) -> int:
    from lake.layout import describe
    print(describe())
    return 0


def add_lake_commands(sub: argparse._SubParsersAction) -> None:
    lake = sub.add_parser("lake", help="query, export and maintain the lake").add_subparsers(
        dest="lake_command", required=True)
    s = lake.add_parser("sql", help="run a DuckDB query over the lake's views")
    s.add_argument("query")
    s.set_defaults(func=cmd_lake_sql)
    s = lake.add_parser("export", help="write a table or a query's rows to Parquet or CSV")
    s.add_argument("what", help="a view name (submissions, evaluations, requests, telemetry, leaderboard) "
                                "or a SELECT")
    s.add_argument("out", help="output file (.parquet or .csv)")
    s.add_argument("--format", choices=("parquet", "csv"))
    s.set_defaults(func=cmd_lake_export)
    s = lake.add_parser("compact", help="compact per-submission files into large sorted files")
    s.add_argument("--table", action="append", choices=("submissions", "evaluations", "requests", "telemetry"))
    s.add_argument("--full", action="store_true", help="rewrite every compacted file")
    s.set_defaults(func=cmd_lake_compact)
    s = lake.add_parser("migrate", help="rewrite files of older schema versions, then rebuild the compacted tables")
    s.add_argument("--no-compact", action="store_true")
    s.set_defaults(func=cmd_lake_migrate)
    s = lake.add_parser("schema", help="every table's columns, types and schema version (JSON)")
    s.set_defaults(func=cmd_lake_schema)
