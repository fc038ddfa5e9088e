"""scripts/gpu_check.sh, as far as a host without a GPU can run it: a dry run through a replayed trace
that goes through the same sampling, recording and comparison code, and says it is a dry run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "tests" / "fixtures" / "telemetry" / "h200_replay_trace.json"


def test_dry_run_samples_records_and_compares(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--replay", str(TRACE), "--out",
                           str(tmp_path), "--copy", "2", "--idle", "0.5", "--interval", "0.2"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ARENA_GPU_CHECK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert "(dry run)" in done.stdout and "copy achieved: n/a (no load)" in done.stdout
    assert "GPM DRAM bandwidth over the copy: median" in done.stdout
    trace = json.loads((tmp_path / "nvidia_h200_synthetic_dryrun_replay_trace.json").read_text())
    assert trace["provenance"].startswith("dry run") and trace["devices"][0]["samples"]
    rows = pq.read_table(tmp_path / "nvidia_h200_synthetic_dryrun_sidecar.parquet").to_pylist()
    assert rows and {r["source"] for r in rows} == {"replay"}


def test_a_python_without_nvml_is_refused_by_name(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec /usr/bin/env -i /usr/bin/python3 -S -I \"$@\"\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "ARENA_GPU_CHECK_PYTHON": str(fake)})
    assert done.returncode == 1 and "lacks: pynvml" in done.stderr
