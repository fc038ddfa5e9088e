"""The engine's identity (pid and start time) tells a restart of dockerd under an evaluation apart
from the participant's own crash (sandbox/session.py turns such an error into a platform failure)."""
from __future__ import annotations

import os
import subprocess

from sandbox.engine import engine_identity


def test_identity_names_the_running_process_and_changes_with_it(tmp_path):
    pid_file = tmp_path / "docker.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    mine = engine_identity(str(pid_file))
    assert mine is not None and mine.startswith(f"{os.getpid()}:")
    assert engine_identity(str(pid_file)) == mine           # stable while the same process runs
    other = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(str(other.pid))
        assert engine_identity(str(pid_file)) not in (None, mine)   # another process: a restart
    finally:
        other.kill()
        other.wait()
    assert engine_identity(str(pid_file)) is None            # gone: unknown, never a false "restart"
    assert engine_identity(str(tmp_path / "missing.pid")) is None


def test_the_local_engine_has_an_identity():
    assert engine_identity() is not None
