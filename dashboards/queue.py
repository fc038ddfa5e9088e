"""A small reader of the submission queue as the bucket holds it: markers (what intake accepted) and
status files (what orchestration wrote back). Never imports orchestration or Dagster.

At 10,000 submissions reading every marker and status file takes seconds, so the reader takes the set
of submissions the lake already holds a terminal evaluation for and skips their files (one listing of
the markers instead of 20,000 reads); operator reruns of those are read again, they may be in flight.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from lake.bucket import Bucket
from lake.vocabulary import ACTIVE_STATUSES, parse_utc_iso


@dataclass(frozen=True)
class QueueEntry:
    submission_id: str
    challenge: str
    participant: str
    display_name: str | None
    pool: str
    priority: int
    status: str
    reason: str | None
    submitted_at: datetime | None
    updated_at: datetime | None


def parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_utc_iso(value)
    except (TypeError, ValueError):
        return None


def read_queue(bucket: Bucket, finished: set[str] = frozenset()) -> tuple[list[QueueEntry], int]:
    """Every submission of the bucket not in ``finished`` (ids with a terminal evaluation in the lake),
    with its latest status; and how many markers were skipped as finished."""
    rerun = {r.get("id") for r in bucket.reruns()}
    keys = bucket.marker_keys()
    todo = [k for k in keys if Bucket.id_of(k) not in finished or Bucket.id_of(k) in rerun]
    entries = []
    for marker in bucket.read_markers(todo):
        status = bucket.status(marker.id) or {}
        entries.append(QueueEntry(marker.id, marker.challenge, marker.user, marker.display_name, marker.queue,
                                  int(marker.priority or 0), status.get("status", "queued"), status.get("reason"),
                                  parse_ts(marker.created_at), parse_ts(status.get("updated_at"))))
    return entries, len(keys) - len(todo)


def depth_by_pool(entries: list[QueueEntry], pools: list[str] = (), now: datetime | None = None) -> list[dict]:
    """Per pool: how many submissions are in each active status, and the oldest queued one's wait."""
    now = now or datetime.now(timezone.utc)
    out = {p: {"pool": p, **{s: 0 for s in ACTIVE_STATUSES}, "oldest_wait_s": None} for p in pools}
    for e in entries:
        if e.status not in ACTIVE_STATUSES:
            continue
        row = out.setdefault(e.pool, {"pool": e.pool, **{s: 0 for s in ACTIVE_STATUSES}, "oldest_wait_s": None})
        row[e.status] += 1
        if e.status == "queued" and e.submitted_at is not None:
            wait = (now - e.submitted_at).total_seconds()
            row["oldest_wait_s"] = max(wait, row["oldest_wait_s"] or 0.0)
    return [out[p] for p in sorted(out)]
