"""The operators' panels in a real browser: run comparison, GPU panels, leaderboard history, the admin's
queue per pool, device health, failures by reason and disturbed runs."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from seeded_arena import BASELINE, BROKEN, FAST, WRONG
from test_dashboards import metric, open_page, snapshot

pytestmark = pytest.mark.docker


def table_with(page, text: str):
    table = page.locator('[data-testid="stTable"]').filter(has_text=text)
    expect(table.first).to_be_visible()
    return table.first


def rows_of(table) -> list[dict[str, str]]:
    cols = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    return [dict(zip(cols, [c.strip() for c in r.locator("td, th").all_inner_texts()]))
            for r in table.locator("tbody tr").all()]


def test_compare_shows_both_runs_side_by_side_with_cdf_timeline_and_gpu(page, streamlit_url, screenshots):
    open_page(page, f"{streamlit_url}/explorer?submission={FAST.id}&compare={BASELINE.id}", "Run explorer")

    expect(page.get_by_role("heading", name="Compare")).to_be_visible()
    for run in (FAST, BASELINE):
        expect(page.get_by_text(f"{run.id} · {run.name} · attempt 1")).to_be_visible()
    tables = [rows_of(page.locator('[data-testid="stTable"]').nth(i)) for i in range(2)]
    values = [{r["metric"]: r["value"] for r in t} for t in tables]
    assert values[0]["Tokens/s"] == "52.4" and values[1]["Tokens/s"] == "12.5"
    expect(page.get_by_text("Latency CDF")).to_be_visible()
    assert page.get_by_text(re.compile(r"^Token arrival — ")).count() == 2
    expect(page.get_by_role("heading", name=f"Telemetry — {FAST.id} · {FAST.name}")).to_be_visible()
    expect(page.get_by_role("heading", name=f"Telemetry — {BASELINE.id} · {BASELINE.name}")).to_be_visible()
    # GPU panels: only the run with GPU rows (BASELINE: replayed), labelled as replay
    expect(page.get_by_role("heading", name="GPU")).to_be_visible()
    gpu_heads = page.get_by_text(re.compile(r"replay \(recorded trace, not measured\)"))
    expect(gpu_heads).to_have_count(1)
    expect(gpu_heads).to_contain_text(BASELINE.id)
    for title in ("GPU utilisation (%)", "GPU power (W)", "GPU energy used (J)"):
        expect(page.get_by_text(title, exact=True)).to_have_count(1)
    # CDF (1) + two timelines + the CPU and memory charts of both runs + the GPU charts
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 3 + 4 + 3
    expect(page).to_have_url(re.compile(f"compare={BASELINE.id}"))
    snapshot(page, screenshots / "explorer-compare.png")


def test_one_run_has_cdf_and_timeline_and_gpu_panels_only_with_gpu_rows(page, streamlit_url):
    open_page(page, f"{streamlit_url}/explorer?submission={FAST.id}", "Run explorer")
    expect(page.get_by_text("Latency CDF")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Token arrival — "))).to_have_count(1)
    expect(page.get_by_role("heading", name="GPU")).to_have_count(0)       # no GPU rows: no GPU panels
    expect(page.get_by_text("GPU utilisation (%)", exact=True)).to_have_count(0)

    open_page(page, f"{streamlit_url}/explorer?submission={BASELINE.id}", "Run explorer")
    expect(page.get_by_role("heading", name="GPU")).to_be_visible()
    expect(page.get_by_text("GPU utilisation (%)", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Energy used: replay · gpu0: [\d,.]+ J"))).to_be_visible()


def test_compare_refuses_a_run_the_participant_may_not_see(participant_page, streamlit_url):
    open_page(participant_page, f"{streamlit_url}/explorer?submission={FAST.id}&compare={BASELINE.id}",
              "Run explorer")
    expect(participant_page.get_by_text(f"No submission {BASELINE.id} that you may see.")).to_be_visible()
    expect(participant_page.get_by_role("heading", name="Compare")).to_have_count(0)
    expect(participant_page.get_by_text(BASELINE.name)).to_have_count(0)


def test_leaderboard_history_steps_each_participants_best(page, streamlit_url, screenshots):
    open_page(page, f"{streamlit_url}/", "Leaderboard")
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    history = {r["Participant"]: r for r in rows_of(table_with(page, "Records"))}
    assert set(history) == {"alice", "bob"}   # carol rejected, dave failed, erin invalid: no history
    assert history["alice"]["Best tokens/s"] == "52.4" and history["alice"]["Records"] == "1"  # 30.1 came later
    assert history["bob"]["Best tokens/s"] == "12.5"
    expect(page.locator('[data-testid="stVegaLiteChart"]')).to_have_count(2)   # bar chart + history
    snapshot(page, screenshots / "leaderboard-history.png")


def test_admin_shows_queue_per_pool_hosts_failures_and_disturbed_runs(page, streamlit_url, screenshots):
    open_page(page, f"{streamlit_url}/admin", "Admin — cluster and queue")

    pools = {r["Pool"]: r for r in rows_of(table_with(page, "Oldest wait"))}
    assert set(pools) == {"cpu", "gpu-h100"}
    assert (pools["cpu"]["Queued"], pools["cpu"]["Building"], pools["cpu"]["Running"]) == ("1", "1", "1")
    assert (pools["gpu-h100"]["Queued"], pools["gpu-h100"]["Running"]) == ("1", "0")
    assert pools["cpu"]["Oldest wait"].startswith("2 h") and pools["gpu-h100"]["Oldest wait"].startswith("2 h")

    expect(page.get_by_role("heading", name="Device health")).to_be_visible()
    assert re.match(r"^[\d.]+ / [\d.]+ / [\d.]+$", metric(page, "Load (1 / 5 / 15 min)"))
    assert re.match(r"^[\d,.]+ [KMGT]iB$", metric(page, "Memory used"))
    gpus = metric(page, "GPUs (NVML)")
    assert gpus == "no NVML" or gpus.isdigit()
    hosts = {r["Host"]: r for r in rows_of(table_with(page, "Platform failures"))}
    assert set(hosts) == {"worker-a.test", "worker-b.test", "gpu-1.test"}
    assert hosts["worker-a.test"]["Evaluations"] == "3" and hosts["gpu-1.test"]["Evaluations"] == "0"
    assert "gpu-0 (gpu-h100" in hosts["gpu-1.test"]["Workers"]

    expect(page.get_by_role("heading", name="Recent failures by reason")).to_be_visible()
    failures_table = table_with(page, "Latest submissions")
    failures = {(r["Status"], r["Reason"]): r for r in rows_of(failures_table)}
    assert set(failures) == {("failed", "build"), ("rejected", "accuracy")}
    assert failures[("failed", "build")]["Count"] == "1"
    for run in (BROKEN, WRONG):   # each group links its latest submissions to the explorer
        expect(failures_table.locator(f'a[href$="explorer?submission={run.id}"]')).to_have_count(1)

    expect(page.get_by_role("heading", name="Disturbed runs")).to_be_visible()
    disturbed = rows_of(table_with(page, "Re-measured"))
    assert [(r["Submission"], r["Re-measured"], r["Still disturbed"]) for r in disturbed] == [
        (BASELINE.id, "1", "no")]
    snapshot(page, screenshots / "admin-panels.png")
