"""The leaderboard: the best successful, valid evaluation per participant, built with DuckDB.

Participants with no ranked evaluation are listed too, unranked, with their latest status and reason,
so a rejected submission is visible as rejected rather than missing.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from lake.tables import Lake
from lake.vocabulary import UNRANKED_DISTURBED, UNRANKED_INVALID
from lake.views import connect

LEADERBOARD_SQL = """
WITH ev AS (
  SELECT e.*, s."user" AS participant, coalesce(s.display_name, s."user") AS display_name,
         s.created_at AS submitted_at
  FROM evaluations e JOIN submissions s ON s.id = e.submission_id AND s.challenge = e.challenge
  WHERE e.challenge = $challenge
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY participant
                               ORDER BY m_tokens_per_second DESC, submitted_at) AS nth
  FROM ev WHERE status = 'success' AND coalesce(valid, false)
),
best AS (SELECT * EXCLUDE (nth) FROM ranked WHERE nth = 1),
unranked AS (
  SELECT * EXCLUDE (nth) FROM (
    SELECT *, row_number() OVER (PARTITION BY participant ORDER BY submitted_at DESC) AS nth
    FROM ev WHERE participant NOT IN (SELECT participant FROM best)) WHERE nth = 1
)
SELECT CAST(rank() OVER (ORDER BY m_tokens_per_second DESC) AS INTEGER) AS rank, participant,
       display_name, submission_id, status, reason, m_tokens_per_second AS tokens_per_second,
       m_latency_p99_ms AS latency_p99_ms, m_ttft_p50_ms AS ttft_p50_ms, m_tpot_p50_ms AS tpot_p50_ms,
       m_accuracy AS accuracy, m_peak_memory_bw_GBs AS peak_memory_bw_GBs,
       m_energy_joules AS energy_joules, tokens_per_second_cv, valid, runtime, submitted_at
FROM best
UNION ALL
SELECT NULL, participant, display_name, submission_id, status,
       coalesce(reason, CASE WHEN coalesce(disturbed, false) THEN $disturbed
                             WHEN NOT coalesce(valid, false) THEN $invalid END),
       m_tokens_per_second, m_latency_p99_ms, m_ttft_p50_ms, m_tpot_p50_ms, m_accuracy,
       m_peak_memory_bw_GBs, m_energy_joules, tokens_per_second_cv, valid, runtime, submitted_at
FROM unranked
ORDER BY rank NULLS LAST, submitted_at
"""


def build_leaderboard(lake_root: Path, challenge: str) -> pa.Table:
    """Compute the leaderboard of one challenge from the lake and write it atomically."""
    lake = Lake(lake_root)
    con = connect(lake_root)
    if not {"evaluations", "submissions"} <= {r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}:
        table = pa.table({"rank": pa.array([], pa.int32()), "participant": pa.array([], pa.string())})
    else:
        table = con.sql(LEADERBOARD_SQL, params={"challenge": challenge, "disturbed": UNRANKED_DISTURBED,
                                                    "invalid": UNRANKED_INVALID}).to_arrow_table()
    lake.write_table(lake.leaderboard_path(challenge), table)
    return table


def read_leaderboard(lake_root: Path, challenge: str) -> list[dict]:
    """Rows of the last built leaderboard (empty when none was built yet)."""
    path = Lake(lake_root).leaderboard_path(challenge)
    if not path.exists():
        return []
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pylist()
