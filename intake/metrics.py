"""Prometheus metrics of intake (`GET /metrics`, prometheus-client's text format).

- ``arena_uploads_total{outcome}``: upload attempts by how they ended (accepted, duplicate, refused);
- ``arena_refusals_total{rule, status}``: every refusal intake answered, by the rule it named
  (``daily_quota``, ``upload_rate_limit``, ``max_request_bytes``, ``dockerfile.from_not_allowed``, …);
- ``arena_queue_depth{queue, status}`` and ``arena_queue_oldest_seconds{queue}``: unfinished submissions
  in the bucket, read at scrape time (one marker and one status file per submission).

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
from lake.vocabulary import ACTIVE_STATUSES, parse_utc_iso


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


class IntakeMetrics:
    def __init__(self, bucket_root):
        self.registry = CollectorRegistry()
        self.uploads = Counter("arena_uploads", "Upload attempts by outcome", ["outcome"], registry=self.registry)
        self.refusals = Counter("arena_refusals", "Refusals by the rule they named, and HTTP status",
                                ["rule", "status"], registry=self.registry)
        self.registry.register(QueueCollector(bucket_root))

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
