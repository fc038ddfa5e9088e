"""`kind` strings of challenge.toml -> the classes that implement them (challenges/interfaces.py).

A new model, prompt source or gate is a new module and one line here; the sandbox never changes.
Every class is built as ``Kind(spec, root)``; a prompt source that needs the model's tokenizer takes
``model=`` too.
"""
from __future__ import annotations

from pathlib import Path

from challenges.spec import ChallengeSpec, ChallengeSpecError


def _tiny_model():
    from challenges.tiny_model import TinyModel
    return TinyModel


def _llama_gguf():
    from challenges.models.llama_gguf import LlamaGguf
    return LlamaGguf


def _english_bytes():
    from challenges.prompts import EnglishBytePrompts
    return EnglishBytePrompts


def _chatml():
    from challenges.prompts_chatml import ChatmlPrompts
    return ChatmlPrompts


def _exact():
    from challenges.gate_exact import ExactGate
    return ExactGate


def _logprob():
    from challenges.gate_logprob import LogprobGate
    return LogprobGate


MODELS = {"tiny": _tiny_model, "llama-gguf": _llama_gguf}
PROMPTS = {"english-bytes": _english_bytes, "chatml": _chatml}
GATES = {"exact": _exact, "logprob": _logprob}
#: prompt kinds that need the model (its tokenizer)
PROMPTS_NEED_MODEL = {"chatml"}


def _lookup(table: dict, kind: str, part: str, spec: ChallengeSpec):
    if kind not in table:
        raise ChallengeSpecError(f"challenge {spec.name}: [{part}] kind {kind!r} is unknown; known: "
                                 f"{', '.join(sorted(table))}")
    return table[kind]()


def build_model(spec: ChallengeSpec, root: Path):
    return _lookup(MODELS, spec.model.kind, "model", spec)(spec, root)


def build_prompts(spec: ChallengeSpec, root: Path, model):
    cls = _lookup(PROMPTS, spec.prompts.kind, "prompts", spec)
    return cls(spec, root, model=model) if spec.prompts.kind in PROMPTS_NEED_MODEL else cls(spec, root)


def build_gate(spec: ChallengeSpec, root: Path):
    return _lookup(GATES, spec.gate.kind, "gate", spec)(spec, root)
