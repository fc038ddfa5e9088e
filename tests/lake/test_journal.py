"""The journal after a compaction (only the tail is left to list), readers racing a compaction, the
manifest without per-file sources, and the shared DuckDB database; on a disk and on a real S3 server."""
from __future__ import annotations

import pytest

from lake.compaction import compact, sources_key
from lake.leaderboard import build_leaderboard
from lake.tables import JOURNAL, Lake
from lake.views import available_views, connect
from tests.lake.test_compaction import requests, seed
from tests.lake.test_lake import CHALLENGE, add
from tests.lake.test_storage import storage  # noqa: F401  (fixture: a disk and the moto S3 server)
from tests.s3server import s3_server, s3_url  # noqa: F401

TABLES = ("submissions", "evaluations", "requests")


@pytest.fixture(autouse=True)
def no_grace(monkeypatch):
    monkeypatch.setenv("ARENA_LAKE_COMPACT_GRACE_S", "0")


@pytest.fixture
def lake(storage) -> Lake:
    """A lake on each of test_storage's storages: a disk and the moto S3 server."""
    return Lake(storage)


def count(lake: Lake, table: str) -> int:
    return connect(lake, tables=(table,)).execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def test_after_a_compaction_the_journal_holds_only_the_tail(lake):
    seed(lake, 5)
    assert all(len(lake.journal_after(t)) == 5 for t in TABLES)
    reports = {r.table: r for r in compact(lake)}
    assert {t: reports[t].journal_deleted for t in TABLES} == {t: 5 for t in TABLES}
    # the whole journal is gone: its files are in the parts
    assert all(lake.storage.list_after(f"{JOURNAL}/{t}/") == [] for t in TABLES)
    add(lake, "01KZY", "user7", "2026-01-02T00:00:00Z", tps=1.0)
    add(lake, "01KZZ", "user8", "2026-01-02T00:00:01Z", tps=2.0)
    watermark = lake.manifest("evaluations")["watermark"]
    tail = lake.journal_after("evaluations", watermark)
    # what a reader lists after the watermark is what the journal holds: the two new files, no more
    assert [key for _, key in tail] == [key for _, key in lake.journal_after("evaluations")]
    assert sorted(key.split("/")[2] for _, key in tail) == ["submission_id=01KZY", "submission_id=01KZZ"]
    assert count(lake, "evaluations") == 7 and count(lake, "requests") == 20
    compact(lake)
    assert lake.journal_after("evaluations") == [] and count(lake, "evaluations") == 7


def test_the_manifest_names_parts_only_and_their_sources_live_beside_them(lake):
    seed(lake, 4)
    compact(lake)
    manifest = lake.manifest("requests")
    assert manifest["parts"] and all("sources" not in p for p in manifest["parts"])
    held = {}
    for part in manifest["parts"]:
        assert part["sources_key"] == sources_key(part["key"])
        held |= lake.storage.get_json(part["sources_key"])
    assert sorted(held) == sorted(lake.storage.list_after("requests/"))
    # a manifest written before the sources moved out (inline): still read, and rewritten
    for part in manifest["parts"]:
        part["sources"] = lake.storage.get_json(part.pop("sources_key"))
        lake.storage.delete(sources_key(part["key"]))
    lake.storage.put_json("_compacted/requests/manifest.json", manifest)
    lake.write_requests(CHALLENGE, "01KZZ", 1, requests(3))
    report = compact(lake, tables=("requests",), rows_per_part=4)[0]
    assert report.files_compacted == 1 and report.parts_kept == len(manifest["parts"])
    parts = lake.manifest("requests")["parts"]
    assert all("sources" not in p and lake.storage.exists(p["sources_key"]) for p in parts)
    assert count(lake, "requests") == 19


def test_a_reader_listing_the_journal_while_a_compaction_swaps_the_manifest_reads_again(lake):
    seed(lake, 3)
    reader = Lake(lake.storage)
    real = reader.journal_after
    compacted = []

    def during_a_compaction(table, watermark=""):
        # the reader read the manifest of generation 0; a compaction swaps it and deletes the journal
        # it covers before the reader lists the journal
        if not compacted:
            compacted.append(compact(Lake(lake.storage), tables=("evaluations",)))
        return real(table, watermark)

    reader.journal_after = during_a_compaction
    con = connect(reader, tables=("evaluations",))
    assert compacted and lake.manifest("evaluations")["generation"] == 1
    assert con.execute("SELECT count(*) FROM evaluations").fetchall() == [(3,)]


def test_shared_connections_keep_their_views_to_themselves(tmp_path):
    one, two = Lake(tmp_path / "one"), Lake(tmp_path / "two")
    seed(one, 3)
    seed(two, 5)
    compact(one)
    a = connect(one, tables=("evaluations",), shared=True)
    b = connect(two, tables=("evaluations", "submissions"), shared=True)
    assert a.execute("SELECT count(*) FROM evaluations").fetchall() == [(3,)]
    assert b.execute("SELECT count(*) FROM evaluations").fetchall() == [(5,)]
    assert available_views(a) == ["evaluations"] and available_views(b) == ["evaluations", "submissions"]
    a.close()
    assert b.execute("SELECT count(*) FROM submissions").fetchall() == [(5,)]
    b.close()
    # the leaderboard reads through a shared cursor: twice in a row, the same answer as a private one
    first = build_leaderboard(one, CHALLENGE).to_pylist()
    assert build_leaderboard(one, CHALLENGE).to_pylist() == first
    private = connect(one, tables=("evaluations",))
    assert private.execute("SELECT count(*) FROM evaluations").fetchall() == [(3,)]
    assert len(first) == 3
