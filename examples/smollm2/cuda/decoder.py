"""CUDA decoder for the GPU variant of `smollm2-135m` (challenge `smollm2-135m-gpu`): torch on the GPU.

bfloat16 weights and activations on the GPU (the gate allows 0.5 nats; bf16 passes it, see the README),
a static KV cache with one slot per running request, fused projections, continuous batching with up
to 256 requests per step, and every running request's tokens of a step in one binary-v1 write. On a
host without a GPU it runs on the CPU in float32 (how it is tested there).
"""
import json
import os
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODEL_DIR = Path(os.environ.get("ARENA_MODEL_DIR", "/arena/model"))
SLOTS = int(os.environ.get("CUDA_SLOTS", "256"))    # most requests decoded at once
CTX = int(os.environ.get("CUDA_CTX", "512"))        # longest prompt + new tokens per slot
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32


class Llama(torch.nn.Module):
    """The llama of config.json on `device`, weights and activations in `dtype`."""

    def __init__(self, model_dir, dtype=DTYPE, device=DEVICE, slots=SLOTS, ctx=CTX):
        super().__init__()
        c = json.loads((Path(model_dir) / "config.json").read_text())
        self.c = c
        def w(name):
            return torch.from_numpy(np.load(Path(model_dir) / "weights" / f"{name}.npy")).to(device)
        self.d, self.h, self.kvh, self.hd = c["d_model"], c["n_heads"], c["n_kv_heads"], c["head_dim"]
        self.ffn, self.eps, self.dtype = c["d_ffn"], c["rms_eps"], dtype
        self.n_layers = c["n_layers"]

        def linear(weight):
            lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            lin.weight = torch.nn.Parameter(weight.to(dtype), requires_grad=False)
            return lin
        self.layers = torch.nn.ModuleList()
        for i in range(self.n_layers):
            p = f"blk.{i}."
            block = torch.nn.Module()
            block.qkv = linear(torch.cat([w(p + "attn_q.weight"), w(p + "attn_k.weight"), w(p + "attn_v.weight")]))
            block.o = linear(w(p + "attn_output.weight"))
            block.gate_up = linear(torch.cat([w(p + "ffn_gate.weight"), w(p + "ffn_up.weight")]))
            block.down = linear(w(p + "ffn_down.weight"))
            block.attn_norm, block.ffn_norm = w(p + "attn_norm.weight").to(dtype), w(p + "ffn_norm.weight").to(dtype)
            self.layers.append(block)
        self.embed = w("token_embd.weight")
        self.head = (w("output.weight") if "output.weight" in c["weights"] else self.embed).contiguous()
        self.out_norm = w("output_norm.weight")
        inv_freq = c["rope_base"] ** (-torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd)
        angle = torch.arange(ctx, dtype=torch.float64)[:, None] * inv_freq
        self.cos, self.sin = angle.cos().to(device, dtype), angle.sin().to(device, dtype)   # (ctx, hd/2)
        self.K = torch.zeros(self.n_layers, slots, self.kvh, ctx, self.hd, dtype=dtype, device=device)
        self.V = torch.zeros_like(self.K)

    def norm(self, x, weight):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * weight

    def rope(self, x, pos):
        """Adjacent pairs (llama.cpp NORM): x (B, heads, T, hd), pos (B, T)."""
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]                    # (B, 1, T, hd/2)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)

    def forward(self, tokens, slots, pos):
        """tokens (B, T) at positions pos (B, T) of cache rows `slots` (B,); T > 1 only for prefill of
        one request (B = 1). Returns the next token of each row (B,)."""
        B, T = tokens.shape
        d, h, kvh, hd = self.d, self.h, self.kvh, self.hd
        x = self.embed[tokens].to(self.dtype)
        end = int(pos.max()) + 1
        visible = torch.arange(end, device=pos.device)[None, None, :] <= pos[:, :, None]   # (B, T, end)
        for i, L in enumerate(self.layers):
            a = L.qkv(self.norm(x, L.attn_norm))
            q = self.rope(a[..., :d].view(B, T, h, hd).transpose(1, 2), pos)
            k = self.rope(a[..., d:d + kvh * hd].view(B, T, kvh, hd).transpose(1, 2), pos)
            v = a[..., d + kvh * hd:].view(B, T, kvh, hd).transpose(1, 2)
            self.K[i, slots[:, None], :, pos] = k.transpose(1, 2)
            self.V[i, slots[:, None], :, pos] = v.transpose(1, 2)
            y = torch.nn.functional.scaled_dot_product_attention(
                q, self.K[i, slots, :, :end], self.V[i, slots, :, :end], attn_mask=visible[:, None],
                enable_gqa=True)
            x = x + L.o(y.transpose(1, 2).reshape(B, T, d))
            gu = L.gate_up(self.norm(x, L.ffn_norm))
            x = x + L.down(torch.nn.functional.silu(gu[..., :self.ffn]) * gu[..., self.ffn:])
        last = self.norm(x[:, -1].float(), self.out_norm)
        return (last @ self.head.T).argmax(-1)


def main():
    import arena_protocol
    torch.set_grad_enabled(False)
    model = Llama(MODEL_DIR)
    io = arena_protocol.DecoderIO(framing="binary-v1")
    io.ready()
    free = list(range(SLOTS))[::-1]
    running = {}                      # slot -> [id, next token, position, tokens left]
    waiting = []
    while True:
        waiting += io.pending()
        if not running and not waiting:
            req = io.next_request()   # idle: wait for the next request
            if req is None:
                break
            waiting.append(req)
        while waiting and free:       # join: prefill each new request into a free slot
            req = waiting.pop(0)
            if req.max_new_tokens <= 0:
                io.done(req.id)
                continue
            slot, n = free.pop(), len(req.prompt)
            if n + req.max_new_tokens > CTX:
                raise SystemExit(f"request {req.id}: {n} + {req.max_new_tokens} tokens exceed CUDA_CTX={CTX}")
            tok = int(model(torch.tensor([req.prompt], device=DEVICE), torch.tensor([slot], device=DEVICE),
                            torch.arange(n, device=DEVICE)[None])[0])
            io.tokens(req.id, [tok])
            if req.max_new_tokens == 1:
                io.done(req.id)
                free.append(slot)
            else:
                running[slot] = [req.id, tok, n, req.max_new_tokens - 1]
        if not running:
            continue
        slots = list(running)
        nxt = model(torch.tensor([[running[s][1]] for s in slots], device=DEVICE), torch.tensor(slots, device=DEVICE),
                    torch.tensor([[running[s][2]] for s in slots], device=DEVICE)).tolist()
        out = []
        for s, tok in zip(slots, nxt):
            r = running[s]
            r[1], r[2], r[3] = tok, r[2] + 1, r[3] - 1
            out.append((r[0], [tok], r[3] == 0))
            if r[3] == 0:
                del running[s]
                free.append(s)
        io.emit(out)


if __name__ == "__main__":
    main()
