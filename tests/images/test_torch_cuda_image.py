"""`make images-gpu` builds arena/torch-cuda:1 (here under a test tag): PyTorch's CUDA build from PyPI
wheels downloaded on the host (~2.7 GB; builds have no network), with this checkout's protocol module.
On this host, which has no GPU, the image imports torch under gVisor and reports no GPU."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.gpu_image]


def test_images_gpu_builds_torch_cuda_which_reports_no_gpu_here():
    tag = f"arena-test/torch-cuda:{uuid.uuid4().hex[:8]}"
    try:
        build = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), "torch-cuda"], cwd=REPO,
                               capture_output=True, text=True, timeout=3600,
                               env={**os.environ, "ARENA_TORCH_CUDA_TAG": tag})
        assert build.returncode == 0, build.stderr[-3000:]
        labels = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", tag],
                                capture_output=True, text=True, check=True).stdout
        assert '"org.decode-arena.official":"arena/torch-cuda:1"' in labels
        probe = ("import torch, arena_protocol; "
                 "print(torch.version.cuda is not None, torch.cuda.is_available(), arena_protocol.FRAMINGS)")
        run = subprocess.run(["docker", "run", "--rm", "--runtime", "runsc", "--network", "none", "--user",
                              "10001:10001", tag, "python3", "-c", probe], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip() == "True False ('json', 'binary-v1')"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)
