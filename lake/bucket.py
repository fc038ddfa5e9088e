"""The intake bucket: how intake hands submissions to orchestration, and how status flows back.

Layout (under ARENA_BUCKET_URL):
  incoming/<challenge>/<id>.zip    the upload, written first
  incoming/<challenge>/<id>.json   the marker (commit point): id, challenge, user, sha256, priority, queue
  status/<id>.json                 latest status event written by orchestration (status, reason, timings)
  logs/<id>/<phase>.log            build and run log lines, appended as they happen

Intake never imports Dagster and orchestration never imports intake: this layout is their contract.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lake.atomic import write_atomic, write_json_atomic
from lake.vocabulary import STATUSES, utc_iso


@dataclass(frozen=True)
class Marker:
    id: str
    challenge: str
    user: str
    sha256: str
    created_at: str
    priority: int = 0
    queue: str = "cpu"
    display_name: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Marker":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


class Bucket:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- incoming --------------------------------------------------------------------------
    def zip_path(self, challenge: str, sid: str) -> Path:
        return self.root / "incoming" / challenge / f"{sid}.zip"

    def marker_path(self, challenge: str, sid: str) -> Path:
        return self.root / "incoming" / challenge / f"{sid}.json"

    def put_submission(self, marker: Marker, zip_file: Path) -> None:
        """Zip first, then the marker: a marker never points at a missing or partial zip."""
        dest = self.zip_path(marker.challenge, marker.id)
        write_atomic(dest, lambda tmp: shutil.copyfile(zip_file, tmp))   # streamed, not held in memory
        write_json_atomic(self.marker_path(marker.challenge, marker.id), marker.__dict__)
        self.set_status(marker.id, "queued")

    def markers(self, since_id: str = "") -> Iterator[Marker]:
        """Every committed marker whose id sorts at or after ``since_id`` (ids are ULIDs: time order)."""
        for path in sorted((self.root / "incoming").glob("*/*.json")):
            if path.stem >= since_id:
                try:
                    yield Marker.from_dict(json.loads(path.read_text()))
                except (ValueError, TypeError):
                    continue  # not ours (a stray file); markers are written atomically

    def marker(self, sid: str) -> Marker | None:
        for path in (self.root / "incoming").glob(f"*/{sid}.json"):
            return Marker.from_dict(json.loads(path.read_text()))
        return None

    # -- status ----------------------------------------------------------------------------
    def status_path(self, sid: str) -> Path:
        return self.root / "status" / f"{sid}.json"

    def set_status(self, sid: str, status: str, reason: str | None = None, **extra) -> dict:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        previous = self.status(sid) or {}
        timings = dict(previous.get("timings", {}))
        timings[status] = utc_iso()
        event = {"id": sid, "status": status, "reason": reason, "updated_at": timings[status],
                 "timings": timings, **{k: v for k, v in previous.items()
                                        if k not in ("id", "status", "reason", "updated_at", "timings")},
                 **extra}
        write_json_atomic(self.status_path(sid), event)
        return event

    def status(self, sid: str) -> dict | None:
        try:
            return json.loads(self.status_path(sid).read_text())
        except FileNotFoundError:
            return None

    # -- reruns -------------------------------------------------------------------------------
    def request_rerun(self, sid: str, requested_by: str) -> str:
        """An operator's rerun: a marker under reruns/<id>/ that the sensor turns into a new run of
        the same partition at high priority. Returns the rerun key (the run key of that run)."""
        stamp = int(time.time() * 1000)
        key = f"{sid}:rerun:{stamp}"
        write_json_atomic(self.root / "reruns" / sid / f"{stamp}.json",
                          {"id": sid, "key": key, "requested_by": requested_by, "requested_at": utc_iso()})
        return key

    def reruns(self) -> Iterator[dict]:
        for path in sorted((self.root / "reruns").glob("*/*.json")):
            yield json.loads(path.read_text())

    # -- logs ------------------------------------------------------------------------------
    def log_path(self, sid: str, phase: str) -> Path:
        return self.root / "logs" / sid / f"{phase}.log"

    def append_log(self, sid: str, phase: str, line: str) -> None:
        path = self.log_path(sid, phase)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.time():.3f} {line.rstrip()}\n")

    def log_lines(self, sid: str) -> list[tuple[str, str]]:
        """(phase, line) pairs of every log of a submission, build first."""
        out = []
        for phase in ("build", "run"):
            path = self.log_path(sid, phase)
            if path.exists():
                out += [(phase, line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        return out

