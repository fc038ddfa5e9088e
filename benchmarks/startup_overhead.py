"""Startup overhead: time from container create to the `{"ready": true}` line of an empty decoder
(prints ready at once), N times under runc and runsc; median and p90. Never fails on a figure.

    .venv/bin/python benchmarks/startup_overhead.py [N]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.build import build_image, remove_image  # noqa: E402
from sandbox.config import SandboxSettings  # noqa: E402
from sandbox.engine import available_runtimes  # noqa: E402
from sandbox.runner import run_sandboxed  # noqa: E402

DOCKERFILE = 'FROM arena/python-cpu:1\nCOPY decoder.py /app/decoder.py\nCMD ["python3", "/app/decoder.py"]\n'
EMPTY_DECODER = 'import sys\nprint(\'{"ready": true}\', flush=True)\nsys.stdin.read()\n'


def create_to_ready(image: str, settings: SandboxSettings) -> float:
    ready = threading.Event()
    arrival = []

    def on_line(now_ns: int, line: bytes) -> None:
        arrival.append(now_ns)
        ready.set()

    t0 = time.monotonic_ns()   # before create: run_sandboxed creates, attaches, starts
    with run_sandboxed(image, settings, model_dir=None, on_line=on_line) as box:
        assert ready.wait(60), "no ready line"
        box.close_stdin()
    return (arrival[0] - t0) / 1e9


def main(n: int) -> None:
    tag = f"arena-bench/empty:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(DOCKERFILE)
        (Path(tmp) / "decoder.py").write_text(EMPTY_DECODER)
        assert build_image(Path(tmp), tag, SandboxSettings()).ok
    try:
        print(f"{'runtime':8} {'median s':>9} {'p90 s':>7} {'min s':>7} {'max s':>7}  (create -> ready, n={n})")
        for runtime in [r for r in ("runc", "runsc") if r in available_runtimes()]:
            settings = SandboxSettings(runtime=runtime)
            create_to_ready(tag, settings)   # warm the image cache
            times = sorted(create_to_ready(tag, settings) for _ in range(n))
            p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
            print(f"{runtime:8} {statistics.median(times):9.3f} {p90:7.3f} {times[0]:7.3f} {times[-1]:7.3f}")
    finally:
        remove_image(tag)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
