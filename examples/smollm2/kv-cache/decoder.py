"""KV-cache decoder for `smollm2-135m`: numpy float32 on one core, continuous batching.

* KV cache: each token's keys and values are computed once and kept, so a new token costs one
  position through the 30 layers instead of the whole sequence.
* Continuous batching: every request that has arrived joins the running batch at the next step, and
  one step advances all of them by one token, so numpy multiplies (batch, 576) matrices: the weights
  (~540 MB of float32) are read once per step for the whole batch instead of once per request.
A new request is prefilled on its own (its whole prompt in one pass) and gets its first token then.
Only numpy and the platform's `arena_protocol` module are needed; the weights are the float32
arrays in /arena/model/weights (numpy (out, in) layout, GGUF tensor names).
"""
import json
import os
from pathlib import Path

# Set before numpy loads: one core, and BLAS threads would only fight over it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

MODEL_DIR = Path(os.environ.get("ARENA_MODEL_DIR", "/arena/model"))
CTX_STEP = 128          # the batch's cache grows in steps of this many positions


def load(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())

    def w(name):
        return np.load(model_dir / "weights" / f"{name}.npy")
    layers = []
    for i in range(cfg["n_layers"]):
        p = f"blk.{i}."
        layers.append({
            "attn_norm": w(p + "attn_norm.weight"), "ffn_norm": w(p + "ffn_norm.weight"),
            # fused and transposed once: x @ W with W (in, out) contiguous
            "qkv": np.ascontiguousarray(np.concatenate(
                [w(p + "attn_q.weight"), w(p + "attn_k.weight"), w(p + "attn_v.weight")]).T),
            "o": np.ascontiguousarray(w(p + "attn_output.weight").T),
            "gate_up": np.ascontiguousarray(np.concatenate([w(p + "ffn_gate.weight"), w(p + "ffn_up.weight")]).T),
            "down": np.ascontiguousarray(w(p + "ffn_down.weight").T),
        })
    embed = w("token_embd.weight")
    names = cfg["weights"]
    head = np.ascontiguousarray((w("output.weight") if "output.weight" in names else embed).T)
    return cfg, layers, embed, w("output_norm.weight"), head


def rms_norm(x, weight, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.float32(eps)) * weight


class Model:
    def __init__(self, model_dir):
        self.cfg, self.layers, self.embed, self.norm, self.head = load(model_dir)
        c = self.cfg
        self.d, self.h, self.kvh, self.hd = c["d_model"], c["n_heads"], c["n_kv_heads"], c["head_dim"]
        self.rep, self.eps, self.ffn = self.h // self.kvh, c["rms_eps"], c["d_ffn"]
        self.inv_freq = c["rope_base"] ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        self.scale = np.float32(1 / np.sqrt(self.hd))

    def rope(self, x, pos):
        """Rotate adjacent pairs (llama.cpp NORM): x (..., n, hd) with pos broadcasting to (..., n)."""
        ang = pos[..., None] * self.inv_freq
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def _ffn(self, x, L):
        a = rms_norm(x, L["ffn_norm"], self.eps)
        gu = a @ L["gate_up"]
        g, u = gu[..., :self.ffn], gu[..., self.ffn:]
        with np.errstate(over="ignore"):
            return x + (g / (np.float32(1) + np.exp(-g)) * u) @ L["down"]

    def next_token(self, x):
        return np.argmax(rms_norm(x, self.norm, self.eps) @ self.head, axis=-1)

    def prefill(self, tokens, ctx):
        """A whole prompt at once; returns its caches (layers, kv heads, ctx, hd) and the first token."""
        n, d, hd, kvh = len(tokens), self.d, self.hd, self.kvh
        K = np.zeros((len(self.layers), kvh, ctx, hd), np.float32)
        V = np.zeros_like(K)
        x = self.embed[np.asarray(tokens)]
        pos = np.arange(n, dtype=np.float64)
        future = np.triu(np.ones((n, n), dtype=bool), k=1)
        for i, L in enumerate(self.layers):
            a = rms_norm(x, L["attn_norm"], self.eps) @ L["qkv"]
            q = self.rope(a[:, :d].reshape(n, self.h, hd).transpose(1, 0, 2), pos)          # (h, n, hd)
            k = self.rope(a[:, d:d + kvh * hd].reshape(n, kvh, hd).transpose(1, 0, 2), pos)  # (kvh, n, hd)
            v = a[:, d + kvh * hd:].reshape(n, kvh, hd).transpose(1, 0, 2)
            K[i, :, :n], V[i, :, :n] = k, v
            s = q.reshape(kvh, self.rep * n, hd) @ k.transpose(0, 2, 1) * self.scale       # (kvh, rep*n, n)
            s = np.where(np.tile(future, (self.rep, 1)), np.float32(-np.inf), s)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            y = (s / s.sum(axis=-1, keepdims=True)) @ v                                     # (kvh, rep*n, hd)
            x = x + y.reshape(self.h, n, hd).transpose(1, 0, 2).reshape(n, d) @ L["o"]
            x = self._ffn(x, L)
        return K, V, int(self.next_token(x[-1]))

    def step(self, K, V, tokens, pos):
        """One token for each row: tokens (B,) at positions pos (B,); writes K, V (B, layers, kvh, ctx, hd)."""
        B, d, hd, kvh = len(tokens), self.d, self.hd, self.kvh
        rows, T = np.arange(B), int(pos.max()) + 1
        hidden = np.arange(T)[None, None, None, :] > pos[:, None, None, None]              # (B, 1, 1, T)
        x = self.embed[tokens]
        p = pos.astype(np.float64)[:, None]
        for i, L in enumerate(self.layers):
            a = rms_norm(x, L["attn_norm"], self.eps) @ L["qkv"]
            q = self.rope(a[:, :d].reshape(B, self.h, hd), p)
            K[rows, i, :, pos] = self.rope(a[:, d:d + kvh * hd].reshape(B, kvh, hd), p)
            V[rows, i, :, pos] = a[:, d + kvh * hd:].reshape(B, kvh, hd)
            s = q.reshape(B, kvh, self.rep, hd) @ K[:, i, :, :T].transpose(0, 1, 3, 2) * self.scale
            s = np.where(hidden, np.float32(-np.inf), s)                                    # (B, kvh, rep, T)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            y = (s / s.sum(axis=-1, keepdims=True)) @ V[:, i, :, :T]                        # (B, kvh, rep, hd)
            x = x + y.reshape(B, d) @ L["o"]
            x = self._ffn(x, L)
        return self.next_token(x)


class Batch:
    """The running requests, one row each, kept compact (finished rows are dropped)."""

    def __init__(self, model):
        self.shape = (len(model.layers), model.kvh, 0, model.hd)
        self.K = self.V = np.zeros((0, *self.shape), np.float32)
        self.ids, self.left = [], []
        self.tokens, self.pos = np.zeros(0, np.int64), np.zeros(0, np.int64)

    def __len__(self):
        return len(self.ids)

    @property
    def ctx(self):
        return self.K.shape[3]

    def grow(self, ctx):
        """Room for `ctx` positions per row (a new request may need more than the running ones)."""
        if ctx > self.ctx:
            pad = ((0, 0), (0, 0), (0, 0), (0, ctx - self.ctx), (0, 0))
            self.K, self.V = np.pad(self.K, pad), np.pad(self.V, pad)

    def extend(self, joining):
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
    import arena_protocol
    model = Model(MODEL_DIR)
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
        need = max([len(r.prompt) + r.max_new_tokens for r in new], default=0)
        batch.grow(-(-need // CTX_STEP) * CTX_STEP)
        joining = []
        for req in new:
            if req.max_new_tokens <= 0:
                io.done(req.id)
                continue
            K, V, tok = model.prefill(req.prompt, batch.ctx)
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
