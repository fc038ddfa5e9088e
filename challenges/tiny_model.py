"""The tiny reference model of `efficient-decode`: a decoder-only transformer over bytes.

Shape (DESIGN.md): vocabulary 256, d_model 64, 2 layers, 4 heads, context 128, MLP width 256.
Pre-LayerNorm blocks, learned positional embeddings, causal attention, GELU (tanh approximation),
final LayerNorm, untied output projection. Weights are float32 and come from
``numpy.random.default_rng(seed)`` alone, so every host derives the same model from the seed.

``reference_generate`` is deliberately plain: it recomputes the whole forward pass for every new
token, so that its correctness can be read off the page. Submissions compete on being faster.

Initialisation scales are chosen for two properties the challenge relies on (pinned by tests):
logits spread widely, so the greedy argmax does not flip under float32 reordering (KV cache,
batching, other BLAS); and strong positional embeddings with sharp attention, so the continuation
depends on position and context and cannot be guessed from the last token or collapse into a loop.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lake.atomic import publish_dir, read_json

try:  # pyproject dependency; optional here because only speed depends on it
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


@dataclass(frozen=True)
class ModelConfig:
    seed: int
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 256
    context: int = 128
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_spec(cls, spec: dict) -> "ModelConfig":
        """Build from the ``[model]`` table of a challenge.toml (unknown keys are ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in spec.items() if k in known})

    def to_json(self) -> dict:
        """What goes into config.json next to the weights, for submissions to read."""
        return {**asdict(self), "activation": "gelu_tanh", "norm": "pre_layernorm",
                "dtype": "float32", "weights": weight_layout(self)}


# Scales of the initialisation (standard deviations unless stated); see the module docstring.
TOKEN_EMBED_STD = 1.0
POSITION_EMBED_STD = 1.0
QK_GAIN = 1.6      # q/k weights are QK_GAIN / sqrt(d_model): attention scores with std ~ QK_GAIN**2
V_GAIN = 1.0
OUT_GAIN = 1.0     # attention and MLP output projections: OUT_GAIN / sqrt(fan_in)
MLP_IN_GAIN = 1.5
HEAD_GAIN = 1.5    # output projection entries: logits std ~ HEAD_GAIN * sqrt(d_model) = 12
NORM_GAIN_STD = 0.1
BIAS_STD = 0.02


def weight_layout(cfg: ModelConfig) -> dict[str, list[int]]:
    """Name -> shape of every array in weights.npz. Matrices are (in, out): y = x @ W + b."""
    d, m, v = cfg.d_model, cfg.d_mlp, cfg.vocab_size
    layout: dict[str, list[int]] = {"wte": [v, d], "wpe": [cfg.context, d]}
    for i in range(cfg.n_layers):
        layout |= {
            f"l{i}.ln1_g": [d], f"l{i}.ln1_b": [d],
            f"l{i}.attn_qkv_w": [d, 3 * d], f"l{i}.attn_qkv_b": [3 * d],
            f"l{i}.attn_out_w": [d, d], f"l{i}.attn_out_b": [d],
            f"l{i}.ln2_g": [d], f"l{i}.ln2_b": [d],
            f"l{i}.mlp_in_w": [d, m], f"l{i}.mlp_in_b": [m],
            f"l{i}.mlp_out_w": [m, d], f"l{i}.mlp_out_b": [d],
        }
    layout |= {"lnf_g": [d], "lnf_b": [d], "head_w": [d, v], "head_b": [v]}
    return layout


def make_weights(seed: int, cfg: ModelConfig | None = None) -> dict[str, np.ndarray]:
    """Generate every weight from ``default_rng(seed)`` in a fixed order (float32)."""
    cfg = cfg or ModelConfig(seed=seed)
    rng = np.random.default_rng(seed)
    d, m = cfg.d_model, cfg.d_mlp

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(shape):
        return (1.0 + rng.standard_normal(shape) * NORM_GAIN_STD).astype(np.float32)

    w: dict[str, np.ndarray] = {
        "wte": normal((cfg.vocab_size, d), TOKEN_EMBED_STD),
        "wpe": normal((cfg.context, d), POSITION_EMBED_STD),
    }
    for i in range(cfg.n_layers):
        qk_std, v_std = QK_GAIN / np.sqrt(d), V_GAIN / np.sqrt(d)
        qkv = np.concatenate([normal((d, d), qk_std), normal((d, d), qk_std), normal((d, d), v_std)], axis=1)
        w |= {
            f"l{i}.ln1_g": gain(d), f"l{i}.ln1_b": normal(d, BIAS_STD),
            f"l{i}.attn_qkv_w": qkv, f"l{i}.attn_qkv_b": normal(3 * d, BIAS_STD),
            f"l{i}.attn_out_w": normal((d, d), OUT_GAIN / np.sqrt(d)), f"l{i}.attn_out_b": normal(d, BIAS_STD),
            f"l{i}.ln2_g": gain(d), f"l{i}.ln2_b": normal(d, BIAS_STD),
            f"l{i}.mlp_in_w": normal((d, m), MLP_IN_GAIN / np.sqrt(d)), f"l{i}.mlp_in_b": normal(m, BIAS_STD),
            f"l{i}.mlp_out_w": normal((m, d), OUT_GAIN / np.sqrt(m)), f"l{i}.mlp_out_b": normal(d, BIAS_STD),
        }
    w |= {"lnf_g": gain(d), "lnf_b": normal(d, BIAS_STD),
          "head_w": normal((d, cfg.vocab_size), HEAD_GAIN), "head_b": normal(cfg.vocab_size, BIAS_STD)}
    assert {k: list(a.shape) for k, a in w.items()} == weight_layout(cfg)
    return w


def save_weights(weights: dict[str, np.ndarray], path: Path) -> None:
    """Write an uncompressed .npz (byte-identical for identical weights)."""
    buf = io.BytesIO()
    np.savez(buf, **weights)
    Path(path).write_bytes(buf.getvalue())


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k].astype(np.float32, copy=False) for k in npz.files}


def save_config(cfg: ModelConfig, path: Path) -> None:
    Path(path).write_text(json.dumps(cfg.to_json(), indent=2) + "\n")


# ---- forward pass --------------------------------------------------------------------------

def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + np.float32(eps)) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    c = np.float32(np.sqrt(2.0 / np.pi))
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * (x + np.float32(0.044715) * x ** 3)))


def forward(weights: dict[str, np.ndarray], tokens: list[int], cfg: ModelConfig) -> np.ndarray:
    """Logits (len(tokens), vocab) for a whole sequence, float32, causal."""
    n, d, h = len(tokens), cfg.d_model, cfg.n_heads
    hd = d // h
    assert 0 < n <= cfg.context, f"sequence of {n} tokens does not fit the context of {cfg.context}"
    x = weights["wte"][np.asarray(tokens)] + weights["wpe"][:n]
    causal = np.triu(np.ones((n, n), dtype=bool), k=1)
    for i in range(cfg.n_layers):
        p = f"l{i}."
        a = _layer_norm(x, weights[p + "ln1_g"], weights[p + "ln1_b"], cfg.layer_norm_eps)
        qkv = a @ weights[p + "attn_qkv_w"] + weights[p + "attn_qkv_b"]
        q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, h, hd).transpose(1, 0, 2) for j in range(3))
        scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(hd))          # (h, n, n)
        scores = np.where(causal, np.float32(-np.inf), scores)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = scores / scores.sum(axis=-1, keepdims=True)
        y = (att @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + y @ weights[p + "attn_out_w"] + weights[p + "attn_out_b"]
        a = _layer_norm(x, weights[p + "ln2_g"], weights[p + "ln2_b"], cfg.layer_norm_eps)
        x = x + _gelu(a @ weights[p + "mlp_in_w"] + weights[p + "mlp_in_b"]) @ weights[p + "mlp_out_w"] \
            + weights[p + "mlp_out_b"]
    x = _layer_norm(x, weights["lnf_g"], weights["lnf_b"], cfg.layer_norm_eps)
    return x @ weights["head_w"] + weights["head_b"]


def reference_generate(weights: dict[str, np.ndarray], prompt: list[int], max_new_tokens: int,
                       cfg: ModelConfig | None = None) -> list[int]:
    """Greedy decoding, recomputing the full forward pass for every new token."""
    cfg = cfg or ModelConfig(seed=-1)
    assert prompt, "the prompt must not be empty"
    assert len(prompt) + max_new_tokens <= cfg.context, (
        f"prompt of {len(prompt)} + {max_new_tokens} new tokens exceeds the context of {cfg.context}")
    seq = [int(t) for t in prompt]
    out: list[int] = []
    with single_threaded_blas():
        for _ in range(max_new_tokens):
            tok = int(np.argmax(forward(weights, seq, cfg)[-1]))
            out.append(tok)
            seq.append(tok)
    return out


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """The model's matrices are tiny: BLAS threads only add overhead, and on a busy host (a submission
    being measured next door) they spin against each other, making the reference many times slower."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


def reference_generate_batch(weights: dict[str, np.ndarray], prompts, max_new_tokens: int,
                             cfg: ModelConfig) -> list[list[int]]:
    """Greedy decoding of many prompts at once with a KV cache: what the host runs for every timed
    output. Rows keep their own positions (learned position embeddings: no left padding); a row
    attends to its own keys only. Equal to ``reference_generate`` token for token (pinned by tests:
    the model's logits are spread too widely for float32 reordering to flip an argmax)."""
    if not prompts:
        return []
    d, h = cfg.d_model, cfg.n_heads
    hd = d // h
    lengths = np.array([len(p) for p in prompts])
    assert lengths.min() > 0, "the prompt must not be empty"
    total = int(lengths.max()) + max_new_tokens
    assert total <= cfg.context, f"prompt of {lengths.max()} + {max_new_tokens} new tokens exceeds the context"
    b = len(prompts)
    tokens = np.zeros((b, total), dtype=np.int64)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = p
    keys = [np.zeros((b, h, total, hd), np.float32) for _ in range(cfg.n_layers)]
    values = [np.zeros((b, h, total, hd), np.float32) for _ in range(cfg.n_layers)]
    rows = np.arange(b)
    out = np.zeros((b, max_new_tokens), dtype=np.int64)
    scale = np.float32(np.sqrt(hd))

    def run(x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Positions [start, stop) of every row through the blocks; x is (b, stop-start, d)."""
        n = stop - start
        for i in range(cfg.n_layers):
            p = f"l{i}."
            a = _layer_norm(x, weights[p + "ln1_g"], weights[p + "ln1_b"], cfg.layer_norm_eps)
            qkv = a @ weights[p + "attn_qkv_w"] + weights[p + "attn_qkv_b"]
            q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(b, n, h, hd).transpose(0, 2, 1, 3) for j in range(3))
            keys[i][:, :, start:stop], values[i][:, :, start:stop] = k, v
            scores = q @ keys[i][:, :, :stop].transpose(0, 1, 3, 2) / scale          # (b, h, n, stop)
            qpos = np.arange(start, stop)[:, None]
            scores = np.where(np.arange(stop)[None, :] > qpos, np.float32(-np.inf), scores)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            att = scores / scores.sum(axis=-1, keepdims=True)
            y = (att @ values[i][:, :, :stop]).transpose(0, 2, 1, 3).reshape(b, n, d)
            x = x + y @ weights[p + "attn_out_w"] + weights[p + "attn_out_b"]
            a = _layer_norm(x, weights[p + "ln2_g"], weights[p + "ln2_b"], cfg.layer_norm_eps)
            x = x + _gelu(a @ weights[p + "mlp_in_w"] + weights[p + "mlp_in_b"]) @ weights[p + "mlp_out_w"] \
                + weights[p + "mlp_out_b"]
        return _layer_norm(x, weights["lnf_g"], weights["lnf_b"], cfg.layer_norm_eps)

    with single_threaded_blas():
        # Every row is fed one position at a time from 0 to the end: row i reads its prompt up to
        # lengths[i], then its own greedy tokens; a row's future positions never reach its past.
        shortest = int(lengths.min())
        x = weights["wte"][tokens[:, :shortest]] + weights["wpe"][:shortest]
        hidden = run(x, 0, shortest)[:, -1]
        for pos in range(shortest, total):
            logits = hidden @ weights["head_w"] + weights["head_b"]
            step = pos - lengths                         # the output index each row is producing
            emitting = (step >= 0) & (step < max_new_tokens)
            choice = logits.argmax(axis=-1)
            out[rows[emitting], step[emitting]] = choice[emitting]
            tokens[emitting, pos] = choice[emitting]
            if pos + 1 >= total or (step >= max_new_tokens - 1).all():
                break
            x = weights["wte"][tokens[:, pos]][:, None] + weights["wpe"][pos]
            hidden = run(x, pos, pos + 1)[:, -1]
    return out.tolist()


class TinyModel:
    """ReferenceModel kind ``tiny``: the model above, from the ``[model]`` table of challenge.toml."""

    kind = "tiny"

    def __init__(self, spec, root: Path):
        from challenges.spec import Fields
        f = Fields(spec.model.table, f"{Path(root) / 'challenge.toml'} [model]")
        known = {name: f.int(name, None) for name in ("seed", "vocab_size", "d_model", "n_layers", "n_heads",
                                                     "d_mlp", "context")}
        f.done()
        if known["seed"] is None:
            raise ValueError(f"{Path(root) / 'challenge.toml'} [model]: `seed` is required")
        self.config = ModelConfig(**{k: v for k, v in known.items() if v is not None})
        self.name = spec.name
        self._weights: dict[str, np.ndarray] | None = None

    @property
    def context(self) -> int:
        return self.config.context

    def weights(self) -> dict[str, np.ndarray]:
        if self._weights is None:
            self._weights = make_weights(self.config.seed, self.config)
        return self._weights

    def greedy(self, prompts, max_new_tokens: int) -> list[list[int]]:
        return reference_generate_batch(self.weights(), prompts, max_new_tokens, self.config)

    def teacher_forced(self, prompts, continuations):
        raise NotImplementedError("the tiny challenge's gate is exact match; it needs greedy outputs only")

    def materialize(self, cache_root: Path) -> Path:
        """``cache_root/<challenge>/`` holding weights.npz and config.json, written once and atomically.

        The directory is what containers see read-only at /arena/model. A directory left by an older
        spec (different config.json) is replaced; concurrent callers may race, the loser's copy is
        dropped since both are identical."""
        target = Path(cache_root) / self.name
        config = self.config.to_json()
        if read_json(target / "config.json") == config and (target / "weights.npz").is_file():
            return target
        def fill(tmp: Path) -> None:
            save_weights(self.weights(), tmp / "weights.npz")
            save_config(self.config, tmp / "config.json")
        return publish_dir(target, fill, config)

