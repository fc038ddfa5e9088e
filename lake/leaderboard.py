"""The leaderboard: the best successful, valid evaluation per participant, built with DuckDB.

Participants with no ranked evaluation are listed too, unranked, with their latest status and reason,
so a rejected submission is visible as rejected rather than missing.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from lake.storage import Storage
from lake.tables import Lake, as_lake
from lake.views import available_views, connect
from lake.vocabulary import UNRANKED_DISTURBED, UNRANKED_INVALID

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


def build_leaderboard(where: "Lake | Storage | str | Path", challenge: str) -> pa.Table:
    """Compute the leaderboard of one challenge from the lake's compacted tables (plus the files
    written since the last compaction) and write it atomically."""
    lake = as_lake(where)
    con = connect(lake, tables=("submissions", "evaluations"), shared=True)
    try:
        if not {"evaluations", "submissions"} <= set(available_views(con)):
            table = pa.table({"rank": pa.array([], pa.int32()), "participant": pa.array([], pa.string())})
        else:
            table = con.sql(LEADERBOARD_SQL, params={"challenge": challenge, "disturbed": UNRANKED_DISTURBED,
                                                        "invalid": UNRANKED_INVALID}).to_arrow_table()
    finally:
        con.close()
    lake.write_leaderboard(challenge, table)
    return table


def read_leaderboard(where: "Lake | Storage | str | Path", challenge: str) -> list[dict]:
    """Rows of the last built leaderboard (empty when none was built yet)."""
    return as_lake(where).read_leaderboard(challenge)
