"""Fleet mode with every part real: PostgreSQL (a database of its own), Redis (DB 7), a moto S3
server, the Dagster daemon and webserver, and Celery workers started by `arena worker start` as
subprocesses. The jobs are the fleet_probe code location's: they hold their worker for a while and
record which worker and devices ran them, so routing, limits, priorities, cancel and retries are
observed from the outside."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from orchestration.fleet import evaluation_tags
from orchestration.localfleet import LocalFleet

pytestmark = pytest.mark.skipif(not (shutil.which("createdb") and shutil.which("redis-server")),
                                reason="needs PostgreSQL and Redis (make setup)")

PROBE = os.path.join(os.path.dirname(__file__), "fleet_probe", "probe.py")
WORKERS = [{"name": "a1", "pool": "a", "devices": "cpuset=0"},
           {"name": "a2", "pool": "a", "devices": "cpuset=1"},
           {"name": "b1", "pool": "b", "devices": "cpuset=1"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    workspace = root / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {PROBE}\n"
                         f"      location_name: fleet_probe\n")
    saved = dict(os.environ)
    f = LocalFleet(root, WORKERS, workspace=workspace, redis_db=7,
                   extra_env={"ARENA_WORKER_LOST_GRACE_S": "4"})
    try:
        f.start()
        f.activate()
        yield f
    finally:
        f.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def client(fleet):
    from dagster_graphql import DagsterGraphQLClient
    return DagsterGraphQLClient("127.0.0.1", port_number=fleet.web_port)


def submit(client, record, pool: str, label: str, seconds: float = 1.0, priority: int = 0) -> str:
    tags = {"arena/queue": pool, "dagster/priority": str(priority), "probe/label": label} | evaluation_tags(pool, None)
    return client.submit_job_execution("probe", repository_location_name="fleet_probe",
                                       run_config={"ops": {"hold": {"config": {"seconds": seconds, "record": str(record)}}}},
                                       tags=tags)


def wait_runs(instance, run_ids, statuses=("SUCCESS",), timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {rid: instance.get_run_by_id(rid) for rid in run_ids}
        if all(r is not None and r.status.value in statuses for r in runs.values()):
            return runs
        if any(r is not None and r.is_finished and r.status.value not in statuses for r in runs.values()):
            break
        time.sleep(0.5)
    raise AssertionError(f"runs not {statuses}: { {rid: (r.status.value if r else None) for rid, r in runs.items()} }")


def wait_started(instance, run_id, timeout=120.0):
    return wait_runs(instance, [run_id], ("STARTED",), timeout)[run_id]


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def test_runs_route_to_their_pool_within_its_limit_on_distinct_devices(fleet, client, tmp_path):
    record = tmp_path / "runs.jsonl"
    ids = [submit(client, record, "a", f"a{i}", seconds=3) for i in range(4)]
    ids += [submit(client, record, "b", f"b{i}", seconds=1) for i in range(2)]
    instance = fleet.instance()
    runs = wait_runs(instance, ids)
    rows = records(record)
    assert len(rows) == 6
    for row in rows:                                  # a pool-A run never ran on the pool-B worker
        run = runs[row["run_id"]]
        assert row["pool"] == run.tags["arena/queue"]
        assert run.tags["arena/worker"].split("@")[0].startswith(row["pool"])
        assert run.tags["arena/devices"] == row["devices"]
    a = [r for r in rows if r["pool"] == "a"]
    assert max_overlap([(r["start"], r["end"]) for r in a]) <= 2      # pool a: two workers, limit 2
    assert {r["devices"] for r in a} == {"cpuset=0", "cpuset=1"}     # both of its devices were used
    for x in a:                                       # overlapping runs never share a device
        for y in a:
            if x is not y and x["start"] < y["end"] and y["start"] < x["end"]:
                assert x["devices"] != y["devices"]
    b = [r for r in rows if r["pool"] == "b"]
    assert max_overlap([(r["start"], r["end"]) for r in b]) == 1      # pool b: one worker


def test_a_pool_starts_queued_runs_by_priority(fleet, client, tmp_path):
    record = tmp_path / "runs.jsonl"
    instance = fleet.instance()
    blocker = submit(client, record, "b", "blocker", seconds=4)
    wait_started(instance, blocker)
    ids = [submit(client, record, "b", label, seconds=0.2, priority=p)
           for label, p in [("low", 0), ("high", 10), ("mid", 5)]]
    wait_runs(instance, [blocker, *ids])
    order = [r["label"] for r in sorted(records(record), key=lambda r: r["start"])]
    assert order == ["blocker", "high", "mid", "low"]


def test_cancel_ends_cancelled(fleet, client, tmp_path):
    instance = fleet.instance()
    run_id = submit(client, tmp_path / "runs.jsonl", "a", "long", seconds=120)
    wait_started(instance, run_id)
    client.terminate_run(run_id)
    run = wait_runs(instance, [run_id], ("CANCELED",), timeout=60)[run_id]
    assert run.status.value == "CANCELED"
    assert not records(tmp_path / "runs.jsonl")      # the op was interrupted, not left to finish


def test_killing_the_daemon_mid_run_loses_nothing(fleet, client, tmp_path):
    """The daemon only dispatches and watches: a started run finishes on its worker without it,
    and a run queued meanwhile starts once the daemon is back."""
    record = tmp_path / "runs.jsonl"
    instance = fleet.instance()
    running = submit(client, record, "b", "running", seconds=6)
    wait_started(instance, running)
    fleet.stop_process("daemon", signal.SIGKILL)
    queued = submit(client, record, "b", "queued-while-down", seconds=0.2)
    assert wait_runs(instance, [running], timeout=60)[running].status.value == "SUCCESS"
    assert instance.get_run_by_id(queued).status.value == "QUEUED"
    fleet.spawn("daemon", fleet.daemon_command())
    wait_runs(instance, [queued], timeout=180)
    assert [r["label"] for r in records(record)] == ["running", "queued-while-down"]


def test_a_run_whose_worker_dies_is_retried_on_another_worker(fleet, client, tmp_path):
    record = tmp_path / "runs.jsonl"
    instance = fleet.instance()
    run_id = submit(client, record, "a", "victim", seconds=15)
    run = wait_started(instance, run_id)
    deadline = time.monotonic() + 30
    while "arena/worker" not in run.tags and time.monotonic() < deadline:
        time.sleep(0.2)
        run = instance.get_run_by_id(run_id)
    victim = run.tags["arena/worker"].split("@")[0]
    fleet.kill_worker(victim)                         # the host dies mid-run
    try:
        failed = wait_runs(instance, [run_id], ("FAILURE",), timeout=90)[run_id]
        assert failed.tags.get("dagster/will_retry") == "true"
        from dagster import RunsFilter
        deadline = time.monotonic() + 90
        retries = []
        while not retries and time.monotonic() < deadline:
            retries = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id}))
            time.sleep(0.5)
        assert retries, "no retry was started"
        retry = wait_runs(instance, [retries[0].run_id], timeout=120)[retries[0].run_id]
        assert retry.tags["arena/worker"].split("@")[0] != victim
        assert retry.tags["arena/queue"] == "a"
        assert [r["label"] for r in records(record)] == ["victim"]    # the retry ran the job to its end
    finally:
        fleet.start_worker(next(w for w in WORKERS if w["name"] == victim))
        fleet.wait_workers([victim])
