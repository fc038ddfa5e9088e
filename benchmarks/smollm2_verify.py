#!/usr/bin/env python3
"""The numpy reference of `smollm2-135m` against an independent implementation: HF transformers.

transformers reads the same GGUF with its own converter (it undoes llama.cpp's Q/K permutation and
runs LlamaForCausalLM with rotate-half RoPE) and its own tokenizer conversion. Printed: whether the
tokenizations agree, the largest logit difference over every position of the chat prompts, and
whether greedy continuations agree. ``--write-fixture`` records what transformers computed into
tests/fixtures/smollm2/hf_reference.json, which the tests compare the numpy reference against (CI has
no transformers).

    .venv/bin/pip install transformers accelerate /opt/wheels/torch-2.13.0+cpu-*.whl
    .venv/bin/python benchmarks/smollm2_verify.py [--write-fixture]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from challenges.models.llama_gguf import LlamaGguf  # noqa: E402
from challenges.prompts_chatml import ChatmlPrompts  # noqa: E402
from challenges.spec import load_spec  # noqa: E402

ROOT = REPO / "challenges" / "smollm2-135m"
FIXTURE = REPO / "tests" / "fixtures" / "smollm2" / "hf_reference.json"
TEXTS = ["Hello world!", "The year 2024 had 366 days; 12345 + 678 = 13023.", "  indented\n\ttabs and\r\nnewlines",
         "naïve café — déjà vu, 東京, emoji 🙂", "def f(x):\n    return x**2  # square",
         "<|im_start|>user\nHi<|im_end|>\n", "UPPER lower MiXeD 3.14159 1e-5 0x1F", "don't won't it's we'll I'm"]
#: positions recorded per prompt: the last few (what greedy decoding reads) and the first few
POSITIONS = (0, 1, 2, -3, -2, -1)
#: logits recorded per position: the 16 largest (by transformers) and 48 fixed vocabulary entries
TOP, SPREAD = 16, np.linspace(0, 49151, 48).astype(int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-fixture", action="store_true")
    parser.add_argument("--tokens", type=int, default=24, help="greedy tokens compared")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)

    spec = load_spec(ROOT / "challenge.toml")
    model = LlamaGguf(spec, ROOT)
    gguf = model.gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    hf_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = model.tokenizer()
    texts_ok = [ours.encode(t).ids == hf_tok(t)["input_ids"] for t in TEXTS]
    print(f"tokenizer: {sum(texts_ok)}/{len(texts_ok)} strings tokenized identically")

    prompts = ChatmlPrompts(spec, ROOT, model=model).public()
    worst, records = 0.0, []
    for p in prompts:
        hidden, _ = model.llama.prefill(np.array([p]))
        mine = model.llama.logits(hidden)[0]
        with torch.no_grad():
            theirs = hf(torch.tensor([p])).logits[0].numpy()
        worst = max(worst, float(np.abs(mine - theirs).max()))
        rows = []
        for pos in POSITIONS:
            ids = np.concatenate([np.argsort(-theirs[pos])[:TOP], SPREAD])
            rows.append({"position": pos, "ids": ids.tolist(), "logits": theirs[pos][ids].tolist()})
        records.append({"prompt": p, "rows": rows})
    print(f"logits: largest |numpy - transformers| over {sum(map(len, prompts))} positions of {len(prompts)} "
          f"prompts: {worst:.2e}")
    t = time.perf_counter()
    greedy = model.greedy(prompts[:4], args.tokens)
    with torch.no_grad():
        hf_greedy = [hf.generate(torch.tensor([p]), max_new_tokens=args.tokens, do_sample=False)[0, len(p):].tolist()
                     for p in prompts[:4]]
    print(f"greedy: {sum(a == b for a, b in zip(greedy, hf_greedy))}/4 continuations of {args.tokens} tokens "
          f"identical ({time.perf_counter() - t:.0f} s)")
    if args.write_fixture:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps({
            "provenance": f"recorded from transformers {__import__('transformers').__version__} + torch "
                          f"{torch.__version__} (float32, CPU) reading {gguf.name} by benchmarks/smollm2_verify.py",
            "gguf_sha256": model.pin.sha256,
            "tokenizer": [{"text": t, "ids": hf_tok(t)["input_ids"]} for t in TEXTS],
            "logits": records, "greedy": [{"prompt": p, "tokens": g} for p, g in zip(prompts[:4], hf_greedy)],
        }, separators=(",", ":")) + "\n")
        print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
