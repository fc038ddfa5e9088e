"""The smollm2-135m examples built into images and evaluated in the sandbox (gVisor, no network, the
challenge's limits), judged by the log-prob gate: the three examples pass, the fast entry with a
dropped layer is rejected. Their speeds are printed by benchmarks/smollm2_rank.py, not asserted here."""
from __future__ import annotations

import pytest

from sandbox.build import remove_image
from smollm2_sandbox import build_example, derive_broken, evaluate, image_tag, judge

# Installing torch into the fast entry's image under the build sandbox takes minutes on a busy host.
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(3600)]
TOKENS = 4


@pytest.fixture(scope="module")
def built():
    tags: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in tags:
            if name == "fast-dropped-layer":
                tags[name] = derive_broken(get("fast"), image_tag(name))
            else:
                tags[name] = build_example(name, image_tag(name))
        return tags[name]
    yield get
    for tag in sorted(tags.values(), key=lambda t: "fast-dropped" not in t):   # the derived image first
        remove_image(tag)


@pytest.mark.parametrize("example", ["baseline", "kv-cache", "fast"])
def test_example_passes_the_gate_in_the_sandbox(example, built, tmp_path):
    outcome = evaluate(built(example), public=2, private=2, max_new_tokens=TOKENS, seed=11, log_dir=tmp_path)
    accuracy, timed = judge(outcome, TOKENS)
    assert accuracy.passed, accuracy.detail
    assert timed.passed, timed.detail
    assert outcome.tokens_per_second and outcome.tokens_per_second > 0
    assert outcome.runtime in ("runsc", "runc")


def test_fast_entry_with_a_dropped_layer_is_rejected(built, tmp_path):
    outcome = evaluate(built("fast-dropped-layer"), public=2, private=2, max_new_tokens=TOKENS, seed=12,
                       log_dir=tmp_path)
    accuracy, _ = judge(outcome, TOKENS)
    assert not accuracy.passed, accuracy.detail
    assert accuracy.accuracy < 0.9
