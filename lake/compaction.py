"""Compaction: the lake's small per-submission files copied into large files sorted by submission.

Each table keeps ``_compacted/<table>/manifest.json``: the compacted part files (key, rows, id range)
and a journal watermark. Which per-submission files (with their version tag) each part holds is kept
beside the part, in ``part-….sources.json``, which only compaction reads: the manifest the views read
stays a few hundred bytes per part, however many submissions the lake holds. A compaction:

1. lists the table's per-submission files and compares them with the manifest: new, changed (a
   rerun overwrote ``evaluation.parquet``) and removed files;
2. rewrites only the parts that hold changed or removed files, plus the parts still under half the
   target size, together with the new files, sorted by (challenge, submission_id[, attempt]), into
   parts of about ``target_rows`` rows, each written whole under a new name;
3. swaps the manifest atomically (one put): readers see the old set of parts or the new one, never a
   mix; parts replaced by the previous compaction are deleted now (one generation of grace for
   readers still holding the old manifest); the journal entries up to the new watermark are deleted
   at once (the new parts hold their files), so the journal holds only the tail and listing it costs
   what was written since the last compaction. A reader that read the previous manifest and listed
   the journal while the entries went re-reads the manifest, sees a new generation, and reads again.

The watermark is the newest journal entry written before ``now - grace``: every per-submission file
journaled after it is read from its own file by the views (the "tail"), and wins over its compacted
copy, so a file written during a compaction is never lost nor counted twice. Files of an older schema
version are refused (``arena lake migrate`` first): versions are never mixed silently.
One compactor at a time (the Dagster schedule runs one ``lake_maintenance`` run at once).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from ulid import ULID

from lake.layout import TABLES, TableSpec, conform, file_version
from lake.storage import unique_suffix
from lake.tables import COMPACTED, JOURNAL, Lake, as_lake, parquet_bytes
from lake.storage import Entry
from lake.views import _lit, exclude_sql, files_sql, prepare

#: Rows per compacted file (ARENA_LAKE_COMPACT_ROWS).
DEFAULT_TARGET_ROWS = 500_000
#: Journal entries younger than this stay in the tail (ARENA_LAKE_COMPACT_GRACE_S): a writer's file is
#: put before its journal entry, so an entry this old names a file the listing already saw.
DEFAULT_GRACE_S = 60.0


class MigrationNeeded(RuntimeError):
    pass


def target_rows() -> int:
    return int(os.environ.get("ARENA_LAKE_COMPACT_ROWS", DEFAULT_TARGET_ROWS))


def grace_s() -> float:
    return float(os.environ.get("ARENA_LAKE_COMPACT_GRACE_S", DEFAULT_GRACE_S))


@dataclass
class TableReport:
    table: str
    files_seen: int = 0
    files_compacted: int = 0
    parts_written: int = 0
    parts_kept: int = 0
    rows_written: int = 0
    parts_deleted: int = 0
    journal_deleted: int = 0
    seconds: float = 0.0
    generation: int = 0
    notes: list[str] = field(default_factory=list)


def path_values(spec: TableSpec, key: str) -> dict:
    """The hive keys of a per-submission file's key (``challenge=C/submission_id=S/attempt=N``)."""
    values = {}
    for seg in key.split("/"):
        if "=" in seg:
            k, v = seg.split("=", 1)
            values[k] = int(v) if k == "attempt" else v
    if spec.name == "submissions":
        values["id"] = key.rsplit("/", 1)[1].removesuffix(".parquet")
    return values


def row_key(spec: TableSpec, key: str) -> str:
    """The identity of a per-submission file's rows, as the views' ``key`` expression spells it."""
    values = path_values(spec, key)
    return "/".join(str(values[c]) for c in spec.key)


def is_data_key(spec: TableSpec, key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    if spec.name == "submissions":
        return key.count("/") == 2 and name.endswith(".parquet")
    return name == spec.file_name


def list_sources(lake: Lake, spec: TableSpec) -> dict[str, str]:
    return {e.key: e.tag for e in lake.storage.entries_after(f"{spec.name}/") if is_data_key(spec, e.key)}


def sort_keys(spec: TableSpec) -> list[tuple[str, str]]:
    cols = ["challenge", "submission_id", "attempt"] if spec.name != "submissions" else ["challenge", "id"]
    if spec.name == "telemetry":
        cols += ["ts"]
    if spec.name == "requests":
        cols += ["sent_ns"]
    return [(c, "ascending") for c in cols]


def _source_order(spec: TableSpec, key: str) -> tuple:
    v = path_values(spec, key)
    return (v.get("challenge", ""), v.get("submission_id", v.get("id", "")), v.get("attempt", 0))


def compact_table(lake: Lake, table: str, *, full: bool = False, rows_per_part: int | None = None,
                  now: float | None = None, workers: int = 4) -> TableReport:
    spec = TABLES[table]
    rows_per_part = rows_per_part or target_rows()
    started = time.monotonic()
    report = TableReport(table)
    manifest = lake.manifest(table)
    now = time.time() if now is None else now
    # 1. the watermark first (entries before it name files the listing below will see)
    cutoff_ms = int((now - grace_s()) * 1000)
    watermark = manifest.get("watermark", "")
    for entry, _ in lake.journal_after(table, watermark):
        if ULID.from_str(entry.split("~", 1)[0]).milliseconds < cutoff_ms:
            watermark = entry
        else:
            break
    sources = list_sources(lake, spec)
    report.files_seen = len(sources)
    # 2. what changed since the last manifest: parts holding a changed or removed file, and parts
    #    under half the target size, are absorbed (read back from the part, minus the stale rows)
    keep, absorb, raw = [], [], set()
    old_parts = [] if full or manifest.get("schema_version") != spec.version else manifest["parts"]
    held_by = {p["key"]: part_sources(lake, p) for p in old_parts}
    for part in old_parts:
        stale = {k for k, tag in held_by[part["key"]].items() if sources.get(k) != tag}
        if stale or part["rows"] < rows_per_part // 2:
            absorb.append((part, stale))
            raw |= {k for k in stale if k in sources}
        else:
            keep.append(part)
    covered = {k for p in keep for k in held_by[p["key"]]}
    covered |= {k for p, stale in absorb for k in held_by[p["key"]] if k not in stale}
    raw |= set(sources) - covered
    raw_sorted = sorted(raw, key=lambda k: _source_order(spec, k))
    report.files_compacted = len(raw_sorted)
    # 3. check versions and sizes from the footers (DuckDB reads them in one call), then write parts
    #    of about rows_per_part rows, each sorted by submission
    generation = manifest.get("generation", 0) + 1
    new_parts: list[dict] = []
    con = duckdb.connect()
    prepare(con, lake)
    id_col = "id" if spec.name == "submissions" else "submission_id"
    units: list[tuple[tuple, int, object]] = []          # (order, rows, part-and-stale | raw key)
    for part, stale in absorb:
        units.append(((part.get("min") or "",), part["rows"] - len(stale), (part, stale)))
    for start in range(0, len(raw_sorted), 2000):
        chunk = raw_sorted[start:start + 2000]
        rows = footers(con, lake, spec, chunk)
        units += [(_source_order(spec, k)[1:2], rows[k], k) for k in chunk]
    units.sort(key=lambda u: u[0])
    groups: list[list] = [[]]
    group_rows = 0
    for _, n, unit in units:
        if group_rows >= rows_per_part:
            groups.append([])
            group_rows = 0
        groups[-1].append(unit)
        group_rows += n
    order = ", ".join(f'"{c}"' for c, _ in sort_keys(spec))
    columns = ", ".join(f'"{f.name}"' for f in spec.full_schema)
    meta = ", ".join(f"'{k.decode()}': '{v.decode()}'" for k, v in spec.metadata().items())
    for group in (g for g in groups if g):
        selects, held = [], {}
        raws = [u for u in group if isinstance(u, str)]
        for part, stale in (u for u in group if not isinstance(u, str)):
            where = ""
            if stale:
                where = f" WHERE {exclude_sql(spec, sorted(stale))}"
            selects.append(f"SELECT {columns} FROM read_parquet({_lit(lake.uri(part['key']))}){where}")
            held |= {k: t for k, t in held_by[part["key"]].items() if k not in stale}
        if raws:
            selects.append(files_sql(spec, [lake.uri(k) for k in raws]))
            held |= {k: sources[k] for k in raws}
        key = f"{COMPACTED}/{table}/part-{generation:06d}-{len(new_parts):05d}-{unique_suffix()}.parquet"
        with tempfile.TemporaryDirectory(prefix="arena-compact-") as tmp:
            local = Path(tmp) / "part.parquet"
            con.execute(f"COPY ({' UNION ALL '.join(selects)} ORDER BY {order}) TO '{local}' "
                        f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536, KV_METADATA {{{meta}}})")
            n = pq.read_metadata(local).num_rows
            lake.storage.put_file(key, local)
        lake.storage.put_json(sources_key(key), held)
        ids = sorted(path_values(spec, k).get(id_col) for k in held)
        new_parts.append({"key": key, "rows": n, "min": ids[0] if ids else None,
                          "max": ids[-1] if ids else None, "sources_key": sources_key(key)})
        report.rows_written += n
    con.close()
    report.parts_written, report.parts_kept = len(new_parts), len(keep)
    # 4. swap the manifest, then delete what no reader can still need
    kept_keys = {p["key"] for p in keep}
    replaced = [p["key"] for p in manifest["parts"] if p["key"] not in kept_keys]
    for part in keep:                   # a manifest written before the sources moved out of it
        if "sources" in part:
            lake.storage.put_json(sources_key(part["key"]), part.pop("sources"))
            part["sources_key"] = sources_key(part["key"])
    previous_retired = manifest.get("retired", [])
    lake.storage.put_json(f"{COMPACTED}/{table}/manifest.json", {
        "table": table, "schema_version": spec.version, "generation": generation, "watermark": watermark,
        "compacted_at": now, "parts": keep + new_parts, "retired": replaced})
    for key in previous_retired:
        lake.storage.delete(key)
        lake.storage.delete(sources_key(key))
        report.parts_deleted += 1
    # the journal up to the new watermark is consumed: the new parts hold those files. A reader that
    # read the previous manifest notices the new generation after its listing and reads again
    # (lake.views.table_sql), so the journal shrinks to the tail at once and its listing stays short.
    for entry, _ in lake.journal_after(table, ""):
        if entry > watermark or not watermark:
            break
        lake.storage.delete(f"{JOURNAL}/{table}/{entry}")
        report.journal_deleted += 1
    report.generation = generation
    report.seconds = time.monotonic() - started
    return report


def sources_key(part_key: str) -> str:
    """Where a part's sources live: the per-submission files it holds and their version tags (read by
    compaction only; the manifest the views read stays small)."""
    return part_key.removesuffix(".parquet") + ".sources.json"


def part_sources(lake: Lake, part: dict) -> dict[str, str]:
    if "sources" in part:               # manifests written before the sources moved to their own file
        return part["sources"]
    found = lake.storage.get_json(part["sources_key"])
    if found is None:
        raise RuntimeError(f"{part['sources_key']} is missing: rebuild with `arena lake compact --full`")
    return found


def footers(con, lake: Lake, spec: TableSpec, keys: list[str]) -> dict[str, int]:
    """Rows of each file, after checking that every one is of the current schema version."""
    uris = {lake.uri(k): k for k in keys}
    listing = "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in uris) + "]"
    versions = dict(con.execute(
        f"SELECT file_name, decode(value) FROM parquet_kv_metadata({listing}) "
        "WHERE decode(key) = 'arena.schema_version'").fetchall())
    for uri, key in uris.items():
        version = int(versions.get(uri, 0))
        if version != spec.version:
            raise MigrationNeeded(f"{spec.name}: {key} is schema version {version}, the lake is at version "
                                  f"{spec.version}; run `arena lake migrate` first (versions are never mixed)")
    rows = dict(con.execute(f"SELECT file_name, num_rows FROM parquet_file_metadata({listing})").fetchall())
    return {key: int(rows[uri]) for uri, key in uris.items()}


def compact(lake, tables: tuple[str, ...] = tuple(TABLES), **kwargs) -> list[TableReport]:
    """Compact every table of the lake (the ``lake_maintenance`` asset and `arena lake compact`)."""
    lake = as_lake(lake)
    return [compact_table(lake, t, **kwargs) for t in tables]


def migrate(lake, tables: tuple[str, ...] = tuple(TABLES)) -> dict[str, int]:
    """Rewrite every per-submission file of an older schema version in the current one (journaled, so
    the next compaction picks them up); returns how many files of each table were migrated."""
    lake = as_lake(lake)
    counts = {}
    for table in tables:
        spec = TABLES[table]
        n = 0
        for key in list_sources(lake, spec):
            with lake.storage.open(key) as fh:
                version = file_version(spec, pq.read_schema(fh))
            if version == spec.version:
                continue
            if version > spec.version:
                raise MigrationNeeded(f"{key} is schema version {version}, newer than this code ({spec.version})")
            with lake.storage.open(key) as fh:
                data = conform(spec, pq.read_table(fh))
            lake.storage.put(key, parquet_bytes(data))
            lake._journal(table, key)
            n += 1
        counts[table] = n
    return counts


__all__ = ["compact", "compact_table", "migrate", "MigrationNeeded", "TableReport", "row_key", "path_values",
           "Entry"]
