"""Harness fidelity: the calibration decoder at an exactly known rate (one token every 2 ms, 500 tokens/s),
measured through the whole harness under runc and runsc. Prints measured vs true tokens/s and the
per-token overhead of each runtime (median inter-token arrival vs the 2 ms schedule). Target: within 1%.
Never fails on a figure.

    .venv/bin/python benchmarks/harness_fidelity.py
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._calibrated import build_calibrated, calibrated_workload  # noqa: E402
from sandbox.build import remove_image  # noqa: E402
from sandbox.config import SandboxSettings  # noqa: E402
from sandbox.engine import available_runtimes  # noqa: E402
from sandbox.evaluate import evaluate_image  # noqa: E402

TOKEN_S = 0.002


def main() -> None:
    settings = SandboxSettings()
    image = build_calibrated(TOKEN_S, settings)
    truth = 1 / TOKEN_S
    print(f"calibration decoder: one token every {TOKEN_S * 1e3:.1f} ms -> {truth:.1f} tokens/s; "
          f"cpuset {settings.cpuset}, {settings.cpus} CPU")
    print(f"{'runtime':8} {'tokens/s':>10} {'error':>8} {'runs':>28} {'tpot p50 ms':>12} {'overhead/token':>15} valid")
    try:
        for runtime in [r for r in ("runc", "runsc") if r in available_runtimes()]:
            with tempfile.TemporaryDirectory() as logs:
                ev = evaluate_image(image, submission_id=f"fidelity-{runtime}", challenge="bench",
                                    workload=calibrated_workload(), model_dir=None,
                                    settings=settings.with_(runtime=runtime), log_root=Path(logs))
            r = ev.result
            tps = r["metrics"]["tokens_per_second"]
            # inter-token arrivals of every timed request, from the per-request rows
            tpots = [row["tpot_ms"] for row in ev.requests if row["run"].startswith("perf-") and row["tpot_ms"]]
            tpot = statistics.median(tpots) if tpots else float("nan")
            runs = ", ".join(f"{x:.1f}" for x in r["measurement"]["tokens_per_second_runs"])
            print(f"{runtime:8} {tps:10.2f} {100 * (tps - truth) / truth:+7.2f}% {runs:>28} {tpot:12.4f} "
                  f"{(tpot - TOKEN_S * 1e3) * 1e3:+12.1f} us {r['measurement']['valid']}")
    finally:
        remove_image(image)


if __name__ == "__main__":
    main()
