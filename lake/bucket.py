"""The intake bucket: how intake hands submissions to orchestration, and how status flows back.

Keys (under ARENA_BUCKET_URL, through lake/storage.py: file:// or s3://):
  incoming/<challenge>/<id>.zip    the upload, written first
  incoming/<challenge>/<id>.json   the marker (commit point): id, challenge, user, sha256, priority, queue
  status/<id>.json                 latest status event written by orchestration (status, reason, timings)
  logs/<id>/<phase>.log            build and run log lines, appended as they happen
  reruns/<id>/<ms>.json            an operator's rerun request

Intake never imports Dagster and orchestration never imports intake: this layout is their contract.
Nothing here hands out a path: a caller that needs a local file (docker build) gets its own copy.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lake.storage import Storage, as_storage
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
    def __init__(self, storage: Storage | str | Path):
        self.storage = as_storage(storage)

    def __repr__(self) -> str:
        return f"Bucket({self.storage.url!r})"

    # -- incoming --------------------------------------------------------------------------
    @staticmethod
    def zip_key(challenge: str, sid: str) -> str:
        return f"incoming/{challenge}/{sid}.zip"

    @staticmethod
    def marker_key(challenge: str, sid: str) -> str:
        return f"incoming/{challenge}/{sid}.json"

    def put_submission(self, marker: Marker, zip_file: Path) -> None:
        """Zip first, then the marker: a marker never points at a missing or partial zip."""
        self.storage.put_file(self.zip_key(marker.challenge, marker.id), zip_file)   # streamed
        self.storage.put_json(self.marker_key(marker.challenge, marker.id), marker.__dict__)
        self.set_status(marker.id, "queued")

    def withdraw(self, challenge: str, sid: str) -> None:
        """Undo a half-written hand-over: the marker first, so the sensor never sees it without a zip."""
        for key in (self.marker_key(challenge, sid), self.zip_key(challenge, sid), self.status_key(sid)):
            self.storage.delete(key)

    def challenges(self) -> list[str]:
        return self.storage.list_dirs("incoming/")

    def marker_keys(self, since_id: str = "") -> list[str]:
        """Keys of committed markers whose id sorts at or after ``since_id``: one listing per challenge,
        starting after ``since_id`` (S3 StartAfter), never a glob over every key."""
        keys = []
        for challenge in self.challenges():
            prefix = f"incoming/{challenge}/"
            # start-after is exclusive, but "<prefix><id>.json" sorts after "<prefix><id>": an id equal to
            # since_id is listed
            start = prefix + since_id if since_id else ""
            keys += [k for k in self.storage.list_after(prefix, start) if k.endswith(".json")]
        return sorted(keys, key=lambda k: k.rsplit("/", 1)[1])

    def unseen_marker_keys(self, since_id: str, seen: set[str], limit: int) -> tuple[list[str], str | None]:
        """Keys of up to ``limit`` committed markers whose id sorts at or after ``since_id`` and is not in
        ``seen``, oldest first, and the newest id listed (seen or not; None when the listing was cut at
        ``limit``). The listing starts after ``since_id`` and stops once ``limit`` unseen markers are
        found: catching up a backlog lists ``limit`` markers per call, not the whole backlog each time."""
        keys, newest, cut = [], None, False
        for challenge in self.challenges():
            prefix = f"incoming/{challenge}/"
            found = 0
            for key in self.storage.iter_after(prefix, prefix + since_id if since_id else ""):
                if not key.endswith(".json"):
                    continue
                sid = self.id_of(key)
                newest = max(newest or sid, sid)
                if sid in seen:
                    continue
                keys.append(key)
                found += 1
                if found > limit:         # one more than asked: this challenge has more than the limit
                    cut = True
                    break
        keys.sort(key=lambda k: k.rsplit("/", 1)[1])
        if len(keys) > limit:
            cut = True
        return keys[:limit], (None if cut else newest)

    @staticmethod
    def id_of(marker_key: str) -> str:
        return marker_key.rsplit("/", 1)[1].removesuffix(".json")

    def markers(self, since_id: str = "") -> Iterator[Marker]:
        """Every committed marker whose id sorts at or after ``since_id`` (ids are ULIDs: time order)."""
        return self.read_markers(self.marker_keys(since_id))

    def read_markers(self, keys) -> Iterator[Marker]:
        for key in keys:
            try:
                yield Marker.from_dict(json.loads(self.storage.get(key)))
            except (ValueError, TypeError, FileNotFoundError):
                continue  # not ours (a stray file), or withdrawn since the listing

    def read_markers_parallel(self, keys: list[str], workers: int = 16) -> list[Marker]:
        """``read_markers`` of many keys, in their order: on S3 each is a GET (a round trip), so they are
        fetched ``workers`` at a time; on a local disk one after another (already fast)."""
        if self.storage.is_local or len(keys) < 2:
            return list(self.read_markers(keys))
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(workers, len(keys))) as pool:
            return [m for batch in pool.map(lambda k: list(self.read_markers([k])), keys) for m in batch]

    def marker(self, sid: str) -> Marker | None:
        for challenge in self.challenges():
            data = self.storage.get_json(self.marker_key(challenge, sid))
            if data is not None:
                return Marker.from_dict(data)
        return None

    def has_zip(self, challenge: str, sid: str) -> bool:
        return self.storage.exists(self.zip_key(challenge, sid))

    def read_zip(self, challenge: str, sid: str) -> bytes:
        return self.storage.get(self.zip_key(challenge, sid))

    def fetch_zip(self, challenge: str, sid: str, dest: Path) -> Path:
        """A local copy of the submission's zip at ``dest`` (the caller's file; FileNotFoundError if the
        upload is gone)."""
        return self.storage.get_file(self.zip_key(challenge, sid), dest)

    def delete_zip(self, challenge: str, sid: str) -> None:
        self.storage.delete(self.zip_key(challenge, sid))

    def writable(self) -> bool:
        """Whether a key can be written and removed here (intake's health check)."""
        try:
            self.storage.put("_health/probe", b"ok")
            self.storage.delete("_health/probe")
            return True
        except (OSError, ValueError):
            return False

    # -- status ----------------------------------------------------------------------------
    @staticmethod
    def status_key(sid: str) -> str:
        return f"status/{sid}.json"

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
        self.storage.put_json(self.status_key(sid), event)
        return event

    def status(self, sid: str) -> dict | None:
        return self.storage.get_json(self.status_key(sid))

    # -- reruns -------------------------------------------------------------------------------
    def request_rerun(self, sid: str, requested_by: str) -> str:
        """An operator's rerun: a marker under reruns/<id>/ that the sensor turns into a new run of
        the same partition at high priority. Returns the rerun key (the run key of that run)."""
        stamp = int(time.time() * 1000)
        key = f"{sid}:rerun:{stamp}"
        self.storage.put_json(f"reruns/{sid}/{stamp}.json",
                              {"id": sid, "key": key, "requested_by": requested_by, "requested_at": utc_iso()})
        return key

    def reruns(self) -> Iterator[dict]:
        for key in self.storage.list_after("reruns/"):
            if key.endswith(".json"):
                data = self.storage.get_json(key)
                if data is not None:
                    yield data

    # -- logs ------------------------------------------------------------------------------
    @staticmethod
    def log_key(sid: str, phase: str) -> str:
        return f"logs/{sid}/{phase}.log"

    def append_log(self, sid: str, phase: str, line: str) -> None:
        self.storage.append(self.log_key(sid, phase), f"{time.time():.3f} {line.rstrip()}\n")

    def clear_log(self, sid: str, phase: str) -> None:
        """Start a phase's log afresh (a rerun)."""
        self.storage.delete(self.log_key(sid, phase))

    def log_text(self, sid: str, phase: str) -> str | None:
        try:
            return self.storage.get(self.log_key(sid, phase)).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def log_lines(self, sid: str) -> list[tuple[str, str]]:
        """(phase, line) pairs of every log of a submission, build first."""
        out = []
        for phase in ("build", "run"):
            text = self.log_text(sid, phase)
            if text is not None:
                out += [(phase, line) for line in text.splitlines()]
        return out
