"""Ranking stability: two calibration decoders whose speeds differ by 5% (one token every 2.0 ms vs
2.1 ms), evaluated alternately N times each under the default runtime. Counts how often the faster
one measures faster in each pair. Target: at least 9 of 10. Never fails on a figure.

    .venv/bin/python benchmarks/ranking_stability.py [N]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._calibrated import build_calibrated, calibrated_workload  # noqa: E402
from sandbox.build import remove_image  # noqa: E402
from sandbox.config import SandboxSettings  # noqa: E402
from sandbox.evaluate import evaluate_image  # noqa: E402

FAST_S, SLOW_S = 0.0020, 0.0021


def tokens_per_second(image: str, settings: SandboxSettings, label: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as logs:
        ev = evaluate_image(image, submission_id=label, challenge="bench",
                            workload=calibrated_workload(repeats=1, min_duration_ms=1000, cooldown_s=0.1),
                            model_dir=None, settings=settings, log_root=Path(logs))
    return ev.result["metrics"]["tokens_per_second"], ev.result["environment"]["runtime"]


def main(n: int) -> None:
    settings = SandboxSettings()
    fast, slow = build_calibrated(FAST_S, settings), build_calibrated(SLOW_S, settings)
    right = 0
    try:
        print(f"{'pair':>4} {'fast (500.0)':>13} {'slow (476.2)':>13} ordered")
        for i in range(1, n + 1):
            a, runtime = tokens_per_second(fast, settings, f"fast-{i}")
            b, _ = tokens_per_second(slow, settings, f"slow-{i}")
            right += a > b
            print(f"{i:4d} {a:13.2f} {b:13.2f} {'yes' if a > b else 'NO'}")
        print(f"runtime {runtime}: ordered correctly {right}/{n} (target >= {0.9 * n:.0f})")
    finally:
        remove_image(fast)
        remove_image(slow)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
