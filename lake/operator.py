"""Operator-only storage: what participants must never see (an evaluation's secret prompt seed).

A directory of its own (ARENA_OPERATOR_DIR, default $ARENA_HOME/operator), never inside the lake, the
bucket or anything the API serves: one JSON file per submission and attempt, written atomically,
mode 0600 in a 0700 directory. `arena admin prompts` reads it back to regenerate an evaluation's
prompts and verify them against the result's `measurement.prompt_set`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lake.atomic import write_atomic
from lake.config import arena_home


def operator_dir() -> Path:
    return Path(os.environ.get("ARENA_OPERATOR_DIR") or arena_home() / "operator").resolve()


class OperatorStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else operator_dir()

    def path(self, sid: str, attempt: int) -> Path:
        if "/" in sid or sid.startswith("."):
            raise ValueError(f"not a submission id: {sid!r}")
        return self.root / sid / f"attempt-{int(attempt)}.json"

    def write(self, sid: str, attempt: int, record: dict) -> Path:
        path = self.path(sid, attempt)
        for d in (self.root, path.parent):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)

        def write(tmp: Path) -> None:
            os.chmod(tmp, 0o600)     # before a byte of the secret is in it
            tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
        return write_atomic(path, write)

    def attempts(self, sid: str) -> list[int]:
        d = self.root / sid
        return sorted(int(p.stem.split("-", 1)[1]) for p in d.glob("attempt-*.json")) if d.is_dir() else []

    def read(self, sid: str, attempt: int | None = None) -> dict:
        """The record of `attempt` (the latest when None); KeyError when there is none."""
        if attempt is None:
            taken = self.attempts(sid)
            if not taken:
                raise KeyError(f"no operator record for submission {sid} under {self.root}")
            attempt = taken[-1]
        path = self.path(sid, attempt)
        if not path.is_file():
            raise KeyError(f"no operator record for submission {sid}, attempt {attempt} ({path})")
        return json.loads(path.read_text()) | {"attempt": attempt}
