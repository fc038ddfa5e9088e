#!/usr/bin/env python3
"""Harness ceiling: the highest aggregate tokens/s the harness measures within 1% of the truth.

A calibration decoder (tests/fixtures/decoders/ceiling) emits many concurrent streams, several tokens
per line, at an exactly known aggregate rate. For each rate and framing (JSON lines, binary-v1) one
sandboxed container runs one LoadGen Offline PerformanceOnly test through the real harness and runner
read path; printed: the true rate, what LoadGen measured, the error, whether it is within 1%, and how
late the decoder's own ticks ran (to tell a slow decoder from a slow harness). Never fails on a figure.

    .venv/bin/python benchmarks/harness_ceiling.py [--rates 10000,50000,100000,200000]
        [--framings json,binary-v1] [--streams 64] [--tokens-per-line 16] [--runtime runsc]
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox.build import build_image, remove_image  # noqa: E402
from sandbox.config import SandboxSettings  # noqa: E402
from sandbox.engine import resolve_runtime  # noqa: E402
from sandbox.harness import DecoderSession, LoadSettings, run_loadgen  # noqa: E402
from sandbox.runner import run_sandboxed  # noqa: E402

DEBUG = False
FIXTURE = REPO / "tests" / "fixtures" / "decoders" / "ceiling"


def true_rate(requests: int, tokens: int, streams: int, per_line: int, rate: float) -> float:
    period = streams * per_line / rate
    return requests * tokens / (math.ceil(requests / streams) * math.ceil(tokens / per_line) * period)


def measure(image: str, settings: SandboxSettings, *, rate: float, framing: str, streams: int,
            per_line: int, tokens: int, min_duration_ms: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        (model_dir / "ceiling.json").write_text(json.dumps(
            {"streams": streams, "tokens_per_line": per_line, "rate": rate, "framing": framing}))
        model_dir.chmod(0o755)
        (model_dir / "ceiling.json").chmod(0o644)
        session = DecoderSession()
        prompts = [[i % 256, (i * 7) % 256] for i in range(streams)]
        with run_sandboxed(image, settings, model_dir=model_dir, on_line=session.on_line,
                           on_overflow=session.on_overflow, on_eof=session.on_eof) as box:
            if not session.ready.wait(60) or session.error:
                box.wait_eof(10)
                raise RuntimeError(f"decoder not ready: {session.error}: {box.stderr_text[-500:]}")
            # Offline: LoadGen sends ~expected_qps * min_duration samples at once; ask for full rounds.
            duration_s = max(min_duration_ms / 1000, 1.0)
            qps = rate * 1.0 / tokens
            run = run_loadgen(session, box.send, prompts, tokens, "ceiling", "performance",
                              LoadSettings(scenario="offline", min_duration_ms=int(duration_s * 1000),
                                           expected_qps=qps), Path(tmp) / "loadgen")
            session.expect_exit()
            box.close_stdin()
            box.wait_eof(30)
            stderr = box.stderr_text
    if session.error:
        raise RuntimeError(f"protocol: {session.error}")
    done = [r for r in run.records if r.done_ns]
    if DEBUG:
        span = (max(r.done_ns for r in done) - min(r.sent_ns for r in done)) / 1e9
        ttft = min(r.first_token_ns - r.sent_ns for r in done) / 1e6
        print("span", span, "min ttft ms", ttft,
              "tokens", sum(len(r.tokens) for r in done), stderr[-300:])
    measured = run.loadgen.get("result_tokens_per_second")
    truth = true_rate(len(done), tokens, streams, per_line, rate)
    late = re.search(r"latest tick ([0-9.]+) ms late", stderr)
    return {"requests": len(done), "truth": truth, "measured": float(measured) if measured else None,
            "late_ms": float(late.group(1)) if late else None, "seconds": run.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10000,25000,50000,100000,200000,400000")
    parser.add_argument("--framings", default="json,binary-v1")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens-per-line", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=512, help="max_new_tokens of each request")
    parser.add_argument("--min-duration-ms", type=int, default=15000,
                        help="long runs: the ~0.1 s from LoadGen's issue to the first tick is a fixed cost")
    parser.add_argument("--runtime", default="auto")
    args = parser.parse_args()

    settings = SandboxSettings().with_(runtime=args.runtime, memory_bytes=1 << 30)
    tag = f"arena-bench/ceiling:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        # The decoder speaks this checkout's protocol even where the base image ships an older copy.
        context = Path(tmp) / "ceiling"
        shutil.copytree(FIXTURE, context)
        shutil.copy(REPO / "sandbox" / "protocol.py", context / "arena_protocol.py")
        build = build_image(context, tag, settings)
    if not build.ok:
        raise SystemExit(f"building the ceiling decoder failed: {build.error}")
    print(f"runtime {resolve_runtime(settings.runtime)}, cpuset {settings.cpuset}; {args.streams} streams, "
          f"{args.tokens_per_line} tokens per line, {args.tokens} tokens per request")
    print(f"{'framing':10} {'target':>9} {'true tok/s':>11} {'measured':>11} {'error':>8} {'<1%':>4} "
          f"{'requests':>8} {'decoder late ms':>15}")
    best: dict[str, float] = {}
    try:
        for framing in args.framings.split(","):
            for rate in (float(r) for r in args.rates.split(",")):
                started = time.monotonic()
                try:
                    m = measure(tag, settings, rate=rate, framing=framing, streams=args.streams,
                                per_line=args.tokens_per_line, tokens=args.tokens,
                                min_duration_ms=args.min_duration_ms)
                except RuntimeError as exc:
                    print(f"{framing:10} {rate:9.0f} failed: {exc}")
                    continue
                err = (m["measured"] / m["truth"] - 1) if m["measured"] else float("nan")
                ok = abs(err) <= 0.01
                if ok:
                    best[framing] = max(best.get(framing, 0.0), m["measured"])
                print(f"{framing:10} {rate:9.0f} {m['truth']:11.0f} {m['measured'] or float('nan'):11.0f} "
                      f"{err:+8.2%} {'yes' if ok else 'no':>4} {m['requests']:8d} "
                      f"{m['late_ms'] if m['late_ms'] is not None else float('nan'):15.2f}"
                      f"   ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        remove_image(tag)
    for framing, value in best.items():
        print(f"ceiling ({framing}): {value:.0f} tokens/s measured within 1% of the truth")


if __name__ == "__main__":
    main()
