"""Read a llama GGUF file: its architecture, its float32 weights and its tokenizer.

The ``gguf`` package (llama.cpp's own reader) parses the file and dequantizes every tensor to
float32, so the reference computes with exactly the values llama.cpp's kernels start from. The
tokenizer is rebuilt with the ``tokenizers`` package from the vocabulary and merges stored in the
file: byte-level BPE, digits split one by one, the control tokens matched whole (the pre-tokenizer
llama.cpp calls "smollm" and Hugging Face's tokenizer.json describes the same way).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from challenges.models.llama_numpy import LlamaConfig

#: GGUF token types (llama.cpp's llama_token_type): the ones matched whole, never split by BPE
CONTROL_TOKEN_TYPES = (3, 4)   # CONTROL, USER_DEFINED


@dataclass(frozen=True)
class GgufTokenizerData:
    tokens: tuple[str, ...]
    merges: tuple[str, ...]
    token_types: tuple[int, ...]
    pre: str
    bos_id: int | None
    eos_id: int | None
    chat_template: str | None


def _reader(path: Path):
    import gguf
    return gguf.GGUFReader(str(path))


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_config(path: Path, reader=None) -> LlamaConfig:
    r = reader or _reader(path)
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture {arch!r}, only 'llama' is supported")
    tokens = r.fields["tokenizer.ggml.tokens"]
    return LlamaConfig(
        n_layers=int(_field(r, "llama.block_count")), d_model=int(_field(r, "llama.embedding_length")),
        d_ffn=int(_field(r, "llama.feed_forward_length")), n_heads=int(_field(r, "llama.attention.head_count")),
        n_kv_heads=int(_field(r, "llama.attention.head_count_kv")),
        vocab_size=int(_field(r, "llama.vocab_size", len(tokens.data))),
        rope_base=float(_field(r, "llama.rope.freq_base", 10000.0)),
        rms_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon")),
        context=int(_field(r, "llama.context_length")))


def read_weights(path: Path, reader=None) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32, in numpy's (out, in) order, keyed by its GGUF name."""
    import gguf
    r = reader or _reader(path)
    return {t.name: np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            for t in r.tensors}


def read_tokenizer_data(path: Path, reader=None) -> GgufTokenizerData:
    r = reader or _reader(path)
    model = _field(r, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{path}: tokenizer model {model!r}, only byte-level BPE ('gpt2') is supported")
    return GgufTokenizerData(
        tokens=tuple(_field(r, "tokenizer.ggml.tokens")), merges=tuple(_field(r, "tokenizer.ggml.merges")),
        token_types=tuple(int(t) for t in _field(r, "tokenizer.ggml.token_type")),
        pre=_field(r, "tokenizer.ggml.pre", "default"),
        bos_id=_field(r, "tokenizer.ggml.bos_token_id"), eos_id=_field(r, "tokenizer.ggml.eos_token_id"),
        chat_template=_field(r, "tokenizer.chat_template"))


def build_tokenizer(data: GgufTokenizerData):
    """A ``tokenizers.Tokenizer`` equal to the file's own (llama.cpp's) tokenization."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    if data.pre not in ("smollm", "starcoder", "refact", "default", "gpt-2"):
        raise ValueError(f"pre-tokenizer {data.pre!r} is not supported")
    vocab = {tok: i for i, tok in enumerate(data.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in data.merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if data.pre in ("smollm", "starcoder", "refact"):   # llama.cpp: \p{N} split one digit at a time first
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(data.tokens[i], special=True, normalized=False)
                            for i, t in enumerate(data.token_types) if t in CONTROL_TOKEN_TYPES])
    return tok
