"""The three pluggable parts of a challenge, and what they hand each other.

A challenge names a ``kind`` for each part in its challenge.toml; ``challenges/registry.py`` maps
kinds to implementations. The sandbox only ever talks to these interfaces, so a new model, prompt
set or gate is a new file and one registry line, never a change to the evaluation.

Every implementation is built as ``Kind(spec: ChallengeSpec, root: Path)`` (``root`` is the
challenge's folder) and parses its own ``spec.<part>.table`` with ``challenges.spec.Fields``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class TokenScores:
    """The reference's view of one emitted continuation, position by position (teacher forcing on
    the entry's own prefix): the log-prob of the emitted token, the best log-prob, and its token."""
    logprobs: tuple[float, ...]
    best_logprobs: tuple[float, ...]
    argmax: tuple[int, ...]


@runtime_checkable
class ReferenceModel(Protocol):
    """The model a challenge is about, computed on the host (never inside the container)."""

    def materialize(self, cache_root: Path) -> Path:
        """The directory mounted read-only at /arena/model, written once under ``cache_root``."""

    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations of many prompts at once (batched: this runs for every timed output)."""

    def teacher_forced(self, prompts: Sequence[Sequence[int]],
                       continuations: Sequence[Sequence[int]]) -> list[TokenScores]:
        """Scores of each continuation given its own prompt and its own earlier tokens."""


@runtime_checkable
class PromptSource(Protocol):
    """Where a challenge's prompts come from."""

    def public(self) -> list[list[int]]:
        """The public prompts (in the repository, known to everyone)."""

    def private(self, seed: int, count: int) -> list[list[int]]:
        """``count`` prompts drawn from a secret ``seed``: deterministic in the seed, distinct, none
        equal to a public prompt."""


@dataclass(frozen=True)
class Judgement:
    """How one request fared: tokens scored, tokens that passed, and (when the gate knows it) how
    many emitted tokens were the reference's top-1 choice."""
    scored: int
    passed: int
    top1: int | None = None


@dataclass(frozen=True)
class GateVerdict:
    accuracy: float | None          # passed / scored over the judged requests; None: nothing scored
    passed: bool
    detail: str                     # what was measured, against which bound, for people to read
    extra: dict = field(default_factory=dict, hash=False)


@runtime_checkable
class Gate(Protocol):
    """The correctness gate: outputs that fail it are `rejected` (reason `accuracy`) and never rank."""

    def judge(self, model: ReferenceModel, prompts: Sequence[Sequence[int]],
              outputs: Sequence[Sequence[int]]) -> list[Judgement]:
        """One judgement per (prompt, output), computed with the reference model."""

    def verdict(self, judgements: Sequence[Judgement]) -> GateVerdict:
        """Whether these judgements together pass the gate."""
