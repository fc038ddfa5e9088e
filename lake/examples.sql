-- Decode Arena: example DuckDB queries over the lake.
--
-- Run one with the CLI:   arena lake sql "$(sed -n '/name: leaderboard/,/;/p' lake/examples.sql)"
-- or in Python:           lake.views.connect(root).sql(open('lake/examples.sql').read().split(';')[0])
-- The views (submissions, evaluations, requests, telemetry, leaderboard) are those of lake/views.py;
-- hive partitions (challenge, submission_id, attempt) are ordinary columns. Each query below is
-- run against a test lake by tests/dashboards/test_lake_examples.py, so they stay correct.

-- name: leaderboard
-- The board of one challenge as participants see it: ranked first, then why the others are not.
SELECT rank, display_name, participant, round(tokens_per_second, 1) AS tokens_per_s,
       round(latency_p99_ms, 1) AS p99_ms, accuracy, runtime, status, reason
FROM leaderboard
WHERE challenge = 'efficient-decode'
ORDER BY rank NULLS LAST, submitted_at;

-- name: ttft_percentiles_per_run
-- Time to first token and time per output token, per LoadGen run of every evaluation
-- (accuracy pass, warm-up runs, timed perf-N repeats).
SELECT submission_id, attempt, run, count(*) AS requests,
       round(quantile_cont(ttft_ms, 0.50), 2) AS ttft_p50_ms,
       round(quantile_cont(ttft_ms, 0.90), 2) AS ttft_p90_ms,
       round(quantile_cont(ttft_ms, 0.99), 2) AS ttft_p99_ms,
       round(quantile_cont(tpot_ms, 0.50), 3) AS tpot_p50_ms
FROM requests
WHERE ttft_ms IS NOT NULL
GROUP BY ALL
ORDER BY submission_id, attempt, run;

-- name: telemetry_peak_memory
-- Peak container memory and CPU per submission, from measured telemetry only: rows replayed from
-- a trace (source = 'replay') say nothing about the submission.
SELECT t.submission_id, s.display_name, t.attempt, count(*) AS samples,
       round(max(t.memory_peak_bytes) / 2^20, 1) AS memory_peak_MiB,
       round(max(t.memory_bytes) / 2^20, 1) AS working_set_peak_MiB,
       round(max(t.cpu_percent), 1) AS cpu_peak_percent,
       max(t.pids) AS pids_peak
FROM telemetry t LEFT JOIN submissions s ON s.id = t.submission_id
WHERE t.source <> 'replay' AND t.device = 'container'
GROUP BY ALL
ORDER BY memory_peak_MiB DESC NULLS LAST;

-- name: runtime_comparison
-- Does the sandbox runtime cost speed? Successful, valid evaluations grouped by runtime
-- (runsc = gVisor, runc = plain containers).
SELECT runtime, count(*) AS evaluations,
       round(median(m_tokens_per_second), 1) AS median_tokens_per_s,
       round(median(m_tpot_p50_ms), 3) AS median_tpot_p50_ms,
       round(median(m_ttft_p50_ms), 3) AS median_ttft_p50_ms
FROM evaluations
WHERE status = 'success' AND valid
GROUP BY runtime
ORDER BY median_tokens_per_s DESC;

-- name: outcomes
-- How evaluations end, per challenge: successes, and each reason for a rejection or failure.
SELECT challenge, status, coalesce(reason, CASE WHEN status = 'success' AND NOT coalesce(valid, false)
                                              THEN 'invalid measurement' END) AS reason,
       count(*) AS evaluations
FROM evaluations
GROUP BY ALL
ORDER BY challenge, evaluations DESC, status;
