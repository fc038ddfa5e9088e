"""The platform's shared vocabulary: one place for every fact that several packages name.

Statuses and reasons of a submission, the tags Dagster runs carry, the labels Docker objects carry,
and the one time format of the bucket, the lake and the API. It lives at the bottom of the import
graph (lake/), imports nothing, and every package reads it from here instead of restating it.
"""
from __future__ import annotations

from datetime import datetime, timezone

# -- a submission's life ---------------------------------------------------------------------------
#: Statuses a submission passes through before it ends.
ACTIVE_STATUSES = ("queued", "building", "running", "scoring")
#: Terminal statuses: the `status` of a result JSON.
TERMINAL_STATUSES = ("success", "rejected", "failed", "timeout")
STATUSES = ACTIVE_STATUSES + TERMINAL_STATUSES

#: Why a submission ended as it did (`reason` of a result JSON). `platform`: the platform broke,
#: not the submission; such a run is retried and may be rerun by an operator.
REASONS = ("build", "protocol", "crash", "oom", "accuracy", "timeout", "platform")
#: Reasons that are the platform's fault, never the participant's: only these are retried.
PLATFORM_REASONS = ("platform",)
#: Why a successful evaluation is not ranked (the leaderboard's reason column, not a result reason):
#: LoadGen said INVALID, or a timed run was still disturbed by other work on the evaluation CPUs
#: after the re-measure limit (measurement.interference.disturbed, sandbox/interference.py).
UNRANKED_INVALID = "invalid measurement"
UNRANKED_DISTURBED = "disturbed measurement"


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATUSES


# -- Dagster run tags ------------------------------------------------------------------------------
TAG_PRIORITY = "dagster/priority"
TAG_QUEUE = "arena/queue"
TAG_SUBMISSION = "arena/submission"
TAG_RERUN = "arena/rerun"
#: Fleet mode: the Celery worker that ran the run, and the devices it is bound to (sandbox/devices.py).
TAG_WORKER = "arena/worker"
TAG_DEVICES = "arena/devices"

# -- Docker labels ---------------------------------------------------------------------------------
#: Every container and image the platform makes carries this label, so cleanup can find them.
LABEL_MANAGED = "org.decode-arena.managed"
#: Images and containers made for a submission carry this label too (its value is the submission id).
LABEL_SUBMISSION = "org.decode-arena.submission"
#: Official base images carry a hash of their sources (scripts/build-images.sh).
LABEL_SOURCE = "org.decode-arena.source"


# -- time ------------------------------------------------------------------------------------------
def utc_iso(moment: datetime | None = None) -> str:
    """The one time format of the platform: UTC, milliseconds, `Z`, e.g. 2026-11-28T23:21:03.123Z."""
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc_iso(text: str) -> datetime:
    """The inverse of `utc_iso` (also reads Docker's nanosecond timestamps)."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:   # Python reads at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
