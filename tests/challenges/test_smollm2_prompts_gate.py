"""ChatML prompts (public pool, private prompts from the secret seed) and the log-prob gate."""
from __future__ import annotations

import numpy as np
import pytest

import smollm2_parts as parts
from challenges.interfaces import Judgement
from challenges.prompts_chatml import chatml, generate_messages


def test_the_public_pool_is_the_tokenized_chat_of_its_messages():
    source = parts.prompts()
    assert len(source.public()) == parts.spec().workload.public_prompts
    for message, ids in zip(source.public_messages(), source.public()):
        assert ids == source.encode(message)
        text = parts.model().tokenizer().decode(ids, skip_special_tokens=False)
        assert text == chatml(source.system, message)
        assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_private_prompts_are_deterministic_in_the_seed_distinct_and_never_public():
    source = parts.prompts()
    first = source.private_messages(seed=1234, count=300)
    assert first == source.private_messages(seed=1234, count=300)
    assert len(set(first)) == 300
    assert not set(first) & set(source.public_messages())
    assert source.private_messages(seed=1235, count=300) != first
    assert source.private(seed=1234, count=2) == [source.encode(m) for m in first[:2]]


def test_the_public_seed_on_the_private_stream_gives_other_messages():
    public = set(parts.prompts().public_messages())
    assert not public & set(generate_messages(parts.prompts().public_seed, 50, stream="private:smollm2-135m"))


@pytest.fixture(scope="module")
def case():
    """Two public prompts and the reference's own greedy continuations of 8 tokens."""
    prompts = parts.prompts().public()[:2]
    return prompts, parts.model().greedy(prompts, 8)


def test_the_reference_itself_passes_every_position(case):
    prompts, outputs = case
    judged = parts.gate().judge(parts.model(), prompts, outputs, max_new_tokens=8)
    assert judged == [Judgement(scored=8, passed=8, top1=8)] * 2
    assert parts.gate().verdict(judged).passed


def test_tokens_far_from_the_reference_fail(case):
    prompts, outputs = case
    shifted = [o[1:] + o[:1] for o in outputs]          # every token one position early
    assert not parts.gate().verdict(parts.gate().judge(parts.model(), prompts, shifted, max_new_tokens=8)).passed
    noise = [[int(t) for t in np.random.default_rng(i).integers(17, 49152, 8)] for i in range(2)]
    verdict = parts.gate().verdict(parts.gate().judge(parts.model(), prompts, noise, max_new_tokens=8))
    assert not verdict.passed and verdict.accuracy < 0.2, verdict.detail


def test_a_short_answer_scores_its_missing_positions_as_failed(case):
    prompts, outputs = case
    judged = parts.gate().judge(parts.model(), prompts, [o[:6] for o in outputs], max_new_tokens=8)
    assert judged == [Judgement(scored=8, passed=6, top1=6)] * 2
    assert parts.gate().verdict(judged).accuracy == 0.75


def test_a_token_outside_the_vocabulary_fails_its_position(case):
    prompts, outputs = case
    bad = [outputs[0][:3] + [60000] + outputs[0][4:]]
    [judged] = parts.gate().judge(parts.model(), prompts[:1], bad, max_new_tokens=8)
    assert judged.scored == 8 and judged.passed <= 7


def test_the_verdict_needs_both_the_margin_share_and_the_top1_floor():
    gate = parts.gate()
    assert (gate.threshold, gate.margin_nats, gate.top1_floor) == (0.99, 0.5, 0.90)
    assert gate.verdict([Judgement(100, 100, 91)]).passed
    assert not gate.verdict([Judgement(100, 98, 98)]).passed           # margin share below 99%
    failing_top1 = gate.verdict([Judgement(100, 100, 85)])
    assert not failing_top1.passed and "top-1 agreement 85.00%" in failing_top1.detail
    assert failing_top1.extra["top1_agreement"] == 0.85
    assert gate.verdict([]).accuracy is None and not gate.verdict([]).passed
