"""Every query of lake/examples.sql runs on a real lake and says something true about it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from seeded_arena import BASELINE, FAST
from lake.views import connect

pytestmark = pytest.mark.docker   # the seeded arena samples a real container

EXAMPLES = Path(__file__).resolve().parents[2] / "lake" / "examples.sql"


def examples() -> dict[str, str]:
    return dict(re.findall(r"^-- name: (\w+)\n(.*?;)", EXAMPLES.read_text(), flags=re.S | re.M))


def test_the_examples_file_names_five_queries():
    assert list(examples()) == ["leaderboard", "ttft_percentiles_per_run", "telemetry_peak_memory",
                                "runtime_comparison", "outcomes"]


@pytest.fixture(scope="module")
def lake_sql(arena):
    con = connect(arena.lake)

    def run(name: str) -> list[dict]:
        cur = con.execute(examples()[name])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    yield run
    con.close()


def test_leaderboard_example_ranks_the_fastest_first(lake_sql):
    rows = lake_sql("leaderboard")
    assert [r["display_name"] for r in rows[:2]] == [FAST.name, BASELINE.name]
    assert {r["reason"] for r in rows[2:]} == {"accuracy", "build", "invalid measurement"}


def test_ttft_example_gives_percentiles_per_run(lake_sql):
    rows = [r for r in lake_sql("ttft_percentiles_per_run") if r["submission_id"] == FAST.id]
    assert [r["run"] for r in rows] == ["accuracy", "perf-1", "perf-2", "warmup-1"]
    assert all(r["ttft_p50_ms"] <= r["ttft_p90_ms"] <= r["ttft_p99_ms"] for r in rows)


def test_telemetry_example_uses_measured_rows_only(lake_sql):
    rows = {r["submission_id"]: r for r in lake_sql("telemetry_peak_memory")}
    assert set(rows) == {FAST.id, BASELINE.id}    # both had the container sampled for real
    assert all(r["memory_peak_MiB"] > 0 and r["samples"] >= 3 for r in rows.values())


def test_runtime_and_outcome_examples(lake_sql):
    runtimes = {r["runtime"]: r for r in lake_sql("runtime_comparison")}
    assert set(runtimes) == {"runsc", "runc"}
    assert runtimes["runsc"]["evaluations"] == 2     # the invalid measurement is left out
    outcomes = {(r["status"], r["reason"]): r["evaluations"] for r in lake_sql("outcomes")}
    assert outcomes == {("success", None): 3, ("rejected", "accuracy"): 1, ("failed", "build"): 1,
                        ("success", "invalid measurement"): 1}
