"""Challenge registry: specs, reference model, prompts and reference outputs.

Each challenge is a directory ``challenges/<name>/`` holding ``challenge.toml`` (the spec),
``prompts.json`` (public prompts) and ``reference.json`` (their greedy outputs). This package imports
nothing from intake/, orchestration/ or Dagster: the harness and the front-ends call into it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from challenges import tiny_model
from challenges.prompts import generate_prompts

CHALLENGES_ROOT = Path(__file__).resolve().parent
SPEC_FILE = "challenge.toml"


@dataclass(frozen=True)
class Challenge:
    name: str
    root: Path
    spec: dict = field(hash=False)
    max_new_tokens: int
    accuracy_threshold: float
    allowed_base_images: tuple[str, ...]
    # Derived from the spec; kept out of equality and repr.
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dir(cls, root: Path) -> "Challenge":
        spec = tomllib.loads((root / SPEC_FILE).read_text())
        workload = spec["workload"]
        cfg = tiny_model.ModelConfig.from_spec(spec["model"])
        if workload["prompt_max_len"] + workload["max_new_tokens"] > cfg.context:
            raise ValueError(f"{root / SPEC_FILE}: prompt_max_len {workload['prompt_max_len']} + "
                             f"max_new_tokens {workload['max_new_tokens']} exceeds the context {cfg.context}")
        return cls(name=spec["name"], root=root, spec=spec,
                   max_new_tokens=int(workload["max_new_tokens"]),
                   accuracy_threshold=float(spec["scoring"]["accuracy_threshold"]),
                   allowed_base_images=tuple(spec["submission"]["allowed_base_images"]))

    # ---- the model ----------------------------------------------------------------------------

    @property
    def model_config(self) -> tiny_model.ModelConfig:
        return tiny_model.ModelConfig.from_spec(self.spec["model"])

    def weights(self) -> dict[str, np.ndarray]:
        if "weights" not in self._cache:
            self._cache["weights"] = tiny_model.make_weights(self.model_config.seed, self.model_config)
        return self._cache["weights"]

    def model_dir(self, cache_root: Path) -> Path:
        """``cache_root/<name>/`` holding weights.npz and config.json, written once and atomically.

        The directory is what containers see read-only at /arena/model. A directory left by an older
        spec (different config.json) is replaced; concurrent callers may race, the loser's copy is
        dropped since both are identical.
        """
        target = Path(cache_root) / self.name
        config = self.model_config.to_json()
        if _read_json(target / "config.json") == config and (target / "weights.npz").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}.", dir=target.parent))
        try:
            tiny_model.save_weights(self.weights(), tmp / "weights.npz")
            tiny_model.save_config(self.model_config, tmp / "config.json")
            for f in tmp.iterdir():
                f.chmod(0o644)
            tmp.chmod(0o755)  # mkdtemp makes 0700; the container user is not the host user
            if target.exists():
                stale = target.with_name(f".{self.name}.stale.{os.getpid()}")
                os.replace(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:
                if _read_json(target / "config.json") != config:  # not a racing twin: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    # ---- prompts and references ---------------------------------------------------------------

    def public_prompts(self) -> list[list[int]]:
        return json.loads((self.root / "prompts.json").read_text())["prompts"]

    def public_reference(self) -> list[list[int]]:
        return json.loads((self.root / "reference.json").read_text())["outputs"]

    def private_prompts(self, seed: int) -> list[list[int]]:
        """The private prompts of one evaluation: a deterministic function of the secret seed."""
        w = self.spec["workload"]
        return generate_prompts(seed, int(w["private_prompts"]), int(w["prompt_min_len"]),
                                int(w["prompt_max_len"]), stream=f"private:{self.name}")

    def generate_public_prompts(self) -> list[list[int]]:
        """What prompts.json holds; used by ``python -m challenges.generate_reference``."""
        w = self.spec["workload"]
        return generate_prompts(int(w["public_seed"]), int(w["public_prompts"]), int(w["prompt_min_len"]),
                                int(w["prompt_max_len"]), stream=f"public:{self.name}")

    def performance_prompts(self, seed: int) -> list[list[int]]:
        """The prompts of the timed passes: the sets named by ``workload.performance_set``."""
        sets = {"public": self.public_prompts, "private": lambda: self.private_prompts(seed)}
        return [p for name in self.spec["workload"]["performance_set"] for p in sets[name]()]

    def reference(self, prompts: list[list[int]]) -> list[list[int]]:
        """Host-side greedy outputs of the reference model, ``max_new_tokens`` per prompt."""
        weights, cfg = self.weights(), self.model_config
        return [tiny_model.reference_generate(weights, p, self.max_new_tokens, cfg) for p in prompts]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def challenge_names() -> list[str]:
    return sorted(p.parent.name for p in CHALLENGES_ROOT.glob(f"*/{SPEC_FILE}"))


def load_challenge(name: str) -> Challenge:
    """The challenge called ``name``; KeyError listing the known names otherwise."""
    if name not in challenge_names():
        raise KeyError(f"unknown challenge {name!r}; known challenges: {', '.join(challenge_names()) or 'none'}")
    return Challenge.from_dir(CHALLENGES_ROOT / name)
