"""What one evaluation sends: the workload of a challenge and the prompt plan of one evaluation.

No prompt is ever sent twice in an evaluation. The accuracy pass sends the public prompts and fresh
private ones; every warm-up try and every timed repeat gets private prompts of its own, drawn from
the evaluation's secret seed on a stream of its own (the pass's label), none equal to a prompt sent
before in the evaluation or to a public prompt. So a decoder that remembers what it was asked wins
nothing: nothing it is asked has been asked before. The plan is deterministic in (seed, the sequence
of passes and their sizes), which is what lets an operator regenerate an evaluation's prompts
exactly (`arena admin prompts`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from challenges.interfaces import Gate, PromptSource, ReferenceModel

#: Queries LoadGen's early stopping needs for a verdict when no query is over its latency bound
#: (single-stream: 64 for the p90; server: about 460 for the p99 TTFT/TPOT); fewer and every run is
#: INVALID ("Need to process at least 64 queries", "Would need to run at least N more queries").
EARLY_STOPPING_MIN_QUERIES = {"offline": 1, "single-stream": 64, "server": 512}
#: The most fresh prompts one pass may draw: beyond it a pass is shorter than min_duration and LoadGen
#: calls the run INVALID (never ranked) rather than the host spending minutes on references.
MAX_PROMPTS_PER_PASS = 4096
#: LoadGen's own margin over min_duration (offline: samples = expected QPS x min_duration x 1.1)
LOADGEN_MARGIN = 1.1


@dataclass(frozen=True)
class Workload:
    """A challenge's workload for one evaluation (``seed`` is that evaluation's secret)."""
    challenge: str
    max_new_tokens: int
    public: tuple[tuple[int, ...], ...]
    prompts: PromptSource
    model: ReferenceModel
    gate: Gate
    seed: int
    accuracy_private: int                 # fresh private prompts in the accuracy pass
    timed_min_prompts: int = 1            # each warm-up and timed run sends at least this many
    audit_fraction: float = 1.0           # share of timed outputs judged (drawn unpredictably)
    scenario: str = "offline"
    repeats: int = 3
    warmup_passes: int = 1
    min_duration_ms: int = 3000
    cooldown_s: float = 1.0
    server_load_fraction: float = 0.5
    ttft_latency_ns: int = 2 * 10**9
    tpot_latency_ns: int = 200 * 10**6
    max_prompts_per_pass: int = MAX_PROMPTS_PER_PASS

    @property
    def accuracy_threshold(self) -> float:
        return self.gate.threshold

    @classmethod
    def for_challenge(cls, challenge, seed: int, scenario: str | None = None, **overrides) -> "Workload":
        """The evaluation workload of a challenge (challenges.Challenge) from its typed spec."""
        spec = challenge.spec
        perf = spec.performance
        fields: dict[str, Any] = dict(
            challenge=challenge.name, max_new_tokens=spec.workload.max_new_tokens,
            public=tuple(tuple(p) for p in challenge.public_prompts()), prompts=challenge.prompts,
            model=challenge.model, gate=challenge.gate, seed=seed,
            accuracy_private=spec.workload.private_prompts, timed_min_prompts=spec.workload.timed_min_prompts,
            audit_fraction=spec.gate.audit_fraction, scenario=scenario or perf.scenario, repeats=perf.repeats,
            warmup_passes=perf.warmup_passes, min_duration_ms=perf.min_duration_ms,
            server_load_fraction=perf.server_load_fraction,
            ttft_latency_ns=int(perf.ttft_latency_ms * 1e6), tpot_latency_ns=int(perf.tpot_latency_ms * 1e6))
        return cls(**(fields | overrides))

    def plan(self) -> "PromptPlan":
        return PromptPlan(self)


def pass_seed(seed: int, label: str) -> int:
    """The seed of one pass's stream: (secret seed, pass label) hashed; unknowable without the seed."""
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Pass:
    label: str
    prompts: list[list[int]]
    sets: list[str]                      # public | private, per prompt


@dataclass
class PromptPlan:
    """The prompts of one evaluation, pass by pass; never the same prompt twice."""
    workload: Workload
    passes: list[Pass] = field(default_factory=list)
    _used: set = field(default_factory=set)

    def __post_init__(self):
        self._used = set(self.workload.public)

    def accuracy(self) -> Pass:
        """The accuracy pass: every public prompt and fresh private ones."""
        public = [list(p) for p in self.workload.public]
        private = self._fresh("accuracy", self.workload.accuracy_private)
        return self._add(Pass("accuracy", public + private, ["public"] * len(public) + ["private"] * len(private)))

    def fresh(self, label: str, count: int) -> Pass:
        """``count`` private prompts never sent before in this evaluation, for the pass ``label``."""
        if any(p.label == label for p in self.passes):
            raise ValueError(f"pass {label!r} was planned twice")
        prompts = self._fresh(label, count)
        return self._add(Pass(label, prompts, ["private"] * len(prompts)))

    def _fresh(self, label: str, count: int) -> list[list[int]]:
        if count <= 0:
            return []
        out: list[list[int]] = []
        for attempt in range(20):
            drawn = self.workload.prompts.private(pass_seed(self.workload.seed, f"{label}#{attempt}"),
                                                  count - len(out))
            for p in drawn:
                if tuple(p) not in self._used:
                    self._used.add(tuple(p))
                    out.append(list(p))
            if len(out) == count:
                return out
        raise RuntimeError(f"could not draw {count} fresh prompts for pass {label!r}")

    def _add(self, p: Pass) -> Pass:
        self.passes.append(p)
        return p

    def sizes(self) -> list[dict]:
        return [{"label": p.label, "count": sum(1 for s in p.sets if s == "private")} for p in self.passes]


def timed_prompt_count(workload: Workload, expected_qps: float, expected_latency_ns: int) -> int:
    """Fresh prompts one warm-up or timed run needs: what LoadGen issues to fill min_duration
    (with its own 10% margin), at least the challenge's timed_min_prompts and what early stopping
    needs, at most max_prompts_per_pass. LoadGen issues each of them once (performance_issue_unique)."""
    seconds = workload.min_duration_ms / 1000
    if workload.scenario == "single-stream":
        need = seconds / max(expected_latency_ns / 1e9, 1e-6)
    else:
        need = expected_qps * seconds
    need = int(need * LOADGEN_MARGIN) + 1
    need = max(need, workload.timed_min_prompts, EARLY_STOPPING_MIN_QUERIES[workload.scenario])
    return min(need, workload.max_prompts_per_pass)


def prompt_digest(prompts: Sequence[Sequence[int]]) -> str:
    """``sha256:<hex>`` over the canonical JSON of the prompts in the order they were sent."""
    text = json.dumps([list(map(int, p)) for p in prompts], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
