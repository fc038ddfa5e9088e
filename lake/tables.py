"""The lake: per-submission files written atomically, a journal of what was written, compacted tables.

Keys under the lake's storage (lake/README.md has every column and unit):

  submissions/challenge=C/<id>.parquet                                  one row per submission
  evaluations/challenge=C/submission_id=S/result.json                   latest result JSON
  evaluations/challenge=C/submission_id=S/attempt-N.json                every attempt's result JSON
  evaluations/challenge=C/submission_id=S/evaluation.parquet            its flattened row (latest)
  evaluations/challenge=C/submission_id=S/loadgen/attempt=N/<run>/...   LoadGen's logs
  requests/challenge=C/submission_id=S/attempt=N/requests.parquet       one row per decode request
  telemetry/challenge=C/submission_id=S/attempt=N/telemetry.parquet     one row per telemetry sample
  leaderboard/challenge=C/leaderboard.parquet                           the last built leaderboard
  _journal/<table>/<ULID>~<key, quoted>                                 one empty object per write
  _compacted/<table>/manifest.json, _compacted/<table>/part-*.parquet  compacted copies (lake.compaction)
  _compacted/<table>/part-*.sources.json                               the files each part holds

A per-submission file is written whole and atomically, then its journal entry: a reader that lists the
journal after the compacted manifest's watermark sees every file written since the last compaction.
Compaction deletes the entries its manifest covers, so the journal holds only that tail.
The per-submission files stay the source of truth; compacted files are derived and rebuildable.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.parquet as pq
from ulid import ULID

from lake.layout import FLAT_METRICS, REQUESTS_SCHEMA, TABLES, TableSpec, conform, file_version  # noqa: F401
from lake.results import validate_result
from lake.storage import Storage, as_storage

JOURNAL = "_journal"
COMPACTED = "_compacted"
LOADGEN_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json")


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def flatten(result: dict, attempt: int) -> dict:
    """One flat row of a result for the evaluations table (EVALUATIONS_SCHEMA)."""
    meas, env = result["measurement"], result["environment"]
    row = {k: result.get(k) for k in ("submission_id", "challenge", "status", "reason", "started_at",
                                       "finished_at")}
    row["attempt"] = attempt
    metrics = result["metrics"]
    row.update({f"m_{k}": (float(metrics[k]) if metrics.get(k) is not None else None) for k in FLAT_METRICS})
    row.update({"scenario": meas.get("scenario"), "valid": meas.get("valid"), "repeats": meas.get("repeats"),
                "tokens_per_second_cv": meas.get("tokens_per_second_cv"), "engine": meas.get("engine"),
                "prompt_set": meas.get("prompt_set")})
    interference = meas.get("interference") or {}
    row.update({"disturbed": interference.get("disturbed"), "remeasured": interference.get("remeasured")})
    row.update({k: env.get(k) for k in ("runtime", "image_digest", "base_image", "gpu", "host",
                                        "harness_version")})
    return row


class Lake:
    def __init__(self, storage: Storage | str | Path):
        self.storage = as_storage(storage)

    @property
    def url(self) -> str:
        return self.storage.url

    def __repr__(self) -> str:
        return f"Lake({self.storage.url!r})"

    # -- keys ------------------------------------------------------------------------------------
    @staticmethod
    def submission_key(challenge: str, sid: str) -> str:
        return f"submissions/challenge={challenge}/{sid}.parquet"

    @staticmethod
    def evaluation_prefix(challenge: str, sid: str) -> str:
        return f"evaluations/challenge={challenge}/submission_id={sid}/"

    @staticmethod
    def run_key(table: str, challenge: str, sid: str, attempt: int) -> str:
        """The key of one attempt's file of ``requests`` or ``telemetry``."""
        return f"{table}/challenge={challenge}/submission_id={sid}/attempt={attempt}/{table}.parquet"

    @staticmethod
    def leaderboard_key(challenge: str) -> str:
        return f"leaderboard/challenge={challenge}/leaderboard.parquet"

    def uri(self, key: str) -> str:
        return self.storage.uri(key)

    def next_attempt(self, challenge: str, sid: str) -> int:
        taken = []
        for table in ("requests", "telemetry"):
            for name in self.storage.list_dirs(f"{table}/challenge={challenge}/submission_id={sid}/"):
                if name.startswith("attempt="):
                    taken.append(int(name.split("=", 1)[1]))
        for key in self.storage.list_after(self.evaluation_prefix(challenge, sid) + "attempt-"):
            name = key.rsplit("/", 1)[1]
            if name.startswith("attempt-") and name.endswith(".json"):
                taken.append(int(name[len("attempt-"):-len(".json")]))
        return max(taken, default=0) + 1

    # -- the journal -----------------------------------------------------------------------------
    def _journal(self, table: str, key: str) -> None:
        self.storage.put(f"{JOURNAL}/{table}/{ULID()}~{quote(key, safe='')}", b"")

    def journal_after(self, table: str, watermark: str = "") -> list[tuple[str, str]]:
        """(journal entry, data key) of every write to ``table`` after ``watermark`` (an entry name)."""
        prefix = f"{JOURNAL}/{table}/"
        out = []
        for key in self.storage.list_after(prefix, prefix + watermark if watermark else ""):
            entry = key[len(prefix):]
            ulid, _, quoted = entry.partition("~")
            out.append((entry, unquote(quoted)))
        return out

    # -- writers ---------------------------------------------------------------------------------
    @staticmethod
    def warm_up() -> None:
        """Build and encode an empty table of every schema, writing nothing: pyarrow initialises itself
        on its first table (a long-lived writer calls this at startup, not under its first requests)."""
        for spec in TABLES.values():
            parquet_bytes(conform(spec, pa.Table.from_pylist([], schema=spec.schema)))

    def write_rows(self, table: str, key: str, rows: list[dict] | pa.Table) -> str:
        """Write one per-submission file of ``table`` with its fixed schema, then journal it."""
        spec = TABLES[table]
        data = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows), schema=spec.schema)
        data = conform(spec, data)
        self.storage.put(key, parquet_bytes(data))
        self._journal(table, key)
        return key

    def write_submission(self, row: dict) -> str:
        return self.write_rows("submissions", self.submission_key(row["challenge"], row["id"]), [row])

    def delete_submission(self, challenge: str, sid: str) -> None:
        """Withdraw a submission row intake wrote (a half-written hand-over)."""
        self.storage.delete(self.submission_key(challenge, sid))

    def write_evaluation(self, result: dict, attempt: int) -> str:
        """result.json, attempt-N.json and the flattened row; the row is written last, so a reader that
        sees the row sees the JSON too. Returns the key of result.json."""
        validate_result(result)
        prefix = self.evaluation_prefix(result["challenge"], result["submission_id"])
        self.storage.put_json(prefix + "result.json", result)
        self.storage.put_json(prefix + f"attempt-{attempt}.json", result)
        self.write_rows("evaluations", prefix + "evaluation.parquet", [flatten(result, attempt)])
        return prefix + "result.json"

    def write_requests(self, challenge: str, sid: str, attempt: int, rows: "Iterable[dict] | pa.Table",
                       schema: pa.Schema | None = None) -> str:
        data = rows if isinstance(rows, pa.Table) else list(rows)
        return self.write_rows("requests", self.run_key("requests", challenge, sid, attempt), data)

    def put_telemetry(self, challenge: str, sid: str, attempt: int, local_file: str | Path) -> str | None:
        """Publish the sidecar's Parquet file (written locally) as this attempt's telemetry."""
        if not Path(local_file).exists():
            return None
        # stamped with the table's schema version (the sidecar writes the schema, not the version):
        # one rewrite of a small file at publication, so every file in the lake says its version
        return self.write_rows("telemetry", self.run_key("telemetry", challenge, sid, attempt),
                               pq.read_table(local_file))

    def keep_loadgen_logs(self, challenge: str, sid: str, attempt: int, dirs: Iterable[Path]) -> str:
        """LoadGen's summary and detail logs of every run, kept beside the evaluation."""
        dest = self.evaluation_prefix(challenge, sid) + f"loadgen/attempt={attempt}/"
        for d in dirs:
            for name in LOADGEN_FILES:
                if (Path(d) / name).exists():
                    self.storage.put_file(dest + f"{Path(d).name}/{name}", Path(d) / name)
        return dest

    def write_leaderboard(self, challenge: str, table: pa.Table) -> str:
        key = self.leaderboard_key(challenge)
        self.storage.put(key, parquet_bytes(table))
        return key

    # -- readers ---------------------------------------------------------------------------------
    def read_result(self, challenge: str, sid: str, attempt: int | None = None) -> dict | None:
        name = "result.json" if attempt is None else f"attempt-{attempt}.json"
        return self.storage.get_json(self.evaluation_prefix(challenge, sid) + name)

    def read_run(self, table: str, challenge: str, sid: str, attempt: int) -> pa.Table | None:
        """One attempt's requests or telemetry, read from its own file only (None when missing)."""
        try:
            with self.storage.open(self.run_key(table, challenge, sid, attempt)) as fh:
                return pq.read_table(fh)
        except FileNotFoundError:
            return None

    def has_run(self, table: str, challenge: str, sid: str, attempt: int) -> bool:
        return self.storage.exists(self.run_key(table, challenge, sid, attempt))

    def read_leaderboard(self, challenge: str) -> list[dict]:
        try:
            with self.storage.open(self.leaderboard_key(challenge)) as fh:
                return pq.read_table(fh).to_pylist()
        except FileNotFoundError:
            return []

    def leaderboard_built_at(self, challenge: str) -> float | None:
        """When the leaderboard of ``challenge`` was last written (epoch seconds), None if never."""
        return self.storage.modified(self.leaderboard_key(challenge))

    def loadgen_logs(self, challenge: str, sid: str) -> list[str]:
        """Keys of LoadGen's logs kept for a submission (read them with ``lake.storage.open``)."""
        return self.storage.list_after(self.evaluation_prefix(challenge, sid) + "loadgen/")

    def manifest(self, table: str) -> dict:
        return self.storage.get_json(f"{COMPACTED}/{table}/manifest.json") or {
            "table": table, "generation": 0, "watermark": "", "parts": []}


def as_lake(where: "Lake | Storage | str | Path") -> Lake:
    return where if isinstance(where, Lake) else Lake(where)
