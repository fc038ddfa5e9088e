"""Baseline decoder for `efficient-decode`: correct and deliberately naive.

One request at a time; for every new token the whole sequence goes through the model again
(no KV cache, no batching). Each token is sent as soon as it exists. Start here, then make it fast.
Only numpy and the platform's `arena_protocol` module are needed.
"""
import json
import os
from pathlib import Path

# Set before numpy loads: the model's matrices are tiny, so BLAS threads cost more than they save,
# and they fight over the sandbox's CPU quota.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import arena_protocol  # noqa: E402

MODEL_DIR = Path(os.environ.get("ARENA_MODEL_DIR", "/arena/model"))


def load_model(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    with np.load(model_dir / "weights.npz") as npz:
        weights = {name: npz[name].astype(np.float32) for name in npz.files}
    return config, weights


def layer_norm(x, g, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + np.float32(eps)) * g + b


def gelu(x):
    c = np.float32(np.sqrt(2.0 / np.pi))
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * (x + np.float32(0.044715) * x ** 3)))


def next_token(config, w, tokens):
    """Greedy next token after `tokens`, computing the full causal forward pass."""
    n, d, h, eps = len(tokens), config["d_model"], config["n_heads"], config["layer_norm_eps"]
    hd = d // h
    x = w["wte"][np.asarray(tokens)] + w["wpe"][:n]
    future = np.triu(np.ones((n, n), dtype=bool), k=1)
    for i in range(config["n_layers"]):
        p = "l%d." % i
        a = layer_norm(x, w[p + "ln1_g"], w[p + "ln1_b"], eps)
        qkv = a @ w[p + "attn_qkv_w"] + w[p + "attn_qkv_b"]
        q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, h, hd).transpose(1, 0, 2) for j in range(3))
        scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(hd))
        scores = np.where(future, np.float32(-np.inf), scores)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = scores / scores.sum(axis=-1, keepdims=True)
        y = (att @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + y @ w[p + "attn_out_w"] + w[p + "attn_out_b"]
        a = layer_norm(x, w[p + "ln2_g"], w[p + "ln2_b"], eps)
        x = x + gelu(a @ w[p + "mlp_in_w"] + w[p + "mlp_in_b"]) @ w[p + "mlp_out_w"] + w[p + "mlp_out_b"]
    x = layer_norm(x, w["lnf_g"], w["lnf_b"], eps)
    logits = x @ w["head_w"] + w["head_b"]
    return int(np.argmax(logits[-1]))


def main():
    config, weights = load_model(MODEL_DIR)
    io = arena_protocol.DecoderIO()
    io.ready()
    for req in io.requests():
        seq = list(req.prompt)
        for _ in range(req.max_new_tokens):
            tok = next_token(config, weights, seq)
            io.tokens(req.id, [tok])
            seq.append(tok)
        io.done(req.id)


if __name__ == "__main__":
    main()
