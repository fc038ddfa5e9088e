"""A llama-architecture decoder in plain numpy float32: the host-side reference of `smollm2-135m`.

Plain on purpose, so that its correctness can be read off the page (and is pinned by tests against an
independent implementation, HF transformers on torch): RMSNorm, grouped-query attention with rotary
position embeddings, a SwiGLU feed-forward, a final RMSNorm and an output projection (the token
embedding itself when the model ties them).

Weights use the GGUF names and numpy's (out, in) layout, ``y = x @ W.T``. RoPE rotates *adjacent*
pairs (x[2i], x[2i+1]), llama.cpp's "NORM" style: llama.cpp's converter permutes the rows of the Q and
K projections of a Hugging Face checkpoint so that this is the same function as HF's rotate-half.

Two batched entry points, both what the platform runs for every evaluation:
* ``greedy``: right-padded batched prefill (exact under causal attention: a position never sees the
  padding after it), then one batched step per new token over a KV cache;
* ``teacher_forced``: one batched forward pass over prompt + continuation, and, at each emitted
  position, the log-prob of the emitted token, the best log-prob and the argmax.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

try:  # pyproject dependency; optional here because only speed depends on it
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

#: sequences per batched pass: bounds host memory (the KV cache of 16 x 512 positions is ~280 MB)
BATCH = 16
#: rows of the output projection computed at once (each row is a vocabulary of float32 logits)
LOGIT_ROWS = 128


@dataclass(frozen=True)
class LlamaConfig:
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    rope_base: float
    rms_eps: float
    context: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class Scores:
    """Per emitted position: log-prob of the emitted token, the best log-prob, the best token."""
    logprobs: np.ndarray
    best_logprobs: np.ndarray
    argmax: np.ndarray


def layer_names(i: int) -> dict[str, str]:
    p = f"blk.{i}."
    return {k: p + k + ".weight" for k in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                             "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.float32(eps)) * weight


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):   # exp(-x) overflows to inf for very negative x: silu -> -0
        return x / (np.float32(1.0) + np.exp(-x))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread: the figures per scored token stay comparable from host to host, and the
    reference never spins against an evaluation running on the same machine."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


class Llama:
    """The model: a config and float32 weights keyed by GGUF tensor name."""

    def __init__(self, cfg: LlamaConfig, weights: dict[str, np.ndarray]):
        self.cfg, self.w = cfg, weights
        self.output = weights.get("output.weight", weights["token_embd.weight"])   # tied when absent
        hd = cfg.head_dim
        self.inv_freq = cfg.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)   # (hd/2,)

    # ---- pieces ---------------------------------------------------------------------------------

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Rotate adjacent pairs of the last axis; ``pos`` broadcasts against x's leading axes but
        the head axis: x (..., heads, T, hd) with pos (..., 1, T) or x (B, heads, hd) with pos (B, 1)."""
        angle = pos[..., None].astype(np.float64) * self.inv_freq            # (..., hd/2)
        cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def _ffn(self, x: np.ndarray, n: dict[str, str]) -> np.ndarray:
        w = self.w
        a = rms_norm(x, w[n["ffn_norm"]], self.cfg.rms_eps)
        return x + (silu(a @ w[n["ffn_gate"]].T) * (a @ w[n["ffn_up"]].T)) @ w[n["ffn_down"]].T

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Vocabulary logits of final hidden states (..., d_model)."""
        return rms_norm(hidden, self.w["output_norm.weight"], self.cfg.rms_eps) @ self.output.T

    # ---- whole sequences ------------------------------------------------------------------------

    def prefill(self, tokens: np.ndarray, cache_len: int = 0):
        """Final hidden states (B, T, d) of right-padded sequences, and the K/V cache of every
        layer, (B, kv_heads, max(T, cache_len), head_dim) each, holding positions 0..T-1."""
        cfg, w = self.cfg, self.w
        b, t = tokens.shape
        hd, kvh = cfg.head_dim, cfg.n_kv_heads
        rep = cfg.n_heads // kvh
        x = w["token_embd.weight"][tokens]                                       # (B, T, d)
        pos = np.arange(t)[None, None, :]                                        # (1, 1, T)
        future = np.triu(np.ones((t, t), dtype=bool), k=1)
        size = max(t, cache_len)
        cache = []
        for i in range(cfg.n_layers):
            n = layer_names(i)
            a = rms_norm(x, w[n["attn_norm"]], cfg.rms_eps)
            q = (a @ w[n["attn_q"]].T).reshape(b, t, cfg.n_heads, hd).transpose(0, 2, 1, 3)
            k = (a @ w[n["attn_k"]].T).reshape(b, t, kvh, hd).transpose(0, 2, 1, 3)
            v = (a @ w[n["attn_v"]].T).reshape(b, t, kvh, hd).transpose(0, 2, 1, 3)
            q, k = self._rope(q, pos), self._rope(k, pos)
            # grouped-query attention: query head h reads kv head h // rep
            qg = q.reshape(b, kvh, rep * t, hd)
            scores = (qg @ k.transpose(0, 1, 3, 2)).reshape(b, kvh, rep, t, t) / np.float32(np.sqrt(hd))
            scores = np.where(future, np.float32(-np.inf), scores)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            att = (scores / scores.sum(axis=-1, keepdims=True)).reshape(b, kvh, rep * t, t)
            y = (att @ v).reshape(b, cfg.n_heads, t, hd).transpose(0, 2, 1, 3).reshape(b, t, cfg.d_model)
            x = x + y @ w[n["attn_output"]].T
            x = self._ffn(x, n)
            ck = np.zeros((b, kvh, size, hd), np.float32)
            cv = np.zeros((b, kvh, size, hd), np.float32)
            ck[:, :, :t], cv[:, :, :t] = k, v
            cache.append((ck, cv))
        return x, cache

    def step(self, tokens: np.ndarray, pos: np.ndarray, cache) -> np.ndarray:
        """One new token per sequence at position ``pos`` (B,); writes its K/V into the cache and
        returns the final hidden states (B, d)."""
        cfg, w = self.cfg, self.w
        b = len(tokens)
        hd, kvh = cfg.head_dim, cfg.n_kv_heads
        rep = cfg.n_heads // kvh
        rows = np.arange(b)
        size = cache[0][0].shape[2]
        visible = np.arange(size)[None, :] <= pos[:, None]                       # (B, size)
        x = w["token_embd.weight"][tokens]                                       # (B, d)
        for i in range(cfg.n_layers):
            n = layer_names(i)
            a = rms_norm(x, w[n["attn_norm"]], cfg.rms_eps)
            q = self._rope((a @ w[n["attn_q"]].T).reshape(b, cfg.n_heads, hd), pos[:, None])
            k = self._rope((a @ w[n["attn_k"]].T).reshape(b, kvh, hd), pos[:, None])
            v = (a @ w[n["attn_v"]].T).reshape(b, kvh, hd)
            ck, cv = cache[i]
            ck[rows, :, pos], cv[rows, :, pos] = k, v
            qg = q.reshape(b, kvh, rep, hd)
            scores = (qg @ ck.transpose(0, 1, 3, 2)) / np.float32(np.sqrt(hd))   # (B, kvh, rep, size)
            scores = np.where(visible[:, None, None, :], scores, np.float32(-np.inf))
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            att = scores / scores.sum(axis=-1, keepdims=True)
            y = (att @ cv).reshape(b, cfg.d_model)
            x = x + y @ w[n["attn_output"]].T
            x = self._ffn(x, n)
        return x

    # ---- what the platform runs -----------------------------------------------------------------

    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(prompts)
        with single_threaded_blas():
            for chunk in _length_sorted_chunks([len(p) for p in prompts]):
                for i, toks in zip(chunk, self._greedy_chunk([prompts[i] for i in chunk], max_new_tokens)):
                    out[i] = toks
        return out  # type: ignore[return-value]

    def _greedy_chunk(self, prompts: list[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        lengths = np.array([len(p) for p in prompts])
        if lengths.min() < 1:
            raise ValueError("a prompt must hold at least one token")
        self._check_context(int(lengths.max()) + max_new_tokens)
        tokens = _right_padded(prompts)
        hidden, cache = self.prefill(tokens, cache_len=int(lengths.max()) + max_new_tokens)
        rows = np.arange(len(prompts))
        logits = self.logits(hidden[rows, lengths - 1])
        out = np.zeros((len(prompts), max_new_tokens), dtype=np.int64)
        pos = lengths.copy()
        for step in range(max_new_tokens):
            out[:, step] = logits.argmax(axis=-1)
            if step + 1 < max_new_tokens:
                logits = self.logits(self.step(out[:, step], pos, cache))
                pos += 1
        return out.tolist()

    def teacher_forced(self, prompts: Sequence[Sequence[int]],
                       continuations: Sequence[Sequence[int]]) -> list[Scores]:
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        out: list[Scores | None] = [None] * len(prompts)
        lengths = [len(p) + max(len(c) - 1, 0) for p, c in zip(prompts, continuations)]
        with single_threaded_blas():
            for chunk in _length_sorted_chunks(lengths):
                scored = self._teacher_forced_chunk([prompts[i] for i in chunk], [continuations[i] for i in chunk])
                for i, s in zip(chunk, scored):
                    out[i] = s
        return out  # type: ignore[return-value]

    def _teacher_forced_chunk(self, prompts, continuations) -> list[Scores]:
        if min(len(p) for p in prompts) < 1:
            raise ValueError("a prompt must hold at least one token")
        # The last emitted token predicts nothing that is scored: feed prompt + continuation[:-1].
        seqs = [list(p) + list(c)[:-1] if c else list(p) for p, c in zip(prompts, continuations)]
        self._check_context(max(map(len, seqs)))
        # A token outside the vocabulary scores -inf where it was emitted; as context later on it
        # reads as token 0 (whatever it stands for, the position that emitted it has failed).
        vocab = self.w["token_embd.weight"].shape[0]
        tokens = _right_padded(seqs)
        tokens[(tokens < 0) | (tokens >= vocab)] = 0
        hidden, _ = self.prefill(tokens)
        where = [(b, len(p) - 1 + j) for b, (p, c) in enumerate(zip(prompts, continuations)) for j in range(len(c))]
        emitted = np.array([t for c in continuations for t in c], dtype=np.int64)
        lp, best, arg = (np.zeros(len(where), np.float32), np.zeros(len(where), np.float32),
                         np.zeros(len(where), np.int64))
        for start in range(0, len(where), LOGIT_ROWS):
            sel = where[start:start + LOGIT_ROWS]
            h = hidden[[b for b, _ in sel], [t for _, t in sel]]
            logp = log_softmax(self.logits(h))
            tok = emitted[start:start + len(sel)]
            inside = (tok >= 0) & (tok < vocab)
            lp[start:start + len(sel)] = np.where(
                inside, logp[np.arange(len(sel)), np.clip(tok, 0, vocab - 1)], -np.inf)
            best[start:start + len(sel)] = logp.max(axis=-1)
            arg[start:start + len(sel)] = logp.argmax(axis=-1)
        out, k = [], 0
        for c in continuations:
            out.append(Scores(lp[k:k + len(c)], best[k:k + len(c)], arg[k:k + len(c)]))
            k += len(c)
        return out

    def _check_context(self, length: int) -> None:
        if length > self.cfg.context:
            raise ValueError(f"a sequence of {length} tokens exceeds the context of {self.cfg.context}")


def _right_padded(seqs: Sequence[Sequence[int]]) -> np.ndarray:
    tokens = np.zeros((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
    return tokens


def _length_sorted_chunks(lengths: list[int]) -> list[list[int]]:
    """Indices in chunks of BATCH, sequences of similar length together (less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
