"""The lake's tables: hive-partitioned Parquet written atomically (DESIGN.md, "Lake layout")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from lake.atomic import write_atomic, write_json_atomic
from lake.results import flatten, validate_result


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
        (d / f"attempt-{attempt}.json").write_text(json.dumps(result, indent=2))
        row = flatten(result) | {"attempt": attempt}
        self.write_table(d / "evaluation.parquet", pa.Table.from_pylist([row]))
        return d / "result.json"

    def write_requests(self, challenge: str, sid: str, attempt: int, rows: Iterable[dict],
                       schema: pa.Schema) -> Path:
        table = pa.Table.from_pylist(list(rows), schema=schema)
        return self.write_table(self.requests_dir(challenge, sid, attempt) / "requests.parquet", table)

    def telemetry_path(self, challenge: str, sid: str, attempt: int) -> Path:
        return self.telemetry_dir(challenge, sid, attempt) / "telemetry.parquet"

    # -- readers ---------------------------------------------------------------------------
    def read_result(self, challenge: str, sid: str) -> dict | None:
        try:
            return json.loads((self.evaluation_dir(challenge, sid) / "result.json").read_text())
        except FileNotFoundError:
            return None
