"""Gate kind ``exact``: every emitted token must equal the reference's greedy token at its position.

    [gate]
    kind = "exact"
    threshold = 0.99        # share of the expected tokens that must match, position by position
    audit_fraction = 1.0    # share of timed outputs judged too (the tiny model's reference is cheap)

Right for a model whose greedy argmax never flips under float32 reordering (the tiny challenge);
the wrong gate for a real LLM (see gate_logprob.py). A missing token counts as wrong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from challenges.interfaces import GateVerdict, Judgement
from challenges.spec import ChallengeSpec, Fields


class ExactGate:
    kind = "exact"

    def __init__(self, spec: ChallengeSpec, root: Path):
        Fields(spec.gate.table, f"{Path(root) / 'challenge.toml'} [gate]").done()
        self.threshold = spec.gate.threshold
        self.max_new_tokens = spec.workload.max_new_tokens

    @classmethod
    def with_threshold(cls, threshold: float, max_new_tokens: int) -> "ExactGate":
        """A gate outside any challenge.toml (the sandbox tests' calibrated workloads)."""
        gate = cls.__new__(cls)
        gate.threshold, gate.max_new_tokens = threshold, max_new_tokens
        return gate

    def judge(self, model, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]],
              max_new_tokens: int | None = None, references: Sequence[Sequence[int]] | None = None
              ) -> list[Judgement]:
        expected = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        refs = references if references is not None else model.greedy(prompts, expected)
        return [Judgement(scored=len(ref), passed=sum(1 for a, b in zip(out, ref) if a == b))
                for out, ref in zip(outputs, refs)]

    def verdict(self, judgements: Sequence[Judgement]) -> GateVerdict:
        scored = sum(j.scored for j in judgements)
        if not scored:
            return GateVerdict(None, False, "nothing was scored", {})
        passed = sum(j.passed for j in judgements)
        accuracy = passed / scored
        return GateVerdict(accuracy, accuracy >= self.threshold,
                           f"{passed}/{scored} tokens ({accuracy:.4f}) equal the reference's greedy tokens "
                           f"(gate {self.threshold})", {"threshold": self.threshold, "scored": scored,
                                                        "passed": passed})
