"""The lake's tables: their keys, their fixed Parquet schemas and schema versions (lake/README.md).

Every Parquet file the lake writes carries its schema: the same columns with the same types in every
file (an all-null column keeps its type), and the file metadata ``arena.table`` and
``arena.schema_version``. Readers bind that schema, never a union of thousands of footers. A file of an
older version is migrated (``arena lake migrate``), never mixed silently: compaction refuses it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.telemetry.schema import SCHEMA as TELEMETRY_SCHEMA

#: The requests table: one row per decode request the harness sent.
REQUESTS_SCHEMA = pa.schema([
    ("run", pa.string()), ("request_id", pa.string()), ("prompt_index", pa.int32()),
    ("prompt_set", pa.string()), ("sent_ns", pa.int64()), ("first_token_ns", pa.int64()),
    ("done_ns", pa.int64()), ("ttft_ms", pa.float64()), ("tpot_ms", pa.float64()),
    ("latency_ms", pa.float64()), ("tokens", pa.int32()), ("correct_tokens", pa.int32()),
    ("expected_tokens", pa.int32()),
])

SUBMISSIONS_SCHEMA = pa.schema([
    ("id", pa.string()), ("challenge", pa.string()), ("user", pa.string()), ("display_name", pa.string()),
    ("sha256", pa.string()), ("created_at", pa.string()), ("size_bytes", pa.int64()),
])

#: Metrics of the result JSON that get a flat ``m_<name>`` column (lake/schemas/result.schema.json).
FLAT_METRICS = ("tokens_per_second", "peak_memory_bw_GBs", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms",
                "tpot_p50_ms", "tpot_p99_ms", "accuracy", "peak_memory_bytes", "energy_joules",
                "tokens_per_joule", "load_time_s")

EVALUATIONS_SCHEMA = pa.schema(
    [("submission_id", pa.string()), ("challenge", pa.string()), ("attempt", pa.int32()),
     ("status", pa.string()), ("reason", pa.string()), ("started_at", pa.string()),
     ("finished_at", pa.string())]
    + [(f"m_{m}", pa.float64()) for m in FLAT_METRICS]
    + [("scenario", pa.string()), ("valid", pa.bool_()), ("repeats", pa.int32()),
       ("disturbed", pa.bool_()), ("remeasured", pa.int32()),
       ("tokens_per_second_cv", pa.float64()), ("engine", pa.string()), ("prompt_set", pa.string()),
       ("runtime", pa.string()), ("image_digest", pa.string()), ("base_image", pa.string()),
       ("gpu", pa.string()), ("host", pa.string()), ("harness_version", pa.string())])


@dataclass(frozen=True)
class TableSpec:
    name: str
    version: int
    schema: pa.Schema                 # the columns stored in each per-submission file
    path_columns: tuple[str, ...]     # hive keys of the path that are not columns of the file
    key: tuple[str, ...]              # what identifies one per-submission file's rows
    file_name: str

    @property
    def full_schema(self) -> pa.Schema:
        """Columns of the view and of compacted files: the path columns first, then the file's."""
        types = {"challenge": pa.string(), "submission_id": pa.string(), "attempt": pa.int32()}
        return pa.schema([(c, types[c]) for c in self.path_columns] + list(self.schema))

    def metadata(self) -> dict[bytes, bytes]:
        return {b"arena.table": self.name.encode(), b"arena.schema_version": str(self.version).encode()}

    def with_metadata(self, schema: pa.Schema) -> pa.Schema:
        return schema.with_metadata((schema.metadata or {}) | self.metadata())


TABLES: dict[str, TableSpec] = {
    "submissions": TableSpec("submissions", 1, SUBMISSIONS_SCHEMA, (), ("challenge", "id"), "{id}.parquet"),
    "evaluations": TableSpec("evaluations", 2, EVALUATIONS_SCHEMA, (), ("challenge", "submission_id"),
                             "evaluation.parquet"),
    "requests": TableSpec("requests", 1, REQUESTS_SCHEMA, ("challenge", "submission_id", "attempt"),
                          ("challenge", "submission_id", "attempt"), "requests.parquet"),
    "telemetry": TableSpec("telemetry", 1, TELEMETRY_SCHEMA, ("challenge", "submission_id", "attempt"),
                           ("challenge", "submission_id", "attempt"), "telemetry.parquet"),
}


def same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return [(f.name, f.type) for f in a] == [(f.name, f.type) for f in b]


def file_version(spec: TableSpec, schema: pa.Schema) -> int:
    """The schema version of a file: its ``arena.schema_version`` metadata; a file without it was
    written before versions existed (version 0, types inferred per file) and must be migrated."""
    meta = schema.metadata or {}
    return int(meta[b"arena.schema_version"]) if b"arena.schema_version" in meta else 0


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """A table of any older version cast to the current schema: columns in order, missing ones null
    (typed), types cast. The migration of every version so far (v0: types inferred per file)."""
    n = table.num_rows
    cols = []
    for field in spec.schema:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(n, field.type))
    kept = {k: v for k, v in (table.schema.metadata or {}).items() if k.startswith(b"arena.")}
    return pa.Table.from_arrays(cols, schema=spec.with_metadata(spec.schema.with_metadata(kept)))


def read_schema_version(spec: TableSpec, source) -> int:
    return file_version(spec, pq.read_schema(source))


def describe() -> str:
    """The tables and their columns, as JSON (for `arena lake schema`)."""
    return json.dumps({name: {"version": s.version, "columns": {f.name: str(f.type) for f in s.full_schema}}
                       for name, s in TABLES.items()}, indent=2)
