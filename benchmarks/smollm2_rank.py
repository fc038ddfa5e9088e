#!/usr/bin/env python3
"""The smollm2-135m examples ranked: each built into its image and evaluated in the sandbox (gVisor,
the challenge's limits), tokens/s from LoadGen's Offline run and the log-prob gate's verdict, plus the
fast entry with a dropped layer (must be rejected) and the host seconds the reference spent judging.

    .venv/bin/python benchmarks/smollm2_rank.py [--public 2] [--private 4] [--tokens 16]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "challenges"))

from sandbox.build import remove_image  # noqa: E402
from smollm2_sandbox import build_example, derive_broken, evaluate, image_tag, judge  # noqa: E402

ENTRIES = ("baseline", "kv-cache", "fast", "fast, dropped layer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public", type=int, default=2)
    parser.add_argument("--private", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    print(f"{args.public} public + {args.private} private prompts x {args.tokens} tokens; the timed run is "
          f"Offline over the private ones")
    print(f"{'entry':22} {'tokens/s':>9} {'LoadGen':>8} {'load s':>7} {'accuracy pass':>40} {'timed':>6} "
          f"{'judge s/token':>13}")
    tags: dict[str, str] = {}
    try:
        for name in ENTRIES:
            if args.only and name not in args.only.split(","):
                continue
            started = time.monotonic()
            tags[name] = tag = image_tag(name.replace(", ", "-").replace(" ", "-"))
            if name == "fast, dropped layer":
                derive_broken(tags["fast"], tag)
            else:
                build_example(name, tag)
            built_s = time.monotonic() - started
            with tempfile.TemporaryDirectory() as tmp:
                outcome = evaluate(tag, public=args.public, private=args.private, max_new_tokens=args.tokens,
                                   seed=2026, log_dir=Path(tmp))
            t = time.perf_counter()
            accuracy, timed = judge(outcome, args.tokens)
            judge_s = time.perf_counter() - t
            report(name, outcome, accuracy, timed, judge_s, built_s)
    finally:
        for tag in reversed(list(tags.values())):
            remove_image(tag)


def report(name, outcome, accuracy, timed, judge_s, built_s) -> None:
    scored = accuracy.extra["scored"] + timed.extra["scored"]
    verdict = (f"{'pass' if accuracy.passed else 'REJECTED'} {accuracy.accuracy:.1%} "
               f"top-1 {accuracy.extra['top1_agreement']:.1%}")
    print(f"{name:22} {outcome.tokens_per_second or float('nan'):9.2f} {outcome.loadgen_valid or '-':>8} "
          f"{outcome.load_s:7.1f} {verdict:>40} {'pass' if timed.passed else 'FAIL':>6} "
          f"{judge_s / scored:13.4f}   (build {built_s:.0f} s, {outcome.runtime})", flush=True)


if __name__ == "__main__":
    main()
