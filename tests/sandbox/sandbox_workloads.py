"""Workloads, limits and checks shared by the sandbox tests (imported by conftest and the tests)."""
from __future__ import annotations

import uuid
from pathlib import Path

from sandbox.config import SandboxSettings
from sandbox.engine import available_runtimes
from sandbox.evaluate import Case, Evaluation, Workload

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SESSION = uuid.uuid4().hex[:8]


def calibrated_reference(prompt: list[int], n: int) -> list[int]:
    return [(prompt[-1] + k + 1) % 256 for k in range(n)]


def calibrated_workload(n_cases: int = 4, max_new_tokens: int = 8, **overrides) -> Workload:
    """Prompts whose reference is what the calibration decoder (and a behaving hostile one) answers."""
    cases = []
    for i in range(n_cases):
        prompt = [(i * 7) % 256, (i * 13 + 5) % 256]
        cases.append(Case("public" if i % 2 == 0 else "private", prompt,
                          calibrated_reference(prompt, max_new_tokens)))
    fields = dict(cases=tuple(cases), max_new_tokens=max_new_tokens, repeats=1, min_duration_ms=300,
                  cooldown_s=0.0)
    return Workload(**(fields | overrides))


#: Limits of the battery: small enough that every bomb goes off quickly.
BATTERY = SandboxSettings(load_timeout_s=10, run_timeout_s=40, memory_bytes=256 << 20, pids_limit=64,
                          tmpfs_bytes=16 << 20, stderr_cap_bytes=64 << 10)




def default_runtime() -> str:
    """What `auto` resolves to on this engine: runsc (gVisor) where registered."""
    return "runsc" if "runsc" in available_runtimes() else "runc"


def assert_calibrated_ok(evaluation: Evaluation) -> None:
    result = evaluation.result
    assert (result["status"], result["reason"]) == ("success", None), result["measurement"]["detail"]
    assert result["metrics"]["accuracy"] == 1.0
