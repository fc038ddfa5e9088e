"""Naive decoder for `smollm2-135m`: the whole sequence through all 30 layers for every new token.

The simplest correct entry, written to be read: numpy float32, one request at a time, no KV cache,
so each token costs a forward pass over the prompt and everything generated so far. The weights are
the float32 arrays in /arena/model/weights (GGUF tensor names, numpy (out, in) layout: y = x @ W.T),
the architecture is in /arena/model/config.json. Only numpy and `arena_protocol` are needed.
"""
import json
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

MODEL_DIR = Path(os.environ.get("ARENA_MODEL_DIR", "/arena/model"))


def rms_norm(x, weight, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.float32(eps)) * weight


def rope(x, inv_freq):
    """Rotate adjacent pairs (x[2i], x[2i+1]) of each head by pos * inv_freq[i] (llama.cpp NORM)."""
    pos = np.arange(x.shape[1], dtype=np.float64)
    cos = np.cos(pos[:, None] * inv_freq).astype(np.float32)
    sin = np.sin(pos[:, None] * inv_freq).astype(np.float32)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


class Model:
    def __init__(self, model_dir):
        self.cfg = json.loads((model_dir / "config.json").read_text())
        self.w = {name: np.load(model_dir / "weights" / f"{name}.npy") for name in self.cfg["weights"]}
        hd = self.cfg["head_dim"]
        self.inv_freq = self.cfg["rope_base"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)

    def next_token(self, tokens):
        c, w = self.cfg, self.w
        n, h, kvh, hd, eps = len(tokens), c["n_heads"], c["n_kv_heads"], c["head_dim"], c["rms_eps"]
        x = w["token_embd.weight"][tokens]
        future = np.triu(np.ones((n, n), dtype=bool), k=1)
        for i in range(c["n_layers"]):
            p = f"blk.{i}."
            a = rms_norm(x, w[p + "attn_norm.weight"], eps)
            q = rope((a @ w[p + "attn_q.weight"].T).reshape(n, h, hd).transpose(1, 0, 2), self.inv_freq)
            k = rope((a @ w[p + "attn_k.weight"].T).reshape(n, kvh, hd).transpose(1, 0, 2), self.inv_freq)
            v = (a @ w[p + "attn_v.weight"].T).reshape(n, kvh, hd).transpose(1, 0, 2)
            heads = []
            for j in range(h):                       # query head j reads key/value head j // (h // kvh)
                s = np.where(future, -np.inf, q[j] @ k[j // (h // kvh)].T / np.float32(np.sqrt(hd)))
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                heads.append(s / s.sum(axis=-1, keepdims=True) @ v[j // (h // kvh)])
            x = x + np.concatenate(heads, axis=-1) @ w[p + "attn_output.weight"].T
            a = rms_norm(x, w[p + "ffn_norm.weight"], eps)
            g = a @ w[p + "ffn_gate.weight"].T
            x = x + (g / (1 + np.exp(-g)) * (a @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
        head = w.get("output.weight", w["token_embd.weight"])
        return int(np.argmax(rms_norm(x[-1], w["output_norm.weight"], eps) @ head.T))


def main():
    import arena_protocol
    model = Model(MODEL_DIR)
    io = arena_protocol.DecoderIO()
    io.ready()
    for req in io.requests():
        seq = list(req.prompt)
        for _ in range(req.max_new_tokens):
            tok = model.next_token(seq)
            io.tokens(req.id, [tok])
            seq.append(tok)
        io.done(req.id)


if __name__ == "__main__":
    with np.errstate(over="ignore"):    # exp(-g) overflows for very negative g: silu is then -0
        main()
