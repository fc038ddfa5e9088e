"""Prometheus metrics of intake (`GET /metrics`, prometheus-client's text format).

- ``arena_uploads_total{outcome}``: upload attempts by how they ended (accepted, duplicate, refused);
- ``arena_refusals_total{rule, status}``: every refusal intake answered, by the rule it named
  (``daily_quota``, ``upload_rate_limit``, ``max_request_bytes``, ``dockerfile.from_not_allowed``, …);
- ``arena_queue_depth{queue, status}`` and ``arena_queue_oldest_seconds{queue}``: unfinished submissions
  in the bucket, read at scrape time (one marker and one status file per submission).

- ``arena_evaluations{challenge, status, reason}``: sandbox outcomes, evaluations in the lake by how they
  ended (one DuckDB count over the lake's evaluations view, at scrape time);
- ``arena_evaluation_phase_seconds{phase, stat}`` (stat: p50, p90, max) and
  ``arena_evaluation_phase_samples{phase}``: how long finished evaluations of submissions made in the last
  PHASE_WINDOW_S spent in each phase (queued, building, running, scoring), from the timings orchestration
  writes into each status file (only that window's markers are listed: ids are time-ordered ULIDs).

Counters are per intake process (Prometheus sums the replicas). Each app has its own registry, so
several apps in one process (the tests) never share counts. The endpoint answers only to
``Authorization: Bearer $ARENA_METRICS_TOKEN``; without that setting it is off (404).
"""
from __future__ import annotations

import hmac
from datetime import datetime, timezone

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

from lake.bucket import Bucket
from lake.vocabulary import ACTIVE_STATUSES, TERMINAL_STATUSES, parse_utc_iso


class QueueCollector:
    """Queue depth from the bucket, at scrape time."""

    def __init__(self, bucket_root):
        self.bucket_root = bucket_root

    def collect(self):
        bucket = Bucket(self.bucket_root)
        depth: dict[tuple[str, str], int] = {}
        oldest: dict[str, datetime] = {}
        for marker in bucket.markers():
            status = (bucket.status(marker.id) or {}).get("status", "queued")
            if status not in ACTIVE_STATUSES:
                continue
            depth[(marker.queue, status)] = depth.get((marker.queue, status), 0) + 1
            try:
                created = parse_utc_iso(marker.created_at)
            except (TypeError, ValueError):
                continue
            if status == "queued" and (marker.queue not in oldest or created < oldest[marker.queue]):
                oldest[marker.queue] = created
        g = GaugeMetricFamily("arena_queue_depth", "Unfinished submissions in the bucket, by run queue and status",
                              labels=["queue", "status"])
        for queue in sorted({q for q, _ in depth} | {"cpu"}):
            for status in ACTIVE_STATUSES:
                g.add_metric([queue, status], depth.get((queue, status), 0))
        yield g
        now = datetime.now(timezone.utc)
        age = GaugeMetricFamily("arena_queue_oldest_seconds", "Age of the oldest queued submission, by run queue",
                                labels=["queue"])
        for queue, created in sorted(oldest.items()):
            age.add_metric([queue], (now - created).total_seconds())
        yield age


PHASE_WINDOW_S = 24 * 3600
PHASES = ACTIVE_STATUSES   # queued -> building -> running -> scoring -> a terminal status


def phase_durations(marker_created_at: str | None, timings: dict) -> dict[str, float]:
    """Seconds spent in each phase of one finished evaluation (a phase it skipped or whose start or end
    was not recorded has no value)."""
    def at(value):
        try:
            return parse_utc_iso(value) if value else None
        except (TypeError, ValueError):
            return None
    ends = [t for s, t in timings.items() if s in TERMINAL_STATUSES]
    marks = {"queued": at(marker_created_at), **{s: at(timings.get(s)) for s in PHASES if s != "queued"},
             "end": at(max(ends)) if ends else None}
    order = [*PHASES, "end"]
    out = {}
    for i, phase in enumerate(PHASES):
        start = marks[phase]
        end = next((marks[n] for n in order[i + 1:] if marks[n] is not None), None)
        if start is not None and end is not None and end >= start:
            out[phase] = (end - start).total_seconds()
    return out


class EvaluationCollector:
    """Sandbox outcomes (the lake) and phase durations (the bucket's status timings), at scrape time."""

    def __init__(self, bucket_root, lake_root, window_s: float = PHASE_WINDOW_S):
        self.bucket_root, self.lake_root, self.window_s = bucket_root, lake_root, window_s

    def outcomes(self) -> list[tuple[str, str, str, int]]:
        from lake.views import available_views, connect
        con = connect(self.lake_root, tables=("evaluations",), shared=True)
        try:
            if "evaluations" not in available_views(con):
                return []
            return con.execute("SELECT challenge, status, coalesce(reason, ''), count(*) FROM evaluations "
                               "GROUP BY ALL ORDER BY ALL").fetchall()
        finally:
            con.close()

    def durations(self) -> dict[str, list[float]]:
        from ulid import ULID
        bucket = Bucket(self.bucket_root)
        since = str(ULID.from_timestamp(datetime.now(timezone.utc).timestamp() - self.window_s))[:10]
        out: dict[str, list[float]] = {p: [] for p in PHASES}
        for marker in bucket.markers(since_id=since):
            status = bucket.status(marker.id) or {}
            if status.get("status") not in TERMINAL_STATUSES:
                continue
            for phase, seconds in phase_durations(marker.created_at, status.get("timings") or {}).items():
                out[phase].append(seconds)
        return out

    def collect(self):
        g = GaugeMetricFamily("arena_evaluations", "Evaluations in the lake by outcome (sandbox outcomes)",
                              labels=["challenge", "status", "reason"])
        for challenge, status, reason, n in self.outcomes():
            g.add_metric([challenge, status, reason], n)
        yield g
        durations = self.durations()
        secs = GaugeMetricFamily("arena_evaluation_phase_seconds",
                                 f"Seconds finished evaluations spent per phase (submissions of the last "
                                 f"{self.window_s:.0f} s)", labels=["phase", "stat"])
        count = GaugeMetricFamily("arena_evaluation_phase_samples",
                                  "Finished evaluations behind arena_evaluation_phase_seconds", labels=["phase"])
        for phase in PHASES:
            values = sorted(durations[phase])
            count.add_metric([phase], len(values))
            if values:
                for stat, q in (("p50", 0.5), ("p90", 0.9)):
                    secs.add_metric([phase, stat], values[min(len(values) - 1, int(q * len(values)))])
                secs.add_metric([phase, "max"], values[-1])
        yield secs
        yield count


class IntakeMetrics:
    def __init__(self, bucket_root, lake_root=None):
        self.registry = CollectorRegistry()
        self.uploads = Counter("arena_uploads", "Upload attempts by outcome", ["outcome"], registry=self.registry)
        self.refusals = Counter("arena_refusals", "Refusals by the rule they named, and HTTP status",
                                ["rule", "status"], registry=self.registry)
        self.registry.register(QueueCollector(bucket_root))
        if lake_root is not None:
            self.registry.register(EvaluationCollector(bucket_root, lake_root))

    def refused(self, rule: str, status: int) -> None:
        self.refusals.labels(rule=rule, status=str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def rule_of(error) -> str:
    """The rule a refusal named (first detail's ``rule``), else its code."""
    details = getattr(error, "details", None) or []
    if details and isinstance(details[0], dict) and details[0].get("rule"):
        return str(details[0]["rule"])
    return str(getattr(error, "code", "error"))


def authorized(header: str | None, token: str | None) -> bool:
    if not token:
        return False
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
