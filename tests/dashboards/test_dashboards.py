"""The dashboards as an organiser sees them: a real Streamlit server over a real lake, in Chromium."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from seeded_arena import ALICE_OLD, BASELINE, BROKEN, FAST, NOISY, WRONG

pytestmark = pytest.mark.docker


def open_page(page: Page, url: str, heading: str) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    # Streamlit streams elements in while the script runs, and keeps the last run's elements (marked
    # stale) on screen while a rerun replaces them: wait until it has finished and nothing is stale.
    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(1)
    expect(page.locator('[data-stale="true"]')).to_have_count(0)


def snapshot(page: Page, path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1500, "height": max(1100, min(height, 8000))})
    page.screenshot(path=path)


#: One table as the browser shows it, read in one step (a row-by-row read can straddle a re-render).
READ_TABLE = """t => ({
    headers: [...t.querySelectorAll('thead th')].map(c => c.innerText.trim()),
    rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td, th')].map(c => c.innerText.trim())),
    empty: t.querySelector('[data-testid="stTableStyledEmptyTableCell"]') !== null,
})"""


def read_table(page: Page, index: int, timeout_s: float = 90) -> dict:
    """Headers and rows of the ``index``-th table once it has rendered whole: rows, each as wide as the
    header (or the first row, with no header). A table that stays empty or ragged fails here, with what
    it showed."""
    table = page.locator('[data-testid="stTable"]').nth(index)
    expect(table).to_be_visible()
    deadline = time.monotonic() + timeout_s
    while True:
        seen = table.evaluate(READ_TABLE)
        width = len(seen["headers"]) or len(seen["rows"][0] if seen["rows"] else [])
        if not seen["empty"] and seen["rows"] and all(len(r) == width for r in seen["rows"]):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"table {index} did not render whole rows in {timeout_s:.0f} s: {seen}")
        time.sleep(0.25)


def table_rows(page: Page, index: int) -> list[list[str]]:
    return read_table(page, index)["rows"]


def headers(page: Page, index: int) -> list[str]:
    return read_table(page, index)["headers"]


def metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(f"^{re.escape(label)}$")))
    expect(box).to_have_count(1)
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_leaderboard_ranks_fastest_first_then_says_why_the_rest_are_not_ranked(page, streamlit_url, screenshots):
    open_page(page, f"{streamlit_url}/", "Leaderboard")   # the default page lives at the root

    ranked = table_rows(page, 0)
    cols = headers(page, 0)
    assert [row[cols.index("Submission")] for row in ranked] == [FAST.name, BASELINE.name]
    assert [row[cols.index("Rank")] for row in ranked] == ["1", "2"]
    assert ALICE_OLD.name not in page.locator('[data-testid="stTable"]').nth(0).inner_text()  # best per participant
    fast, baseline = (dict(zip(cols, row)) for row in ranked)
    assert fast["Tokens/s"] == "52.4" and fast["Runtime"] == "runsc" and fast["Accuracy"] == "100.00 %"
    assert fast["Peak mem BW (GB/s)"] == "not measured" and fast["Energy (J)"] == "not measured"
    assert baseline["Peak mem BW (GB/s)"] == "812.5" and baseline["Energy (J)"] == "40.2"
    link = page.get_by_role("link", name=FAST.name)
    assert link.get_attribute("href").endswith(f"explorer?submission={FAST.id}")

    unranked_cols = headers(page, 1)
    unranked = {row[unranked_cols.index("Submission")]: dict(zip(unranked_cols, row)) for row in table_rows(page, 1)}
    assert set(unranked) == {WRONG.name, BROKEN.name, NOISY.name}
    assert (unranked[WRONG.name]["Status"], unranked[WRONG.name]["Reason"]) == ("rejected", "accuracy")
    assert (unranked[BROKEN.name]["Status"], unranked[BROKEN.name]["Reason"]) == ("failed", "build")
    assert unranked[BROKEN.name]["Tokens/s"] == "not measured"
    assert unranked[NOISY.name]["Reason"] == "invalid measurement"
    expect(page.locator('[data-testid="stVegaLiteChart"]')).to_have_count(2)   # tokens/s bars, history
    snapshot(page, screenshots / "leaderboard.png")


def test_explorer_opens_the_linked_submission_and_flags_replayed_telemetry(page, streamlit_url, screenshots):
    open_page(page, f"{streamlit_url}/explorer?submission={BASELINE.id}", "Run explorer")

    expect(page.get_by_text("Replayed trace, not measured")).to_be_visible()
    assert metric(page, "Tokens/s") == "12.5"
    stats = table_rows(page, 3)   # after the metrics, measurement and environment tables
    assert [row[0] for row in stats] == ["accuracy", "warmup-1", "perf-1", "perf-2"]
    assert [row[1] for row in stats] == ["8", "8", "16", "16"]
    for title in ("CPU (% of one core)", "Memory working set (MiB)", "GPU power (W)", "DRAM bandwidth (GB/s)"):
        expect(page.get_by_text(title, exact=True)).to_be_visible()
    expect(page.get_by_text("Latency over time")).to_be_visible()
    snapshot(page, screenshots / "explorer-replay.png")


def test_explorer_shows_a_measured_run_its_missing_metrics_and_its_logs(page, streamlit_url, arena, screenshots):
    open_page(page, f"{streamlit_url}/explorer?submission={FAST.id}", "Run explorer")

    expect(page.get_by_text("success", exact=True)).to_be_visible()
    metrics = dict(table_rows(page, 0))
    assert metrics["Tokens/s"] == "52.4"
    assert metrics["Peak memory bandwidth"] == "not measured" and metrics["Energy"] == "not measured"
    measurement = dict(table_rows(page, 1))
    assert measurement["valid"] == "yes" and measurement["scenario"] == "offline"
    assert dict(table_rows(page, 2))["runtime"] == "runsc"
    expect(page.get_by_text("Replayed trace")).to_have_count(0)
    expect(page.get_by_text("GPU power (W)")).to_have_count(0)      # no GPU rows: no GPU charts
    expect(page.get_by_text("CPU (% of one core)")).to_be_visible()
    loadgen = arena.lake.uri(arena.lake.evaluation_prefix("efficient-decode", FAST.id) + "loadgen/")
    expect(page.get_by_text(str(loadgen), exact=True)).to_be_visible()
    expect(page.get_by_text("attempt=1/perf-1/mlperf_log_summary.txt").first).to_be_visible()
    snapshot(page, screenshots / "explorer-measured.png")

    open_page(page, f"{streamlit_url}/explorer?submission={WRONG.id}", "Run explorer")
    verdict = page.get_by_test_id("stAlertContentWarning")
    expect(verdict).to_contain_text("rejected — reason: accuracy")
    expect(verdict).to_contain_text("token accuracy 0.4200 (public 0.45, private 0.40), below the 0.99 gate")

    page.get_by_test_id("stSelectbox").first.click()   # "Submission": picking another one updates the link
    page.get_by_role("option", name=re.compile(BROKEN.name)).click()
    expect(page).to_have_url(re.compile(f"submission={BROKEN.id}"))
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text("failed — reason: build")
    expect(page.get_by_text("No request rows for this attempt")).to_be_visible()


def test_admin_shows_cluster_health_the_queue_and_dagster_runs(page, streamlit_url, arena, screenshots):
    open_page(page, f"{streamlit_url}/admin", "Admin — cluster and queue")

    assert metric(page, "Queued") == "2"
    assert metric(page, "Building") == "1"
    assert metric(page, "Running") == "1"
    assert metric(page, "Scoring") == "0"
    assert metric(page, "Terminal") == "6"
    assert metric(page, "Oldest queued").startswith("2 h")   # the older of two markers made 2 h 3 min ago
    assert metric(page, "gVisor (runsc)") in ("registered", "not registered")
    assert re.match(r"^\d+\.\d+", metric(page, "Docker engine"))
    assert re.match(r"^[\d,.]+ [KMGT]iB$", metric(page, "Disk free (ARENA_HOME)"))
    expect(page.get_by_role("cell", name=arena.container_name, exact=True)).to_be_visible()

    dagster = page.locator('[data-testid="stTable"]').filter(has_text="Starting / started")
    expect(dagster).to_have_count(1)
    per_queue = {row[0]: row[1:] for row in [[c.strip() for c in r.locator("td, th").all_inner_texts()]
                                              for r in dagster.locator("tbody tr").all()]}
    assert per_queue == {"cpu": ["2", "1", "1"], "gpu-h100": ["1", "0", "none"]}   # limits from dagster.yaml
    rerun = page.locator('[data-testid="stTable"]').filter(has_text=WRONG.id).filter(has_text="QUEUED")
    expect(rerun).to_contain_text("10")   # the operator rerun's dagster/priority
    snapshot(page, screenshots / "admin.png")


def test_admin_data_says_why_when_dagster_is_not_reachable(tmp_path, monkeypatch):
    from dashboards import data

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    data.dagster_runs.clear()
    assert "no dagster.yaml" in data.dagster_runs()["error"]

    home = tmp_path / "broken"
    home.mkdir()
    (tmp_path / "not-a-dir").write_text("")   # storage under a regular file cannot be opened
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {tmp_path / 'not-a-dir' / 'x'}\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    data.dagster_runs.clear()
    assert "Dagster's run storage does not answer" in data.dagster_runs()["error"]
    data.dagster_runs.clear()
