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
