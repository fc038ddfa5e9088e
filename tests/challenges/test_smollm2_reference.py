"""The numpy reference of smollm2-135m: equal to an independent implementation, and consistent with
itself whether it decodes greedily in batches or scores teacher-forced."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import smollm2_parts as parts

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2" / "hf_reference.json"


@pytest.fixture(scope="module")
def hf():
    """Recorded from HF transformers + torch (float32) by benchmarks/smollm2_verify.py."""
    return json.loads(FIXTURE.read_text())


def test_the_architecture_read_from_the_gguf():
    cfg = parts.model().config
    assert (cfg.n_layers, cfg.d_model, cfg.d_ffn, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == \
        (30, 576, 1536, 9, 3, 49152)
    assert cfg.rope_base == 1e5 and cfg.head_dim == 64
    assert "output.weight" not in parts.model().llama.w       # tied: the embedding is the output projection
    assert parts.model().eos_id == 2


def test_logits_agree_with_transformers_to_1e_4(hf):
    assert hf["gguf_sha256"] == parts.model().pin.sha256
    llama = parts.model().llama
    worst = 0.0
    for record in hf["logits"][:3]:          # all 8 prompts: benchmarks/smollm2_verify.py
        hidden, _ = llama.prefill(np.array([record["prompt"]]))
        logits = llama.logits(hidden)[0]
        for row in record["rows"]:
            mine = logits[row["position"], row["ids"]]
            worst = max(worst, float(np.abs(mine - np.array(row["logits"])).max()))
    assert worst < 1.5e-4, worst


def test_greedy_agrees_with_transformers(hf):
    for record in hf["greedy"][:2]:
        assert parts.model().greedy([record["prompt"]], 12)[0] == record["tokens"][:12]


def test_the_tokenizer_agrees_with_transformers(hf):
    tok = parts.model().tokenizer()
    for case in hf["tokenizer"]:
        assert tok.encode(case["text"]).ids == case["ids"], case["text"]
    assert tok.decode(tok.encode("The year 2024 had 366 days.").ids) == "The year 2024 had 366 days."
    assert tok.encode("12345").ids == [tok.token_to_id(d) for d in "12345"]     # digits one by one


def test_batched_greedy_equals_one_prompt_at_a_time():
    prompts = parts.prompts().public()[:3]
    batched = parts.model().greedy(prompts, 6)
    assert batched == [parts.model().greedy([p], 6)[0] for p in prompts]


def test_teacher_forcing_sees_every_greedy_token_as_the_best():
    prompts = parts.prompts().public()[:3]
    outputs = parts.model().greedy(prompts, 6)
    for scores, out in zip(parts.model().teacher_forced(prompts, outputs), outputs):
        assert list(scores.argmax) == out
        assert scores.logprobs == scores.best_logprobs
        assert all(lp <= 0 for lp in scores.logprobs)


def test_teacher_forcing_scores_a_token_outside_the_vocabulary_impossible():
    p = parts.prompts().public()[0]
    scores = parts.model().teacher_forced([p, p], [[49152, 5], []])
    assert scores[0].logprobs[0] == float("-inf") and len(scores[0].logprobs) == 2
    assert scores[1].logprobs == ()


def test_the_materialized_model_directory_is_what_the_container_reads():
    d = parts.model_dir()
    config = json.loads((d / "config.json").read_text())
    assert config["gguf"]["sha256"] == parts.model().pin.sha256
    assert (d / "model.gguf").stat().st_size == parts.model().pin.size
    assert set(config["weights"]) == set(parts.model().llama.w)
    q = np.load(d / "weights" / "blk.7.attn_q.weight.npy", mmap_mode="r")
    assert q.dtype == np.float32 and np.array_equal(q, parts.model().llama.w["blk.7.attn_q.weight"])
    assert (d / "tokenizer.json").is_file()
    assert all(p.stat().st_mode & 0o004 for p in d.rglob("*"))   # readable by the container's user
    assert parts.model().materialize(d.parent) == d               # written once
