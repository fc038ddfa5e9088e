"""The reference challenge: its model is deterministic, its stored files are current, its outputs
are robust to float32 reordering and cannot be guessed without running the model."""
from __future__ import annotations

import json
import stat
from collections import Counter

import numpy as np
import pytest

from challenges import Challenge, challenge_names, load_challenge, tiny_model
from challenges.generate_reference import prompts_document, reference_document

SECRET_SEED = 20240611  # stands in for an evaluation's secret seed


@pytest.fixture(scope="module")
def challenge() -> Challenge:
    return load_challenge("efficient-decode")


@pytest.fixture(scope="module")
def private_set(challenge) -> tuple[list[list[int]], list[list[int]]]:
    prompts = challenge.private_prompts(SECRET_SEED)
    return prompts, challenge.reference(prompts)


def test_registry_lists_and_loads_the_reference_challenge(challenge):
    assert "efficient-decode" in challenge_names()
    assert challenge.name == "efficient-decode"
    assert challenge.max_new_tokens == 64
    assert challenge.accuracy_threshold == 0.99
    assert challenge.allowed_base_images == ("arena/python-cpu:1", "arena/torch-cuda:1")
    assert challenge.spec.performance.scenario == "offline"
    assert challenge.spec.performance.repeats == 3
    assert (challenge.spec.model.kind, challenge.spec.prompts.kind, challenge.spec.gate.kind) == \
        ("tiny", "english-bytes", "exact")


def test_unknown_challenge_names_the_known_ones():
    with pytest.raises(KeyError, match="efficient-decode"):
        load_challenge("no-such-challenge")


def test_weights_are_a_deterministic_float32_function_of_the_seed(challenge):
    cfg = challenge.model_config
    a, b = tiny_model.make_weights(cfg.seed, cfg), tiny_model.make_weights(cfg.seed, cfg)
    assert {k: list(v.shape) for k, v in a.items()} == tiny_model.weight_layout(cfg)
    assert all(v.dtype == np.float32 for v in a.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = tiny_model.make_weights(cfg.seed + 1, cfg)
    assert not np.array_equal(a["wte"], other["wte"])


def test_weights_survive_a_save_load_round_trip(tmp_path, challenge):
    weights = challenge.weights()
    tiny_model.save_weights(weights, tmp_path / "w.npz")
    loaded = tiny_model.load_weights(tmp_path / "w.npz")
    assert loaded.keys() == weights.keys()
    assert all(np.array_equal(loaded[k], weights[k]) for k in weights)


def test_model_dir_is_written_once_readable_by_any_user(tmp_path, challenge):
    model_dir = challenge.model_dir(tmp_path)
    assert model_dir == tmp_path / "efficient-decode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["efficient-decode"]  # no temp dir left over
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["vocab_size"], config["d_model"], config["n_layers"], config["n_heads"], config["context"]) \
        == (256, 64, 2, 4, 128)
    assert config["weights"]["wte"] == [256, 64]
    weights = tiny_model.load_weights(model_dir / "weights.npz")
    assert all(np.array_equal(weights[k], v) for k, v in challenge.weights().items())
    for path in (model_dir, model_dir / "weights.npz", model_dir / "config.json"):
        assert path.stat().st_mode & stat.S_IROTH  # the container's user is not the host's
    mtime = (model_dir / "weights.npz").stat().st_mtime_ns
    assert challenge.model_dir(tmp_path) == model_dir
    assert (model_dir / "weights.npz").stat().st_mtime_ns == mtime


def test_model_dir_replaces_a_stale_copy(tmp_path, challenge):
    stale = tmp_path / "efficient-decode"
    stale.mkdir()
    (stale / "config.json").write_text('{"seed": -1}')
    challenge.model_dir(tmp_path)
    assert json.loads((stale / "config.json").read_text())["seed"] == challenge.model_config.seed
    assert (stale / "weights.npz").is_file()


def test_stored_prompts_and_reference_equal_a_fresh_computation(challenge):
    assert (challenge.root / "prompts.json").read_text() == prompts_document(challenge)
    assert (challenge.root / "reference.json").read_text() \
        == reference_document(challenge, challenge.public_prompts())


def test_public_prompts_follow_the_workload(challenge):
    w, source = challenge.spec.workload, challenge.prompts
    prompts = challenge.public_prompts()
    assert len(prompts) == w.public_prompts == len(challenge.public_reference())
    assert all(source.min_len <= len(p) <= source.max_len for p in prompts)
    text = b" ".join(bytes(p) for p in prompts).decode("ascii")
    assert text.count(" ") > len(text) / 10 and any(c.isupper() for c in text)  # English-like
    assert all(len(r) == challenge.max_new_tokens for r in challenge.public_reference())


def test_private_prompts_are_deterministic_per_secret_seed_and_unlike_public(challenge):
    w, source = challenge.spec.workload, challenge.prompts
    prompts = challenge.private_prompts(SECRET_SEED)
    assert prompts == challenge.private_prompts(SECRET_SEED)
    assert prompts != challenge.private_prompts(SECRET_SEED + 1)
    assert len(prompts) == w.private_prompts
    assert all(source.min_len <= len(p) <= source.max_len for p in prompts)
    assert not set(map(tuple, prompts)) & set(map(tuple, challenge.public_prompts()))
    many = challenge.private_prompts(SECRET_SEED, 500)
    assert len(set(map(tuple, many))) == 500   # distinct, however many are drawn


def test_batched_reference_equals_the_plain_one_token_for_token(challenge):
    prompts = challenge.private_prompts(SECRET_SEED, 40)
    plain = [tiny_model.reference_generate(challenge.weights(), p, challenge.max_new_tokens, challenge.model_config)
             for p in prompts[:12]]
    assert challenge.reference(prompts)[:12] == plain
    assert challenge.reference(challenge.public_prompts()) == challenge.public_reference()


def test_reference_refuses_to_overrun_the_context(challenge):
    with pytest.raises(AssertionError, match="context"):
        tiny_model.reference_generate(challenge.weights(), [65] * 100, 29, challenge.model_config)


def _agreement(guesses: list[list[int]], outputs: list[list[int]]) -> float:
    return sum(g == t for gs, ts in zip(guesses, outputs) for g, t in zip(gs, ts)) / sum(map(len, outputs))


@pytest.mark.parametrize("which", ["public", "private"])
def test_outputs_cannot_be_guessed_without_running_the_model(challenge, private_set, which):
    prompts, outputs = ((challenge.public_prompts(), challenge.public_reference()) if which == "public"
                        else private_set)
    n = challenge.max_new_tokens
    most_common_token = Counter(t for out in outputs for t in out).most_common(1)[0][0]
    guesses = {
        "one fixed token (the best one, chosen with hindsight)": [[most_common_token] * n for _ in prompts],
        "the prompt's last token, repeated": [[p[-1]] * n for p in prompts],
        "the prompt echoed": [(p * n)[:n] for p in prompts],
        "the prompt's most frequent byte": [[Counter(p).most_common(1)[0][0]] * n for p in prompts],
    }
    for name, guess in guesses.items():
        assert _agreement(guess, outputs) < 0.10, name
    # No continuation settles into a short loop: the last 32 tokens are never periodic with period <= 8.
    for out in outputs:
        tail = out[-32:]
        assert not any(tail[:-p] == tail[p:] for p in range(1, 9)), bytes(out)
    assert np.mean([len(set(out)) for out in outputs]) > n / 3


def test_a_position_by_position_guess_learned_on_public_fails_on_private(challenge, private_set):
    public = challenge.public_reference()
    by_position = [Counter(out[i] for out in public).most_common(1)[0][0] for i in range(challenge.max_new_tokens)]
    prompts, outputs = private_set
    assert _agreement([by_position] * len(prompts), outputs) < 0.10
    # and a bigram table learned on public (last token -> most frequent next) is far below the gate
    table: dict[int, Counter] = {}
    for p, out in zip(challenge.public_prompts(), public):
        seq = p + out
        for a, b in zip(seq[len(p) - 1:], seq[len(p):]):
            table.setdefault(a, Counter())[b] += 1
    hits = sum(t in table and table[t].most_common(1)[0][0] == nxt
               for p, out in zip(prompts, outputs) for t, nxt in zip([p[-1]] + out[:-1], out))
    assert hits / sum(map(len, outputs)) < 0.5


def test_greedy_choice_is_robust_to_float32_reordering(challenge):
    """Teacher-forced logits of whole sequences (other matmul shapes than step-by-step decoding) pick
    the same tokens; the top-2 gap is wide; float64 arithmetic picks the same tokens."""
    weights, cfg = challenge.weights(), challenge.model_config
    weights64 = {k: v.astype(np.float64) for k, v in weights.items()}
    gaps, same32, same64, total = [], 0, 0, 0
    for prompt, out in zip(challenge.public_prompts(), challenge.public_reference()):
        seq, start = prompt + out[:-1], len(prompt) - 1
        logits = tiny_model.forward(weights, seq, cfg)[start:]
        top2 = np.sort(logits, axis=-1)[:, -2:]
        gaps.extend(top2[:, 1] - top2[:, 0])
        same32 += int((logits.argmax(axis=-1) == out).sum())
        same64 += int((tiny_model.forward(weights64, seq, cfg)[start:].argmax(axis=-1) == out).sum())
        total += len(out)
    gaps = np.asarray(gaps)
    assert same32 / total >= 0.999 and same64 / total >= 0.999
    assert np.median(gaps) > 1.0
    assert (gaps < 1e-3).mean() <= 0.001  # float32 reordering moves logits by ~1e-5
