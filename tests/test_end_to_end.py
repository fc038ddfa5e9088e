"""The whole platform, as `make demo` runs it: services up, uploads over HTTP, the Dagster daemon's
sensor, Docker builds and sandboxed runs, scores in the lake, the leaderboard asset."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from intake.client import ArenaClient, ArenaError
from lake.results import validate_result
from lake.views import connect

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.docker]
from lake.vocabulary import TERMINAL_STATUSES as TERMINAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """`scripts/services.py up` on a fresh ARENA_HOME and free ports; `down` afterwards."""
    home = tmp_path_factory.mktemp("arena-home")
    env = os.environ | {
        "ARENA_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
        "ARENA_PORT": str(free_port()), "ARENA_DAGSTER_PORT": str(free_port()),
        "ARENA_STREAMLIT_PORT": str(free_port()),
    }
    for key in ("ARENA_DATABASE_URL", "ARENA_BUCKET_URL", "ARENA_LAKE_URL", "ARENA_URL", "ARENA_TOKEN"):
        env.pop(key, None)
    services = [sys.executable, str(ROOT / "scripts" / "services.py")]
    up = subprocess.run(services + ["up", "--timeout", "240"], cwd=ROOT, env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield env, home
    finally:
        subprocess.run(services + ["down"], cwd=ROOT, env=env, capture_output=True, text=True)
        for log in sorted((home / "logs").glob("*.log")):
            print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-2000:]}")


def arena_cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "arena"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_examples_are_ranked_and_the_wrong_one_is_rejected(platform, tmp_path):
    env, home = platform
    url = f"http://127.0.0.1:{env['ARENA_PORT']}"
    tokens = {}
    for user in ("alice", "bob", "carol"):
        made = arena_cli(env, "admin", "create-user", user)
        assert made.returncode == 0, made.stderr
        tokens[user] = made.stdout.strip().splitlines()[-1]

    # a refused upload: named rule, nothing queued
    not_a_zip = tmp_path / "submission.zip"
    not_a_zip.write_bytes(b"this is not a zip archive")
    with ArenaClient(url, tokens["alice"]) as client:
        with pytest.raises(ArenaError) as refused:
            client.submit(not_a_zip)
    assert any(d.get("rule") == "zip.not_a_zip" for d in refused.value.details), refused.value.details
    assert not list((home / "bucket").glob("incoming/*/*"))

    ids = {}
    for user, example in (("alice", "baseline"), ("bob", "kv-cache"), ("carol", "wrong")):
        with ArenaClient(url, tokens[user]) as client:
            ids[example] = client.submit(ROOT / "examples" / example)["id"]
    assert len(list((home / "bucket" / "incoming").glob("*/*.json"))) == 3

    # the CLI follows one of them to its end, as a participant would
    follow = arena_cli(env | {"ARENA_URL": url, "ARENA_TOKEN": tokens["carol"]}, "status", ids["wrong"])
    assert follow.returncode == 0, follow.stderr

    deadline = time.monotonic() + 900
    final = {}
    while len(final) < 3 and time.monotonic() < deadline:
        for example, sid in ids.items():
            user = {"baseline": "alice", "kv-cache": "bob", "wrong": "carol"}[example]
            with ArenaClient(url, tokens[user]) as client:
                st = client.status(sid)
            if st["status"] in TERMINAL:
                final[example] = st
        time.sleep(3)
    assert len(final) == 3, f"not all terminal: {final}"

    assert final["baseline"]["status"] == "success", final["baseline"]
    assert final["kv-cache"]["status"] == "success", final["kv-cache"]
    assert (final["wrong"]["status"], final["wrong"]["reason"]) == ("rejected", "accuracy")
    for st in final.values():
        validate_result(st["result"])
        assert st["result"]["environment"]["runtime"] in ("runsc", "runc")

    # the lake tells the same story, through the leaderboard asset the sensor launches
    lake = home / "lake"
    board_path = lake / "leaderboard" / "challenge=efficient-decode" / "leaderboard.parquet"
    deadline = time.monotonic() + 180
    rows = []
    while time.monotonic() < deadline:
        if board_path.exists():
            rows = pq.read_table(board_path).to_pylist()
            if {r["submission_id"] for r in rows} >= set(ids.values()):
                break
        time.sleep(2)
    by_id = {r["submission_id"]: r for r in rows}
    assert set(ids.values()) <= set(by_id), rows
    fast, slow, wrong = by_id[ids["kv-cache"]], by_id[ids["baseline"]], by_id[ids["wrong"]]
    assert fast["tokens_per_second"] > slow["tokens_per_second"]
    assert (wrong["rank"], wrong["status"], wrong["reason"]) == (None, "rejected", "accuracy")
    if fast["valid"] and slow["valid"]:
        assert fast["rank"] < slow["rank"]

    con = connect(lake)
    per_run = dict(con.execute(
        "SELECT run, count(*) FROM requests WHERE submission_id = $s GROUP BY run",
        {"s": ids["kv-cache"]}).fetchall())
    assert per_run["accuracy"] == 56 and any(k.startswith("perf-") for k in per_run)
    telemetry = con.execute("SELECT count(*), max(memory_bytes) FROM telemetry WHERE submission_id = $s",
                            {"s": ids["baseline"]}).fetchone()
    assert telemetry[0] > 0 and telemetry[1] > 0
    loadgen = lake / "evaluations" / "challenge=efficient-decode" / f"submission_id={ids['kv-cache']}" / "loadgen"
    assert list(loadgen.glob("attempt=1/perf-1/mlperf_log_summary.txt"))

    # the API serves the leaderboard the participants see
    board = httpx.get(f"{url}/api/v1/leaderboard/efficient-decode", timeout=30).json()
    assert [r["submission_id"] for r in board["rows"] if r["rank"] is not None][:1] in (
        [ids["kv-cache"]], [ids["baseline"]])
    printed = arena_cli(env | {"ARENA_URL": url}, "leaderboard", "efficient-decode")
    assert "rejected" in printed.stdout and "accuracy" in printed.stdout, printed.stdout


def run_worker_pid(instance, run_id: str) -> int | None:
    """The pid of the run's worker process, as Dagster's run worker announces itself in the run's log
    ("Started process for run (pid: N)."), read from the message text; None before it has started."""
    import re
    for record in instance.all_logs(run_id):
        found = re.match(r"Started process for run \(pid: (\d+)\)", record.message or "")
        if found:
            return int(found.group(1))
    return None


def test_a_killed_run_worker_fails_its_run_at_once_and_the_retry_scores_the_submission(platform, tmp_path):
    """Embedded mode under the real daemon: the run worker of a running evaluation is SIGKILLed (the
    OOM killer, an operator's kill -9). The run fails at once (Dagster's code server sees its process
    killed; ArenaDefaultRunLauncher's health check, where the code server is gone too), the step
    process it left behind interrupts itself and cleans up (orchestration/lifeline.py), run retries
    start the submission again, and it is scored as if nothing had happened."""
    import shutil
    import signal

    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.storage.dagster_run import RunsFilter

    from lake.vocabulary import LABEL_SUBMISSION, TAG_SUBMISSION

    env, home = platform
    url = f"http://127.0.0.1:{env['ARENA_PORT']}"
    made = arena_cli(env, "admin", "create-user", "dave")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    source = tmp_path / "baseline-again"
    shutil.copytree(ROOT / "examples" / "baseline", source)
    (source / "NOTES.txt").write_text("the baseline again, killed once on the way\n")
    with ArenaClient(url, token) as client:
        sid = client.submit(source)["id"]

    def step_started(instance, run_id: str, step: str) -> bool:
        return any(e.step_key == step and e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
                   for e in instance.all_logs(run_id))

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        deadline = time.monotonic() + 600
        while True:   # the evaluation step of the submission's run has started
            runs = instance.get_runs(RunsFilter(tags={TAG_SUBMISSION: sid}, statuses=[DagsterRunStatus.STARTED]))
            pid = run_worker_pid(instance, runs[0].run_id) if runs else None
            if pid and alive(pid) and step_started(instance, runs[0].run_id, "evaluation"):
                break
            assert time.monotonic() < deadline, "the submission's evaluation step never started"
            time.sleep(0.5)
        killed = runs[0]
        time.sleep(5)   # into the evaluation: its container runs
        steps = {e.dagster_event.pid for e in instance.all_logs(killed.run_id)
                 if e.step_key and e.dagster_event and e.dagster_event.pid and e.dagster_event.pid != pid}
        assert any(alive(p) for p in steps), "no live step process to leave behind"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.STARTED:
            assert time.monotonic() - killed_at < 120, "the killed run is still STARTED after 120 s"
            time.sleep(0.5)
        failed_after = time.monotonic() - killed_at
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        why = [e.message for e in instance.all_logs(killed.run_id)
               if "signal 9" in (e.message or "") or "run worker lost" in (e.message or "")]
        assert why, "the failure does not say the run worker was killed"
        while any(alive(p) for p in steps):   # the orphaned step interrupts itself and cleans up
            assert time.monotonic() - killed_at < 120, f"step processes {steps} outlived their run worker"
            time.sleep(0.5)
        steps_gone_after = time.monotonic() - killed_at

        with ArenaClient(url, token) as client:
            final = client.wait(sid, timeout=900)
        scored_after = time.monotonic() - killed_at
        print(f"killed run {killed.run_id}: FAILURE after {failed_after:.1f} s ({why[0][:90]}), step processes "
              f"gone after {steps_gone_after:.1f} s, submission {final['status']} after {scored_after:.0f} s")
        assert final["status"] == "success", final
        validate_result(final["result"])
        runs = instance.get_runs(RunsFilter(tags={TAG_SUBMISSION: sid}))
        assert len(runs) >= 2 and killed.run_id in {r.run_id for r in runs}, [r.status for r in runs]
        interrupted = [e.message for e in instance.all_logs(killed.run_id)
                       if e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"
                       and e.step_key == "evaluation"]
        assert not interrupted, "the orphaned evaluation step ran to its end"

    # nothing of the submission is left running on the evaluation CPU once it is scored
    import docker
    engine = docker.from_env()
    deadline = time.monotonic() + 60
    while left := engine.containers.list(all=True, filters={"label": f"{LABEL_SUBMISSION}={sid}"}):
        assert time.monotonic() < deadline, f"containers of {sid} left behind: {[c.name for c in left]}"
        time.sleep(1)
