"""Challenge registry: each challenge is a directory ``challenges/<name>/`` with ``challenge.toml``.

The spec is parsed once into a typed ``ChallengeSpec`` (challenges/spec.py); its model, prompt source
and gate are built by kind (challenges/registry.py) and reached through the interfaces of
challenges/interfaces.py. This package imports nothing from intake/, orchestration/ or Dagster: the
harness and the front-ends call into it.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from challenges import registry, tiny_model
from challenges.spec import ChallengeSpec, ChallengeSpecError, load_spec

CHALLENGES_ROOT = Path(__file__).resolve().parent
SPEC_FILE = "challenge.toml"


class Challenge:
    """One challenge: its typed spec and its parts (model, prompts, gate), built lazily."""

    def __init__(self, root: Path, spec: ChallengeSpec):
        self.root, self.spec, self.name = Path(root), spec, spec.name
        # build the parts now: a spec whose kinds are unknown or whose tables are wrong is refused at load
        self.model, self.gate = registry.build_model(spec, self.root), registry.build_gate(spec, self.root)
        self.prompts = registry.build_prompts(spec, self.root, self.model)
        context, longest = getattr(self.model, "context", None), getattr(self.prompts, "max_len", None)
        if context and longest and longest + spec.workload.max_new_tokens > context:
            raise ChallengeSpecError(f"{self.root / SPEC_FILE}: prompt_max_len {longest} + max_new_tokens "
                                     f"{spec.workload.max_new_tokens} exceeds the context {context}")

    @classmethod
    def from_dir(cls, root: Path) -> "Challenge":
        return cls(root, load_spec(Path(root) / SPEC_FILE))

    def __repr__(self) -> str:
        return f"Challenge({self.name!r})"

    # ---- what the platform reads -----------------------------------------------------------------
    @property
    def max_new_tokens(self) -> int:
        return self.spec.workload.max_new_tokens

    @property
    def accuracy_threshold(self) -> float:
        return self.spec.gate.threshold

    @property
    def allowed_base_images(self) -> tuple[str, ...]:
        return self.spec.base_images

    @property
    def queue(self) -> str:
        return self.spec.queue

    @property
    def limits(self):
        return self.spec.limits

    def model_dir(self, cache_root: Path) -> Path:
        """The directory mounted read-only at /arena/model (written once under ``cache_root``)."""
        return self.model.materialize(Path(cache_root))

    # ---- prompts and references ------------------------------------------------------------------
    def public_prompts(self) -> list[list[int]]:
        return self.prompts.public()

    def private_prompts(self, seed: int, count: int | None = None) -> list[list[int]]:
        """Private prompts from a secret seed (the accuracy pass's count unless given)."""
        return self.prompts.private(seed, self.spec.workload.private_prompts if count is None else count)

    def reference(self, prompts: list[list[int]]) -> list[list[int]]:
        """Host-side greedy outputs of the reference model, ``max_new_tokens`` per prompt, batched."""
        return self.model.greedy(prompts, self.max_new_tokens)

    # ---- the tiny challenge's extras (tests, generate_reference) --------------------------------
    def public_reference(self) -> list[list[int]]:
        return self.prompts.public_reference()

    def generate_public_prompts(self) -> list[list[int]]:
        return self.prompts.generate_public()

    @cached_property
    def model_config(self) -> tiny_model.ModelConfig:
        return self.model.config

    def weights(self):
        return self.model.weights()


def challenge_names() -> list[str]:
    return sorted(p.parent.name for p in CHALLENGES_ROOT.glob(f"*/{SPEC_FILE}"))


_loaded: dict[str, Challenge] = {}


def load_challenge(name: str) -> Challenge:
    """The challenge called ``name`` (one object per process); KeyError listing the known names otherwise."""
    if name not in challenge_names():
        raise KeyError(f"unknown challenge {name!r}; known challenges: {', '.join(challenge_names()) or 'none'}")
    if name not in _loaded:
        _loaded[name] = Challenge.from_dir(CHALLENGES_ROOT / name)
    return _loaded[name]
