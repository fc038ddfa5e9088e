#!/usr/bin/env python3
"""Where to put the `logprob` gate of `smollm2-135m`: correct implementations against broken ones.

Each implementation decodes the same chat prompts greedily (batched, KV cache); the float32 numpy
reference then judges every emitted token teacher-forced on that implementation's own prefix. Printed
per implementation: the share of positions within the margin of the reference's best, the share of
top-1 agreement, the worst single request, whether it would pass the gate, and the greedy prefix it
shares with the reference. Also: host seconds the reference spends per scored token.

    .venv/bin/python benchmarks/smollm2_gate.py [--prompts 16] [--tokens 48] [--only fp32,wrong-rope]

Correct: numpy float32 (the kv-cache example), torch float32 / bfloat16 / float16, torch weight-only
int8 (the fast example). Also measured: torch's dynamic int8 (activations quantized per tensor).
Broken: wrong RoPE (rotate-half pairs on llama.cpp's adjacent-pair weights), a dropped layer (layer 15
contributes nothing), weights re-quantized to 3 bits (asymmetric, blocks of 32) or to symmetric 4 bits
(blocks of 32, no offset). Needs torch (the CPU wheel) and the pinned model (`make models`).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from challenges.gate_logprob import LogprobGate  # noqa: E402
from challenges.models.llama_gguf import LlamaGguf  # noqa: E402
from challenges.prompts_chatml import ChatmlPrompts  # noqa: E402
from challenges.spec import load_spec  # noqa: E402

ROOT = REPO / "challenges" / "smollm2-135m"
MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- broken weights ----------------------------------------------------------------------------

def requantize(w: np.ndarray, bits: int, symmetric: bool, block: int = 32) -> np.ndarray:
    rows = w.reshape(-1, block)
    if symmetric:
        top = 2 ** (bits - 1) - 1
        scale = np.abs(rows).max(axis=1, keepdims=True) / top
        scale[scale == 0] = 1
        q = np.clip(np.round(rows / scale), -top - 1, top)
        return (q * scale).reshape(w.shape).astype(np.float32)
    lo, hi = rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)
    scale = (hi - lo) / (2 ** bits - 1)
    scale[scale == 0] = 1
    return (np.round((rows - lo) / scale) * scale + lo).reshape(w.shape).astype(np.float32)


def rotate_half_rows(w: np.ndarray, head_dim: int) -> np.ndarray:
    """Reorder each head's rows from adjacent pairs to halves: RoPE then rotates the wrong pairs."""
    heads = w.reshape(-1, head_dim // 2, 2, w.shape[1])
    return np.concatenate([heads[:, :, 0], heads[:, :, 1]], axis=1).reshape(w.shape)


def broken_weights(weights: dict[str, np.ndarray], kind: str, head_dim: int, n_layers: int):
    out = dict(weights)
    if kind == "dropped-layer":
        mid = n_layers // 2
        for name in ("attn_output", "ffn_down"):
            out[f"blk.{mid}.{name}.weight"] = np.zeros_like(weights[f"blk.{mid}.{name}.weight"])
    elif kind == "wrong-rope":
        for i in range(n_layers):
            for name in ("attn_q", "attn_k"):
                key = f"blk.{i}.{name}.weight"
                out[key] = rotate_half_rows(weights[key], head_dim)
    elif kind in ("3-bit", "symmetric-4-bit"):
        bits, symmetric = (3, False) if kind == "3-bit" else (4, True)
        for i in range(n_layers):
            for name in MATRICES:
                key = f"blk.{i}.{name}.weight"
                out[key] = requantize(weights[key], bits, symmetric)
    return out


# ---- decoding ----------------------------------------------------------------------------------

def torch_greedy(fast, model_dir, prompts, n, *, quantize=None, dtype="float32", weights=None):
    import torch
    torch.set_num_threads(1)
    source = None if weights is None else (lambda name: torch.tensor(weights[name]))
    model = fast.Llama(model_dir, quantize=quantize, dtype=getattr(torch, dtype), slots=len(prompts),
                       ctx=max(map(len, prompts)) + n, weights=source)
    with torch.inference_mode():
        outs = [[int(model(torch.tensor([p]), torch.tensor([s]), torch.arange(len(p))[None])[0])]
                for s, p in enumerate(prompts)]
        pos = [len(p) for p in prompts]
        for _ in range(n - 1):
            nxt = model(torch.tensor([[o[-1]] for o in outs]), torch.tensor(range(len(prompts))),
                        torch.tensor([[x] for x in pos])).tolist()
            for o, t in zip(outs, nxt):
                o.append(t)
            pos = [x + 1 for x in pos]
    return outs


def numpy_greedy(kv, model_dir, prompts, n):
    model = kv.Model(model_dir)
    ctx = max(map(len, prompts)) + n
    rows = [model.prefill(p, ctx) for p in prompts]
    K, V = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
    outs = [[r[2]] for r in rows]
    pos = np.array([len(p) for p in prompts])
    with np.errstate(over="ignore"):
        for _ in range(n - 1):
            nxt = model.step(K, V, np.array([o[-1] for o in outs]), pos)
            for o, t in zip(outs, nxt):
                o.append(int(t))
            pos = pos + 1
    return outs


def shared_prefix(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=20240601, help="private prompts from this seed")
    parser.add_argument("--only", default="", help="comma-separated implementation names")
    args = parser.parse_args()

    spec = load_spec(ROOT / "challenge.toml")
    model = LlamaGguf(spec, ROOT)
    model_dir = model.materialize(model.models_dir)
    source = ChatmlPrompts(spec, ROOT, model=model)
    prompts = (source.public() + source.private(args.seed, args.prompts))[:args.prompts]
    gate = LogprobGate(spec, ROOT)
    fast = load_module(REPO / "examples/smollm2/fast/decoder.py", "fast_decoder")
    kv = load_module(REPO / "examples/smollm2/kv-cache/decoder.py", "kv_decoder")
    weights, cfg = model.llama.w, model.config

    t = time.perf_counter()
    reference = model.greedy(prompts, args.tokens)
    greedy_s = time.perf_counter() - t
    impls = {
        "numpy fp32 (kv-cache)": lambda: numpy_greedy(kv, model_dir, prompts, args.tokens),
        "torch fp32": lambda: torch_greedy(fast, model_dir, prompts, args.tokens),
        "torch bf16": lambda: torch_greedy(fast, model_dir, prompts, args.tokens, dtype="bfloat16"),
        "torch fp16": lambda: torch_greedy(fast, model_dir, prompts, args.tokens, dtype="float16"),
        "torch int8 weights": lambda: torch_greedy(fast, model_dir, prompts, args.tokens, quantize="int8"),
        "torch int8 dynamic": lambda: torch_greedy(fast, model_dir, prompts, args.tokens, quantize="int8-dynamic"),
    }
    for kind in ("wrong-rope", "dropped-layer", "3-bit", "symmetric-4-bit"):
        impls[f"BROKEN {kind}"] = (lambda k=kind: torch_greedy(
            fast, model_dir, prompts, args.tokens, weights=broken_weights(weights, k, cfg.head_dim, cfg.n_layers)))
    only = [s for s in args.only.split(",") if s]
    print(f"{len(prompts)} prompts x {args.tokens} tokens; gate: {gate.threshold:.0%} within {gate.margin_nats} "
          f"nats, top-1 floor {gate.top1_floor:.0%}; reference greedy {greedy_s:.1f} s")
    print(f"{'implementation':28} {'within margin':>13} {'top-1':>7} {'worst request':>13} {'gate':>5} "
          f"{'greedy prefix':>13} {'judge s/token':>13}")
    for name, run in impls.items():
        if only and not any(o in name for o in only):
            continue
        outs = run()
        t = time.perf_counter()
        judged = gate.judge(model, prompts, outs, max_new_tokens=args.tokens)
        judge_s = time.perf_counter() - t
        verdict = gate.verdict(judged)
        worst = min(j.passed / j.scored for j in judged)
        prefix = np.mean([shared_prefix(o, r) / args.tokens for o, r in zip(outs, reference)])
        print(f"{name:28} {verdict.accuracy:13.2%} {verdict.extra['top1_agreement']:7.2%} {worst:13.2%} "
              f"{'pass' if verdict.passed else 'FAIL':>5} {prefix:13.1%} {judge_s / verdict.extra['scored']:13.4f}",
              flush=True)


if __name__ == "__main__":
    main()
