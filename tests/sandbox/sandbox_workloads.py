"""Workloads, limits and checks shared by the sandbox tests (imported by conftest and the tests)."""
from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import numpy as np

from challenges.gate_exact import ExactGate
from sandbox.config import SandboxSettings
from sandbox.engine import available_runtimes
from sandbox.evaluate import Evaluation, Workload

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SESSION = uuid.uuid4().hex[:8]


def calibrated_reference(prompt: list[int], n: int) -> list[int]:
    return [(prompt[-1] + k + 1) % 256 for k in range(n)]


class CalibratedModel:
    """The reference of the calibration decoder (token = (last + 1) % 256): a ReferenceModel."""

    def greedy(self, prompts, max_new_tokens):
        return [calibrated_reference(list(p), max_new_tokens) for p in prompts]

    def teacher_forced(self, prompts, continuations):
        raise NotImplementedError

    def materialize(self, cache_root):
        raise NotImplementedError


class RandomBytePrompts:
    """A PromptSource of short random byte prompts: deterministic in the seed, distinct, none public."""

    def __init__(self, public: list[list[int]], length: int = 6):
        self._public, self.length = public, length

    def public(self):
        return self._public

    def private(self, seed: int, count: int):
        rng = np.random.default_rng(seed)
        seen, out = set(map(tuple, self._public)), []
        while len(out) < count:
            p = tuple(int(t) for t in rng.integers(0, 256, self.length))
            if p not in seen:
                seen.add(p)
                out.append(list(p))
        return out


def calibrated_workload(n_cases: int = 4, max_new_tokens: int = 8, seed: int | None = None,
                        prompts=None, **overrides) -> Workload:
    """n_cases accuracy prompts (half public, half private), fresh private prompts for every timed
    pass; the reference is what the calibration decoder (and a behaving hostile one) answers."""
    public = [[(i * 7) % 256, (i * 13 + 5) % 256] for i in range(0, n_cases, 2)]
    source = prompts or RandomBytePrompts(public)
    fields = dict(challenge="test", max_new_tokens=max_new_tokens, public=tuple(map(tuple, source.public())),
                  prompts=source, model=CalibratedModel(), gate=ExactGate.with_threshold(0.99, max_new_tokens),
                  seed=secrets.randbits(63) if seed is None else seed, accuracy_private=n_cases // 2,
                  timed_min_prompts=max(n_cases // 2, 1), repeats=1, min_duration_ms=300, cooldown_s=0.0)
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
