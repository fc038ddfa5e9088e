"""Streams telemetry rows to one Parquet file in row groups, with bounded memory.

The file is written under a hidden temporary name next to the target and renamed when closed, so a
reader never sees a partial file. Rows are flushed as a row group every ``rows_per_group`` rows, so a
crash loses at most one group's worth of memory and the rows flushed so far survive ``close()``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.telemetry.schema import SCHEMA


class ParquetStream:
    def __init__(self, path: Path, *, metadata: dict[str, str] | None = None, rows_per_group: int = 512):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        schema = SCHEMA.with_metadata({f"arena.{k}": v for k, v in (metadata or {}).items()})
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self._rows: list[dict] = []
        self._rows_per_group = rows_per_group
        self.rows_written = 0
        self.rows_dropped = 0

    def append(self, rows: list[dict]) -> None:
        if self._writer is None:
            raise ValueError(f"{self.path} is already closed")
        self._rows.extend(rows)
        if len(self._rows) >= self._rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self._rows and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=SCHEMA))
            self.rows_written += len(self._rows)
            self._rows = []

    def close(self) -> Path:
        """Flush, close and publish the file under its final name (idempotent)."""
        if self._writer is not None:
            try:
                self.flush()
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                # Rows a source built wrongly: drop them, keep the groups already written readable.
                self.rows_dropped += len(self._rows)
                self._rows = []
            finally:
                self._writer.close()
                self._writer = None
                os.replace(self._tmp, self.path)
        return self.path
