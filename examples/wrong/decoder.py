"""A fast but wrong decoder for `efficient-decode`: it skips both transformer blocks.

The next token is read off the embeddings alone, final LayerNorm(token + position embedding) times
the output projection, one table lookup's worth of work. The protocol is spoken perfectly; the tokens
mostly differ from the real model's, so the accuracy gate rejects it. It exists to show that gate.
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


def main():
    config = json.loads((MODEL_DIR / "config.json").read_text())
    with np.load(MODEL_DIR / "weights.npz") as npz:
        w = {name: npz[name].astype(np.float32) for name in npz.files}
    # guess[pos, token]: the "next token" after `token` at position `pos`, for every pair at once.
    x = w["wte"][None, :, :] + w["wpe"][:, None, :]
    mu = x.mean(axis=-1, keepdims=True)
    x = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + config["layer_norm_eps"])
    guess = np.argmax((x * w["lnf_g"] + w["lnf_b"]) @ w["head_w"] + w["head_b"], axis=-1)
    io = arena_protocol.DecoderIO()
    io.ready()
    for req in io.requests():
        tok, pos, out = req.prompt[-1], len(req.prompt) - 1, []
        for _ in range(req.max_new_tokens):
            tok = int(guess[min(pos, config["context"] - 1), tok])
            out.append(tok)
            pos += 1
        io.tokens(req.id, out)
        io.done(req.id)


if __name__ == "__main__":
    main()
