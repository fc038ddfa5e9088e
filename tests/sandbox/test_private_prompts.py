"""Private prompts: drawn per evaluation from a secret seed, referenced on the host, never inside the
container. A submission that replays the public reference outputs passes public prompts only."""
from __future__ import annotations

import shutil
import secrets

from challenges import load_challenge
from sandbox.build import build_image, remove_image
from sandbox.evaluate import Workload
from sandbox_workloads import BATTERY, FIXTURES, SESSION, default_runtime


def test_replaying_the_public_reference_fails_on_the_private_prompts(evaluate, tmp_path):
    challenge = load_challenge("efficient-decode")
    context = tmp_path / "context"
    shutil.copytree(FIXTURES / "hostile" / "replay_public", context)
    for name in ("prompts.json", "reference.json"):
        shutil.copy(challenge.root / name, context / name)
    tag = f"arena-test/replay-public:{SESSION}"
    assert build_image(context, tag, BATTERY).ok
    try:
        workload = Workload.for_challenge(challenge, private_seed=secrets.randbits(63), repeats=1)
        ev = evaluate(tag, default_runtime(), workload=workload, model_dir=challenge.model_dir(tmp_path / "models"))
    finally:
        remove_image(tag)
    result = ev.result
    assert (result["status"], result["reason"]) == ("rejected", "accuracy")
    assert result["measurement"]["accuracy_public"] == 1.0
    assert result["measurement"]["accuracy_private"] < 0.1
    assert "private" in result["measurement"]["detail"]


def test_each_evaluation_draws_different_private_prompts():
    challenge = load_challenge("efficient-decode")
    a, b = (Workload.for_challenge(challenge, private_seed=secrets.randbits(63)) for _ in range(2))
    private = lambda w: [c.prompt for c in w.cases if c.set == "private"]
    assert private(a) != private(b)
    assert not set(map(tuple, private(a))) & set(map(tuple, challenge.public_prompts()))
    assert all(c.reference == challenge.reference([c.prompt])[0] for c in a.cases[-2:])
