"""Every scenario of DESIGN.md runs through `evaluate_image` with LoadGen issuing the queries, and
LoadGen's validity verdict is part of the result: an INVALID run is never ranked silently."""
from __future__ import annotations

import pytest

from sandbox_workloads import assert_calibrated_ok, calibrated_workload

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("scenario", ["offline", "single-stream", "server"])
def test_scenario_measures_the_calibrated_decoder(scenario, calibrated, evaluate):
    # short requests: server's early stopping needs about 500 queries for a verdict
    evaluation = evaluate(calibrated, "auto", workload=calibrated_workload(
        n_cases=6, max_new_tokens=4, scenario=scenario, min_duration_ms=1000))
    assert_calibrated_ok(evaluation)
    result = evaluation.result
    m = result["measurement"]
    assert m["scenario"] == scenario and m["repeats"] == 1
    assert m["loadgen_valid_runs"] == [True]
    # valid unless the interference guard found the evaluation CPU still busy after its re-measures
    # (a loaded shared host): then the run is measured but never ranked
    assert m["valid"] is (not (m["interference"] or {}).get("disturbed", False)), m["interference"]
    assert result["metrics"]["tokens_per_second"] > 0
    assert result["metrics"]["tpot_p50_ms"] is not None and result["metrics"]["ttft_p50_ms"] is not None
    scored = {run.label for run in evaluation.outcome.runs}   # a re-measured (disturbed) run is not scored
    timed = [row for row in evaluation.requests if row["run"] in scored]
    assert timed and all(row["tokens"] == 4 and row["correct_tokens"] == 4 for row in timed)


def test_invalid_run_is_flagged_not_ranked(calibrated, evaluate):
    """A server run whose per-token latency bound (1 ms) the decoder (2 ms a token) cannot meet."""
    evaluation = evaluate(calibrated, "auto", workload=calibrated_workload(
        n_cases=6, max_new_tokens=4, scenario="server", min_duration_ms=1000, tpot_latency_ns=10**6))
    result = evaluation.result
    assert result["measurement"]["loadgen_valid_runs"] == [False]
    assert result["measurement"]["valid"] is False
