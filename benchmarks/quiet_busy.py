"""The same decoder on a quiet host and on a busy one: examples/baseline on the efficient-decode
challenge, N evaluations per condition, private prompts from a fixed seed.

Conditions: quiet (isolation on), busy (isolation on), busy (isolation off, for contrast; with
--no-off it is skipped). Conditions take turns, one evaluation each (--blocks: all of one first). Busy: one spinning process per host CPU, started on the host before the
evaluation and never pinned, free to land anywhere (the scheduler puts one on the evaluation CPU
unless isolation moves it). Isolation is scripts/setup-cpus.sh's cpusets plus sandbox/cpus.py's
eviction during every timed run; ARENA_CPU_ISOLATION=off turns both off.

Prints tokens/s of every evaluation, the median and CV per condition, the busy/quiet ratio, the
interference figures (foreign and steal fraction of each timed run, re-measures, validity) and the
host load; then one JSON line. Never fails on a figure.

    .venv/bin/python benchmarks/quiet_busy.py [--n 5] [--no-off] [--blocks] [--runtime auto]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from challenges import load_challenge  # noqa: E402
from sandbox import cpus  # noqa: E402
from sandbox.build import build_image, remove_image  # noqa: E402
from sandbox.config import SandboxSettings  # noqa: E402
from sandbox.evaluate import Workload, evaluate_image  # noqa: E402


@contextmanager
def host_hog(n: int):
    """n unpinned spinning processes on the host."""
    # each dies with this process (PR_SET_PDEATHSIG), even when it is killed before its cleanup
    spin = "import ctypes, signal\nctypes.CDLL(None).prctl(1, signal.SIGKILL)\nwhile True: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextmanager
def environ(**values: str):
    """Settings for one condition (read by the sandbox at each evaluation)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def summary(values: list[float]) -> dict:
    if not values:
        return {"median": None, "mean": None, "cv": None, "n": 0}
    mean = statistics.mean(values)
    return {"median": statistics.median(values), "mean": mean, "n": len(values),
            "cv": statistics.pstdev(values) / mean if len(values) > 1 and mean else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5, help="evaluations per condition")
    ap.add_argument("--no-off", action="store_true", help="skip the busy run with isolation off")
    ap.add_argument("--blocks", action="store_true",
                    help="all evaluations of a condition in a row (default: interleaved, one of each condition "
                         "in turn, so that a drift of the host over the minutes falls on every condition alike)")
    ap.add_argument("--runtime", default="auto")
    args = ap.parse_args()

    settings = SandboxSettings.from_env().with_(runtime=args.runtime)
    challenge = load_challenge("efficient-decode")
    tag = f"arena-bench/baseline:{uuid.uuid4().hex[:8]}"
    built = build_image(REPO / "examples" / "baseline", tag, settings)
    assert built.ok, built.error
    # name, isolation, hogs
    conditions = [("quiet", True, False), ("busy", True, True)]
    if not args.no_off:
        conditions.append(("busy-off", False, True))
    out: dict = {"isolation": cpus.state(cpus.CpuSplit.of(settings.cpuset)), "n": args.n,
                 "host_cpus": len(cpus.host_cpus()), "load_start": os.getloadavg()[0],
                 "order": "blocks" if args.blocks else "interleaved"}
    order = ([(c, i) for c in conditions for i in range(1, args.n + 1)] if args.blocks else
             [(c, i) for i in range(1, args.n + 1) for c in conditions])
    tps: dict = {c[0]: [] for c in conditions}
    rows: dict = {c[0]: [] for c in conditions}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = challenge.model_dir(Path(tmp) / "models")
            workload = Workload.for_challenge(challenge, seed=20240601)
            for (name, iso, busy), i in order:
                with environ(ARENA_CPU_ISOLATION="on" if iso else "off"), \
                        (host_hog(os.cpu_count() or 1) if busy else _nothing()):
                    load_before = os.getloadavg()[0]
                    t0 = time.monotonic()
                    ev = evaluate_image(tag, submission_id=f"qb-{name}-{i}", challenge=challenge.name,
                                        workload=workload, model_dir=model_dir, settings=settings,
                                        log_root=Path(tmp) / f"{name}-{i}")
                r, meas = ev.result, ev.result["measurement"]
                inter = meas.get("interference") or {}
                runs = inter.get("runs", [])
                row = {"tokens_per_second": r["metrics"]["tokens_per_second"], "status": r["status"],
                       "valid": meas["valid"], "runs_tps": meas["tokens_per_second_runs"],
                       "in_eval_cv": meas["tokens_per_second_cv"],
                       "remeasured": inter.get("remeasured"), "disturbed": inter.get("disturbed"),
                       "foreign": [r_["foreign_fraction"] for r_ in runs],
                       "steal": [r_["steal_fraction"] for r_ in runs],
                       # threads pinned to the evaluation CPU that isolation cannot move
                       # (another evaluation there): the host was not quiet
                       "unmovable": [(r_.get("eviction") or {}).get("unmovable_threads") for r_ in runs],
                       "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                       "seconds": round(time.monotonic() - t0, 1)}
                rows[name].append(row)
                if r["status"] == "success" and row["tokens_per_second"] is not None:
                    tps[name].append(row["tokens_per_second"])
                print(f"  {name} {i}: {row['tokens_per_second'] or 0:8.2f} tok/s  runs {row['runs_tps']} "
                      f"valid={row['valid']} remeasured={row['remeasured']} disturbed={row['disturbed']} "
                      f"foreign={row['foreign']} steal={row['steal']} unmovable={row['unmovable']} "
                      f"load={row['load_1m']} {row['seconds']} s {r['status']} "
                      f"{meas.get('detail') or ''}", flush=True)
            for name, *_ in conditions:
                out[name] = {"summary": summary(tps[name]), "evaluations": rows[name]}
                s = out[name]["summary"]
                print(f"  {name}: median {s['median']} tok/s, CV {s['cv']} (isolation "
                      f"{'on' if dict((c[0], c[1]) for c in conditions)[name] else 'off'})")
    finally:
        remove_image(tag)
    out["load_end"] = os.getloadavg()[0]
    medians = {name: out[name]["summary"]["median"] for name, *_ in conditions}
    ratios = {"ratio_busy": ("busy", "quiet"), "ratio_busy_off": ("busy-off", "quiet")}
    for key, (a, b) in ratios.items():
        if medians.get(a) and medians.get(b):
            out[key] = medians[a] / medians[b]
    print("; ".join(f"{a}/{b}: {out[key]:.3f}" for key, (a, b) in ratios.items() if key in out))
    print(json.dumps({**{f"{name.replace('-', '_')}_tps": m for name, m in medians.items()},
                      **{key: out[key] for key in ratios if key in out},
                      **{f"cv_{name.replace('-', '_')}": out[name]["summary"]["cv"] for name in medians},
                      "remeasured_busy": [e["remeasured"] for e in out["busy"]["evaluations"]],
                      "invalid_busy": sum(1 for e in out["busy"]["evaluations"] if e["valid"] is False),
                      "foreign_busy": [e["foreign"] for e in out["busy"]["evaluations"]],
                      "foreign_busy_off": [e["foreign"] for e in out.get("busy-off", {}).get("evaluations", [])],
                      "n": args.n, "order": out["order"], "load_start": out["load_start"],
                      "load_end": out["load_end"], "isolation": out["isolation"]}))


@contextmanager
def _nothing():
    yield


if __name__ == "__main__":
    main()
