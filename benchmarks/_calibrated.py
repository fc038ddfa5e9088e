"""Shared by the harness benchmarks: calibration-decoder images at a chosen token period."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from sandbox.build import build_image
from sandbox.config import SandboxSettings
from sandbox.evaluate import Case, Workload

CALIBRATED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "decoders" / "calibrated"


def build_calibrated(token_s: float, settings: SandboxSettings) -> str:
    """An image of the calibration decoder emitting one token every `token_s` seconds."""
    tag = f"arena-bench/calibrated-{token_s * 1e6:.0f}us:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(CALIBRATED, ctx)
        with open(ctx / "Dockerfile", "a") as f:
            f.write(f"\nENV ARENA_CAL_TOKEN_S={token_s!r}\n")
        result = build_image(ctx, tag, settings)
    assert result.ok, result.error
    return tag


def calibrated_workload(n_cases: int = 16, max_new_tokens: int = 64, **overrides) -> Workload:
    cases = []
    for i in range(n_cases):
        prompt = [(i * 7) % 256, (i * 13 + 5) % 256]
        cases.append(Case("public" if i % 2 == 0 else "private", prompt,
                          [(prompt[-1] + k + 1) % 256 for k in range(max_new_tokens)]))
    fields = dict(cases=tuple(cases), max_new_tokens=max_new_tokens, repeats=3, min_duration_ms=2000,
                  cooldown_s=0.2)
    return Workload(**(fields | overrides))
