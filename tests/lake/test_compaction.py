"""Compaction, the tail, fixed schemas and migrations, on real Parquet files and DuckDB."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake.compaction import MigrationNeeded, compact, migrate
from lake.layout import EVALUATIONS_SCHEMA, TABLES
from lake.leaderboard import build_leaderboard
from lake.tables import Lake
from lake.views import connect, run_relation

from tests.lake.test_lake import CHALLENGE, add, result


@pytest.fixture(autouse=True)
def no_grace(monkeypatch):
    # journal entries of this test are milliseconds old; the grace applies to writers still in flight
    monkeypatch.setenv("ARENA_LAKE_COMPACT_GRACE_S", "0")


def requests(n: int, start: int = 0) -> list[dict]:
    return [{"run": "perf-1", "request_id": f"r{i}", "prompt_index": i, "prompt_set": "sha256:00",
             "sent_ns": start + i, "first_token_ns": start + i + 5, "done_ns": start + i + 50,
             "ttft_ms": 5.0, "tpot_ms": 1.0, "latency_ms": 50.0 + i, "tokens": 8, "correct_tokens": 8,
             "expected_tokens": 8} for i in range(n)]


def seed(lake: Lake, n: int) -> list[str]:
    sids = [f"01K{i:023d}" for i in range(n)]
    for i, sid in enumerate(sids):
        add(lake, sid, f"user{i % 3}", f"2026-01-01T00:00:{i:02d}Z", tps=float(100 + i))
        lake.write_requests(CHALLENGE, sid, 1, requests(4, i * 100))
    return sids


def board(lake: Lake) -> list[tuple]:
    return [(r["rank"], r["participant"], r["submission_id"]) for r in build_leaderboard(lake, CHALLENGE).to_pylist()]


def test_compacted_views_give_the_same_answers_and_new_files_are_visible_at_once(tmp_path):
    lake = Lake(tmp_path)
    sids = seed(lake, 9)
    before = board(lake)
    reports = {r.table: r for r in compact(lake, rows_per_part=20)}
    assert reports["requests"].files_compacted == 9 and reports["requests"].parts_written == 2   # 36 rows / 20
    assert board(lake) == before
    con = connect(lake)
    assert con.execute("SELECT count(*), count(DISTINCT submission_id) FROM requests").fetchall()[0] == (36, 9)
    # a submission written after the compaction is in the views before any compaction sees it
    add(lake, "01KZZ", "user9", "2026-01-02T00:00:00Z", tps=5000.0)
    lake.write_requests(CHALLENGE, "01KZZ", 1, requests(3))
    assert board(lake)[0] == (1, "user9", "01KZZ")
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM requests WHERE submission_id = '01KZZ'").fetchall()[0] == (3,)
    # one run's rows straight from its own file, and through the view
    assert run_relation(con, lake, "requests", CHALLENGE, sids[4], 1).aggregate("count(*)").fetchall() == [(4,)]
    assert con.execute("SELECT count(*) FROM requests WHERE submission_id = $s AND attempt = 1",
                       {"s": sids[4]}).fetchall()[0] == (4,)


def test_a_rerun_after_compaction_replaces_the_compacted_row_never_doubles_it(tmp_path):
    lake = Lake(tmp_path)
    sids = seed(lake, 4)
    compact(lake)
    lake.write_evaluation(result(sids[0], status="rejected", reason="accuracy"), attempt=2)
    for _ in range(2):          # from the tail, then from the next compaction
        con = connect(lake)
        assert con.execute("SELECT attempt, status FROM evaluations WHERE submission_id = $s",
                           {"s": sids[0]}).fetchall() == [(2, "rejected")]
        assert con.execute("SELECT count(*) FROM evaluations").fetchall()[0] == (4,)
        compact(lake)
    # a withdrawn submission row disappears from the compacted table too
    lake.delete_submission(CHALLENGE, sids[1])
    compact(lake)
    assert connect(lake).execute("SELECT count(*) FROM submissions WHERE id = $s", {"s": sids[1]}).fetchall()[0] == (0,)


def test_the_manifest_swap_keeps_the_previous_parts_for_one_generation(tmp_path):
    lake = Lake(tmp_path)
    seed(lake, 3)
    compact(lake)
    first = [p["key"] for p in lake.manifest("evaluations")["parts"]]
    add(lake, "01KZZ", "user9", "2026-01-02T00:00:00Z", tps=1.0)
    compact(lake)                      # the small part is absorbed into a new one
    assert all(lake.storage.exists(k) for k in first)      # a reader holding the old manifest still works
    compact(lake)
    assert not any(lake.storage.exists(k) for k in first)
    assert lake.manifest("evaluations")["generation"] == 3


def test_all_null_columns_keep_their_type_in_every_file(tmp_path):
    lake = Lake(tmp_path)
    add(lake, "S1", "alice", "2026-01-01T00:00:01Z", tps=None, status="failed", reason="build", valid=None)
    schema = pq.read_schema(tmp_path / "evaluations" / f"challenge={CHALLENGE}" / "submission_id=S1"
                            / "evaluation.parquet")
    assert schema.field("m_energy_joules").type == pa.float64() and schema.field("valid").type == pa.bool_()
    assert schema.metadata[b"arena.schema_version"] == str(TABLES["evaluations"].version).encode()
    compact(lake)
    types = dict(connect(lake).execute("SELECT column_name, column_type FROM (DESCRIBE evaluations)").fetchall())
    assert types["m_tokens_per_second"] == "DOUBLE" and types["valid"] == "BOOLEAN"
    assert list(types) == [f.name for f in EVALUATIONS_SCHEMA]


def test_an_old_schema_version_is_refused_until_migrated(tmp_path):
    lake = Lake(tmp_path)
    seed(lake, 2)
    # a file as the lake wrote it before versions existed: types inferred, a column missing, no version
    old = tmp_path / "evaluations" / f"challenge={CHALLENGE}" / "submission_id=OLD" / "evaluation.parquet"
    old.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"submission_id": "OLD", "challenge": CHALLENGE, "status": "success",
                                          "reason": None, "m_tokens_per_second": 7, "attempt": 1}]), old)
    with pytest.raises(MigrationNeeded, match="submission_id=OLD.*schema version 0"):
        compact(lake)
    assert migrate(lake)["evaluations"] == 1
    compact(lake)
    row = connect(lake).execute("SELECT m_tokens_per_second, reason, valid FROM evaluations "
                                "WHERE submission_id = 'OLD'").fetchall()[0]
    assert row == (7.0, None, None)
