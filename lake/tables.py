"""The lake's tables: hive-partitioned Parquet written atomically (DESIGN.md, "Lake layout")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from lake.atomic import write_atomic, write_json_atomic
from lake.results import flatten, validate_result


#: The requests table: one row per decode request the harness sent (DESIGN.md, "Lake layout").
REQUESTS_SCHEMA = pa.schema([
    ("run", pa.string()), ("request_id", pa.string()), ("prompt_index", pa.int32()),
    ("prompt_set", pa.string()), ("sent_ns", pa.int64()), ("first_token_ns", pa.int64()),
    ("done_ns", pa.int64()), ("ttft_ms", pa.float64()), ("tpot_ms", pa.float64()),
    ("latency_ms", pa.float64()), ("tokens", pa.int32()), ("correct_tokens", pa.int32()),
    ("expected_tokens", pa.int32()),
])


class Lake:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- paths -----------------------------------------------------------------------------
    def submissions_dir(self, challenge: str) -> Path:
        return self.root / "submissions" / f"challenge={challenge}"

    def evaluation_dir(self, challenge: str, sid: str) -> Path:
        return self.root / "evaluations" / f"challenge={challenge}" / f"submission_id={sid}"

    def requests_dir(self, challenge: str, sid: str, attempt: int) -> Path:
        return self.root / "requests" / f"challenge={challenge}" / f"submission_id={sid}" / f"attempt={attempt}"

    def telemetry_dir(self, challenge: str, sid: str, attempt: int) -> Path:
        return self.root / "telemetry" / f"challenge={challenge}" / f"submission_id={sid}" / f"attempt={attempt}"

    def leaderboard_path(self, challenge: str) -> Path:
        return self.root / "leaderboard" / f"challenge={challenge}" / "leaderboard.parquet"

    def next_attempt(self, challenge: str, sid: str) -> int:
        base = self.root / "requests" / f"challenge={challenge}" / f"submission_id={sid}"
        taken = [int(p.name.split("=", 1)[1]) for p in base.glob("attempt=*")] if base.exists() else []
        return max(taken, default=0) + 1

    # -- writers ---------------------------------------------------------------------------
    @staticmethod
    def write_table(path: Path, table: pa.Table) -> Path:
        return write_atomic(path, lambda tmp: pq.write_table(table, tmp))

    def write_submission(self, row: dict) -> Path:
        table = pa.Table.from_pylist([row])
        return self.write_table(self.submissions_dir(row["challenge"]) / f"{row['id']}.parquet", table)

    def write_evaluation(self, result: dict, attempt: int) -> Path:
        """result.json and its flattened row; the row is written last, so a reader that sees the
        row sees the JSON too."""
        validate_result(result)
        d = self.evaluation_dir(result["challenge"], result["submission_id"])
        write_json_atomic(d / "result.json", result)
        write_json_atomic(d / f"attempt-{attempt}.json", result)
        row = flatten(result) | {"attempt": attempt}
        self.write_table(d / "evaluation.parquet", pa.Table.from_pylist([row]))
        return d / "result.json"

    def write_requests(self, challenge: str, sid: str, attempt: int, rows: Iterable[dict],
                       schema: pa.Schema) -> Path:
        table = pa.Table.from_pylist(list(rows), schema=schema)
        return self.write_table(self.requests_dir(challenge, sid, attempt) / "requests.parquet", table)

    def keep_loadgen_logs(self, challenge: str, sid: str, attempt: int, dirs: Iterable[Path]) -> Path:
        """LoadGen's summary and detail logs of every run, kept beside the evaluation."""
        import shutil
        dest = self.evaluation_dir(challenge, sid) / "loadgen" / f"attempt={attempt}"
        for d in dirs:
            for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"):
                if (Path(d) / name).exists():
                    (dest / Path(d).name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(d) / name, dest / Path(d).name / name)
        return dest

    def telemetry_path(self, challenge: str, sid: str, attempt: int) -> Path:
        return self.telemetry_dir(challenge, sid, attempt) / "telemetry.parquet"

    # -- readers ---------------------------------------------------------------------------
    def read_result(self, challenge: str, sid: str) -> dict | None:
        try:
            return json.loads((self.evaluation_dir(challenge, sid) / "result.json").read_text())
        except FileNotFoundError:
            return None
