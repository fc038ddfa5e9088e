"""Private prompts: drawn per evaluation from a secret seed, referenced on the host, never inside the
container; and no prompt is ever sent twice in one evaluation. A submission that replays the public
reference outputs passes public prompts only."""
from __future__ import annotations

import secrets
import shutil

import pytest

from challenges import load_challenge
from sandbox.build import build_image, remove_image
from sandbox.evaluate import Workload, regenerate_prompts
from sandbox.harness import DecoderSession, RequestRecord
from sandbox.workload import prompt_digest, timed_prompt_count
from sandbox_workloads import BATTERY, FIXTURES, SESSION, assert_calibrated_ok, calibrated_workload, default_runtime


@pytest.mark.docker
def test_replaying_the_public_reference_fails_on_the_private_prompts(evaluate, tmp_path):
    challenge = load_challenge("efficient-decode")
    context = tmp_path / "context"
    shutil.copytree(FIXTURES / "hostile" / "replay_public", context)
    for name in ("prompts.json", "reference.json"):
        shutil.copy(challenge.root / name, context / name)
    tag = f"arena-test/replay-public:{SESSION}"
    assert build_image(context, tag, BATTERY).ok
    try:
        workload = Workload.for_challenge(challenge, seed=secrets.randbits(63), repeats=1)
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
    a, b = (Workload.for_challenge(challenge, seed=secrets.randbits(63)).plan() for _ in range(2))
    pa, pb = a.accuracy(), b.accuracy()
    private = lambda p: [q for q, s in zip(p.prompts, p.sets) if s == "private"]
    assert len(private(pa)) == 24 and private(pa) != private(pb)
    assert not set(map(tuple, private(pa))) & set(map(tuple, challenge.public_prompts()))


def test_every_pass_gets_fresh_prompts_never_one_sent_before():
    challenge = load_challenge("efficient-decode")
    workload = Workload.for_challenge(challenge, seed=secrets.randbits(63))
    plan = workload.plan()
    passes = [plan.accuracy()] + [plan.fresh(label, 40) for label in ("warmup-1", "perf-1", "perf-2", "perf-3")]
    every = [tuple(p) for x in passes for p in x.prompts]
    assert len(every) == len(set(every)) == 56 + 4 * 40
    assert not set(every[56:]) & set(map(tuple, challenge.public_prompts()))
    # deterministic in the seed: the same plan again gives the same prompts
    again = workload.plan()
    assert [again.accuracy().prompts] + [again.fresh(l, 40).prompts for l in ("warmup-1", "perf-1", "perf-2", "perf-3")] \
        == [x.prompts for x in passes]
    with pytest.raises(ValueError, match="planned twice"):
        plan.fresh("perf-1", 3)


def test_timed_runs_are_sized_to_what_loadgen_issues():
    workload = Workload.for_challenge(load_challenge("efficient-decode"), seed=1)
    # offline: expected QPS x min_duration (3 s) x LoadGen's 10% margin, at least timed_min_prompts
    assert timed_prompt_count(workload, 100.0, 0) == 331
    assert timed_prompt_count(workload, 1.0, 0) == 24
    assert timed_prompt_count(workload, 1e6, 0) == workload.max_prompts_per_pass
    ss = Workload.for_challenge(load_challenge("efficient-decode"), seed=1, scenario="single-stream")
    assert timed_prompt_count(ss, 0, 10**9) == 64       # early stopping's minimum


def test_a_prompt_sent_twice_is_a_platform_error():
    session = DecoderSession()
    session.ready.set()
    rec = lambda rid: RequestRecord(rid=rid, run="perf-1", index=0, prompt=[1, 2, 3], max_new_tokens=4, sent_ns=0)
    assert session.begin(rec("a")) is True
    assert session.begin(rec("b")) is False
    assert session.error_kind == "platform" and "second time" in session.error
    assert session.sent == [(1, 2, 3)]


def test_the_operator_record_regenerates_the_prompts_exactly():
    challenge = load_challenge("efficient-decode")
    workload = Workload.for_challenge(challenge, seed=secrets.randbits(63))
    plan = workload.plan()
    acc, perf = plan.accuracy(), plan.fresh("perf-1", 30)
    issued = {"accuracy": list(reversed(range(len(acc.prompts)))), "perf-1": [3, 1, 2, 0] + list(range(4, 30))}
    sent = [acc.prompts[i] for i in issued["accuracy"]] + [perf.prompts[i] for i in issued["perf-1"]]
    order = [["accuracy", i] for i in issued["accuracy"]] + [["perf-1", i] for i in issued["perf-1"]]
    record = {"seed": workload.seed, "passes": plan.sizes(), "order": order}
    assert prompt_digest(regenerate_prompts(Workload.for_challenge(challenge, seed=workload.seed), record)) \
        == prompt_digest(sent)
    record["seed"] += 1
    assert prompt_digest(regenerate_prompts(workload, record)) != prompt_digest(sent)


@pytest.mark.docker
def test_an_evaluation_never_sends_a_prompt_twice(calibrated, evaluate):
    ev = evaluate(calibrated, default_runtime(), workload=calibrated_workload(repeats=3))
    assert_calibrated_ok(ev)
    m = ev.result["measurement"]
    runs = {row["run"] for row in ev.requests}
    assert {"accuracy", "warmup-1"} <= runs and len(ev.outcome.runs) == 3
    assert m["prompts_sent"] == len(ev.requests) == len(ev.outcome.sent) == len(set(ev.outcome.sent))
    assert m["prompt_set"] == prompt_digest(ev.outcome.sent)
    scored = {run.label for run in ev.outcome.runs}      # re-measured runs (interference) are not scored
    assert m["audit"] == {"fraction": 1.0, "judged": sum(1 for r in ev.requests if r["run"] in scored),
                          "passed": True}
    assert all(r["correct_tokens"] == r["expected_tokens"] for r in ev.requests if r["run"] in scored)
    assert m["reference_host_s"] is not None and m["framing"] == "json"
