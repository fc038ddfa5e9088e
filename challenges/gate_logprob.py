"""Gate kind ``logprob``: each emitted token is judged by the reference, given the entry's own prefix.

Exact greedy match is the wrong gate for a real model: correct implementations (fp16, bf16, other
kernels, other batch layouts) flip the argmax wherever the top two logits are close, and after one
flip the rest of the sequence differs. So the reference is run teacher-forced on the entry's own
output: at each position it sees the prompt and everything the entry emitted before, and the emitted
token passes when its reference log-prob is within ``margin_nats`` of the reference's best.

    [gate]
    kind = "logprob"
    threshold = 0.99       # share of scored positions that must pass
    margin_nats = 0.5
    top1_floor = 0.90      # share of scored positions where the entry emitted the reference's argmax
    audit_fraction = 0.1   # share of timed outputs judged too, drawn unpredictably

A correct implementation passes nearly every position, since its own choice is always close to the
best; a broken one (a wrong RoPE, a dropped layer, 3-bit weights) drifts far from the reference's
distribution. The top-1 floor stops an entry that would always emit the second-best token.
Thresholds, from benchmarks/smollm2_gate.py (16 chat prompts x 48 tokens; README, "smollm2-135m"):
every correct implementation measured (numpy and torch float32, bfloat16, float16, weight-only int8)
kept 100% of positions within 0.5 nats and 96-100% top-1; every broken one (wrong RoPE, a dropped
layer, 3-bit or symmetric 4-bit weights, int8 activations) at most 83% within the margin and 75%
top-1. 99% and 90% sit between the two, with room on the correct side.

Length and EOS: every request must produce exactly ``max_new_tokens`` tokens. The end-of-turn token
is an ordinary token (generation goes on past it, as in throughput benchmarks that ignore EOS), so
each request costs the same work and a short answer cannot score better than a full one: every
position missing from an output is scored and failed, and never counts as top-1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from challenges.interfaces import GateVerdict, Judgement
from challenges.spec import ChallengeSpec, Fields


class LogprobGate:
    kind = "logprob"

    def __init__(self, spec: ChallengeSpec, root: Path):
        f = Fields(spec.gate.table, f"{Path(root) / 'challenge.toml'} [gate]")
        self.margin_nats = f.float("margin_nats", 0.5, minimum=0.0)
        self.top1_floor = f.float("top1_floor", 0.90, minimum=0.0, maximum=1.0)
        f.done()
        self.threshold = spec.gate.threshold
        self.max_new_tokens = spec.workload.max_new_tokens

    def judge(self, model, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]],
              max_new_tokens: int | None = None) -> list[Judgement]:
        """One Judgement per request: ``scored`` is ``max_new_tokens`` (the challenge's unless given),
        whatever the entry emitted; tokens beyond it are cut (the harness already refuses them)."""
        expected = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        clipped = [list(o)[:expected] for o in outputs]
        scores = model.teacher_forced(prompts, clipped)
        out = []
        for s in scores:
            passed = sum(1 for lp, best in zip(s.logprobs, s.best_logprobs) if lp >= best - self.margin_nats)
            top1 = sum(1 for lp, best in zip(s.logprobs, s.best_logprobs) if lp >= best)
            out.append(Judgement(scored=expected, passed=passed, top1=top1))
        return out

    def verdict(self, judgements: Sequence[Judgement]) -> GateVerdict:
        scored = sum(j.scored for j in judgements)
        if not scored:
            return GateVerdict(None, False, "nothing was scored", {})
        passed = sum(j.passed for j in judgements)
        top1 = sum(j.top1 or 0 for j in judgements)
        accuracy, agreement = passed / scored, top1 / scored
        ok = accuracy >= self.threshold and agreement >= self.top1_floor
        detail = (f"{passed}/{scored} positions ({accuracy:.2%}) within {self.margin_nats} nats of the "
                  f"reference's best (gate {self.threshold:.0%}); top-1 agreement {agreement:.2%} "
                  f"(floor {self.top1_floor:.0%})")
        return GateVerdict(accuracy, ok, detail, {
            "margin_nats": self.margin_nats, "threshold": self.threshold, "top1_agreement": agreement,
            "top1_floor": self.top1_floor, "scored": scored, "passed": passed, "top1": top1})
