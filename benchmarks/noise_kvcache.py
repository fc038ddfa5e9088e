"""Measurement noise on a real submission: N evaluations of examples/kv-cache on the real challenge
(`efficient-decode`, private prompts from a fixed seed) under the default runtime; prints tokens/s of
each and the coefficient of variation across evaluations (and LoadGen's within-evaluation CV).
Never fails on a figure.

    .venv/bin/python benchmarks/noise_kvcache.py [N]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from challenges import load_challenge  # noqa: E402
from sandbox.build import build_image, remove_image  # noqa: E402
from sandbox.config import SandboxSettings  # noqa: E402
from sandbox.evaluate import Workload, evaluate_image  # noqa: E402


def main(n: int) -> None:
    settings = SandboxSettings()
    challenge = load_challenge("efficient-decode")
    tag = f"arena-bench/kv-cache:{uuid.uuid4().hex[:8]}"
    assert build_image(REPO / "examples" / "kv-cache", tag, settings).ok
    values = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = challenge.model_dir(Path(tmp) / "models")
            workload = Workload.for_challenge(challenge, seed=20240601)
            print(f"{'eval':>4} {'tokens/s':>9} {'runs':>28} {'in-eval CV':>10} valid runtime")
            for i in range(1, n + 1):
                ev = evaluate_image(tag, submission_id=f"noise-{i}", challenge=challenge.name,
                                    workload=workload, model_dir=model_dir, settings=settings,
                                    log_root=Path(tmp) / f"eval-{i}")
                r = ev.result
                tps = r["metrics"]["tokens_per_second"]
                if r["status"] != "success" or tps is None:
                    print(f"{i:4d} {r['status']} {r['reason']}: {r['measurement']['detail']}")
                    continue
                values.append(tps)
                runs = ", ".join(f"{x:.1f}" for x in r["measurement"]["tokens_per_second_runs"])
                cv = r["measurement"]["tokens_per_second_cv"]
                print(f"{i:4d} {tps:9.2f} {runs:>28} {cv if cv is None else f'{cv:.4f}':>10} "
                      f"{r['measurement']['valid']} {r['environment']['runtime']}")
        if len(values) > 1:
            mean = statistics.mean(values)
            print(f"across {len(values)} evaluations: mean {mean:.2f} tokens/s, "
                  f"CV {statistics.pstdev(values) / mean:.4f}")
    finally:
        remove_image(tag)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
