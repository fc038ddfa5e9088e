"""KV-cache decoder for `efficient-decode`: the same greedy tokens as the baseline, much sooner.

Two ideas, both standard:
* KV cache: each token's keys and values are computed once and kept, so a new token costs one
  position through the model instead of the whole sequence.
* Continuous batching: every request that has arrived joins the running batch at the next step;
  one step advances all of them by one token, so numpy works on (batch, d_model) matrices.
A new request is prefilled on its own (its whole prompt at once) and gets its first token right away.
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


class Model:
    def __init__(self, config, w):
        self.w = w
        self.d, self.h = config["d_model"], config["n_heads"]
        self.hd = self.d // self.h
        self.layers = config["n_layers"]
        self.ctx = config["context"]
        self.eps = config["layer_norm_eps"]
        self.scale = np.float32(np.sqrt(self.hd))

    def _mlp(self, x, p):
        w = self.w
        a = layer_norm(x, w[p + "ln2_g"], w[p + "ln2_b"], self.eps)
        return x + gelu(a @ w[p + "mlp_in_w"] + w[p + "mlp_in_b"]) @ w[p + "mlp_out_w"] + w[p + "mlp_out_b"]

    def _logits(self, x):
        x = layer_norm(x, self.w["lnf_g"], self.w["lnf_b"], self.eps)
        return x @ self.w["head_w"] + self.w["head_b"]

    def prefill(self, tokens):
        """Run a whole prompt; return its cache rows K, V (layers, heads, ctx, hd) and the next token."""
        w, n, d, h, hd = self.w, len(tokens), self.d, self.h, self.hd
        K = np.zeros((self.layers, h, self.ctx, hd), np.float32)
        V = np.zeros_like(K)
        x = w["wte"][np.asarray(tokens)] + w["wpe"][:n]
        future = np.triu(np.ones((n, n), dtype=bool), k=1)
        for i in range(self.layers):
            p = "l%d." % i
            a = layer_norm(x, w[p + "ln1_g"], w[p + "ln1_b"], self.eps)
            qkv = a @ w[p + "attn_qkv_w"] + w[p + "attn_qkv_b"]
            q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, h, hd).transpose(1, 0, 2) for j in range(3))
            K[i, :, :n], V[i, :, :n] = k, v
            s = np.where(future, np.float32(-np.inf), q @ k.transpose(0, 2, 1) / self.scale)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            y = (s / s.sum(axis=-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(n, d)
            x = x + y @ w[p + "attn_out_w"] + w[p + "attn_out_b"]
            x = self._mlp(x, p)
        return K, V, int(np.argmax(self._logits(x[-1:])[0]))

    def step(self, K, V, tokens, pos):
        """One token for each row of the batch: tokens (B,) at positions pos (B,). Updates K, V."""
        w, d, h, hd = self.w, self.d, self.h, self.hd
        B = len(tokens)
        rows = np.arange(B)
        T = int(pos.max()) + 1
        future = np.arange(T)[None, None, :] > pos[:, None, None]          # (B, 1, T)
        x = w["wte"][tokens] + w["wpe"][pos]
        for i in range(self.layers):
            p = "l%d." % i
            a = layer_norm(x, w[p + "ln1_g"], w[p + "ln1_b"], self.eps)
            qkv = a @ w[p + "attn_qkv_w"] + w[p + "attn_qkv_b"]
            q = qkv[:, :d].reshape(B, h, 1, hd)
            K[rows, i, :, pos] = qkv[:, d:2 * d].reshape(B, h, hd)
            V[rows, i, :, pos] = qkv[:, 2 * d:].reshape(B, h, hd)
            s = (q @ K[:, i, :, :T].transpose(0, 1, 3, 2))[:, :, 0] / self.scale   # (B, h, T)
            s = np.where(future, np.float32(-np.inf), s)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            att = (s / s.sum(axis=-1, keepdims=True))[:, :, None, :]             # (B, h, 1, T)
            y = (att @ V[:, i, :, :T]).reshape(B, d)
            x = x + y @ w[p + "attn_out_w"] + w[p + "attn_out_b"]
            x = self._mlp(x, p)
        return np.argmax(self._logits(x), axis=-1)


class Batch:
    """The running requests, one row each, kept compact (finished rows are dropped)."""

    def __init__(self, model):
        shape = (0, model.layers, model.h, model.ctx, model.hd)
        self.K, self.V = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.ids, self.left = [], []
        self.tokens = np.zeros(0, np.int64)
        self.pos = np.zeros(0, np.int64)

    def __len__(self):
        return len(self.ids)

    def extend(self, joining):
        """Add (id, K, V, next token, position, tokens left) rows, all in one copy of the cache."""
        if not joining:
            return
        ids, Ks, Vs, toks, pos, left = zip(*joining)
        self.K = np.concatenate([self.K, np.stack(Ks)])
        self.V = np.concatenate([self.V, np.stack(Vs)])
        self.ids += ids
        self.left += left
        self.tokens = np.concatenate([self.tokens, np.array(toks, np.int64)])
        self.pos = np.concatenate([self.pos, np.array(pos, np.int64)])

    def keep(self, mask):
        idx = np.flatnonzero(mask)
        self.K, self.V = self.K[idx], self.V[idx]
        self.ids = [self.ids[j] for j in idx]
        self.left = [self.left[j] for j in idx]
        self.tokens, self.pos = self.tokens[idx], self.pos[idx]


def main():
    config, weights = load_model(MODEL_DIR)
    model = Model(config, weights)
    io = arena_protocol.DecoderIO()
    io.ready()
    batch = Batch(model)
    while True:
        if len(batch):
            new = io.pending()                       # never wait while there is work
        else:
            req = io.next_request()                  # idle: wait for the next request
            if req is None:
                break
            new = [req] + io.pending()
        joining = []
        for req in new:
            if req.max_new_tokens <= 0:
                io.done(req.id)
                continue
            K, V, tok = model.prefill(req.prompt)
            io.tokens(req.id, [tok])
            if req.max_new_tokens == 1:
                io.done(req.id)
            else:
                joining.append((req.id, K, V, tok, len(req.prompt), req.max_new_tokens - 1))
        batch.extend(joining)
        if not len(batch):
            continue
        nxt = model.step(batch.K, batch.V, batch.tokens, batch.pos)
        for j, rid in enumerate(batch.ids):
            io.tokens(rid, [int(nxt[j])])
            batch.left[j] -= 1
            if batch.left[j] == 0:
                io.done(rid)
        batch.tokens, batch.pos = nxt, batch.pos + 1
        still = np.array(batch.left) > 0
        if not still.all():
            batch.keep(still)


if __name__ == "__main__":
    main()
