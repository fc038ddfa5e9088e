#!/usr/bin/env bash
# The GPU check, for a GPU machine with no Docker and no package registry: carry this repository and
# a Python that has nvidia-ml-py, pyarrow and numpy (plus torch or CuPy for the load), e.g. this
# checkout's .venv. It samples the sidecar's NVML/GPM source for ~26 s while a device-to-device copy
# runs, prints the bandwidth the copy achieved next to the DRAM bandwidth GPM reported, and saves the
# trace under tests/fixtures/telemetry/ named after the real device.
#   scripts/gpu_check.sh [--gpu N] [--copy SECONDS] [--gib GiB]      (ARENA_GPU_CHECK_PYTHON picks the Python)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${ARENA_GPU_CHECK_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
missing=$("$py" - <<'PY'
import importlib.util
need = ["pynvml", "pyarrow", "numpy"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
  echo "[gpu-check] $py lacks: $missing (carry a venv that has them; set ARENA_GPU_CHECK_PYTHON)" >&2
  exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "[gpu-check] nvidia-smi not found; NVML decides"
exec "$py" scripts/gpu_check.py "$@"
