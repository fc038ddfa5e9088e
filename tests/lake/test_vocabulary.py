"""The shared vocabulary is the one source of statuses and reasons: the result schema agrees with it."""
from datetime import datetime, timezone

from lake.results import result_schema
from lake.vocabulary import REASONS, TERMINAL_STATUSES, parse_utc_iso, utc_iso


def test_result_schema_uses_the_vocabulary():
    props = result_schema()["properties"]
    assert tuple(props["status"]["enum"]) == TERMINAL_STATUSES
    assert [r for r in props["reason"]["enum"] if r is not None] == list(REASONS)


def test_time_format_round_trips_and_reads_docker_nanoseconds():
    moment = datetime(2026, 11, 28, 23, 21, 3, 123000, tzinfo=timezone.utc)
    assert utc_iso(moment) == "2026-11-28T23:21:03.123Z"
    assert parse_utc_iso(utc_iso(moment)) == moment
    assert parse_utc_iso("2026-11-28T23:21:03.123456789Z") == moment.replace(microsecond=123456)
