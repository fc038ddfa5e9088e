"""Restart dockerd mid-evaluation: the evaluation must not end as the participant's failure.

Opt-in (ARENA_TEST_DOCKERD_RESTART=1, marker ``dockerd_restart``): it restarts the host's Docker engine,
which stops every container on it, other tests' and other users' included. Run it on a machine of its own."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest

from lake.bucket import Bucket
from lake.operator import OperatorStore
from lake.tables import Lake
from lake.vocabulary import LABEL_SUBMISSION
from orchestration.evaluation import Collaborators, evaluate_submission
from sandbox.build import build_image
from sandbox.config import SandboxSettings

from faultkit import wait_for

ROOT = Path(__file__).resolve().parents[2]
PARTICIPANT_REASONS = {"build", "protocol", "crash", "oom", "accuracy", "timeout"}
pytestmark = [pytest.mark.docker, pytest.mark.dockerd_restart]


def restart_dockerd() -> None:
    """systemd's restart where systemd runs dockerd, else what scripts/setup-engine.sh does."""
    if subprocess.run(["systemctl", "is-active", "--quiet", "docker"], capture_output=True).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=180)
    else:
        pid = int(Path("/var/run/docker.pid").read_text())
        os.kill(pid, 15)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 120, "dockerd to stop", every=0.5)
        subprocess.Popen("setsid nohup dockerd >>/var/log/arena-dockerd.log 2>&1 </dev/null &", shell=True)

    def answers():
        try:
            return docker.from_env(timeout=5).ping()
        except Exception:
            return False
    wait_for(answers, 120, "dockerd to answer again", every=0.5)


def test_a_dockerd_restart_mid_evaluation_is_a_platform_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_HOME", str(tmp_path / "home"))
    bucket, lake = Bucket(tmp_path / "home" / "bucket"), Lake(tmp_path / "home" / "lake")
    sid = "01JDOCKERDRESTART000000001"
    tag = f"arena-sub/{sid.lower()}:latest"
    settings = SandboxSettings.from_env()
    built = build_image(ROOT / "examples" / "kv-cache", tag, settings)
    assert built.ok, built.error
    image = {"ok": True, "tag": tag, "image_id": built.image_id, "size_bytes": built.size_bytes,
             "base_image": built.base_image, "seconds": built.seconds, "error": None, "challenge": "efficient-decode"}
    c = Collaborators(bucket=bucket, lake=lake, operator=OperatorStore(tmp_path / "operator"),
                      models_dir=tmp_path / "models", settings=settings,
                      devices={"cpuset": settings.cpuset, "gpus": []},
                      workload_overrides={"repeats": 3, "min_duration_ms": 60_000})   # long enough to cut
    outcome: dict = {}

    def run():
        try:
            outcome["stored"] = evaluate_submission(sid, image, c)
        except BaseException as exc:     # a raised error fails the Dagster run: a retried platform failure
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    client = docker.from_env()
    wait_for(lambda: client.containers.list(filters={"label": f"{LABEL_SUBMISSION}={sid}"}), 300,
             "the submission's container to run")
    time.sleep(5)                        # inside the timed runs
    restart_dockerd()
    thread.join(600)
    assert not thread.is_alive(), "the evaluation hung after dockerd came back"

    if "stored" in outcome:
        result = outcome["stored"].result
        print("dockerd restart ->", result["status"], result["reason"], result["measurement"].get("detail"))
        assert result["reason"] not in PARTICIPANT_REASONS, (
            f"a dockerd restart was recorded as the participant's failure: {result['status']}/{result['reason']}: "
            f"{result['measurement'].get('detail')}")
        assert (result["status"], result["reason"]) == ("failed", "platform")
    else:
        print("dockerd restart -> raised", repr(outcome["error"]))
    # nothing of the run is left on the engine
    assert not docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_SUBMISSION}={sid}"})
