"""Decoders that answer from memory, run in the real sandbox beside the honest decoder they wrap, on
the real challenge's workload (reduced in time): each ends rejected, or did all the work (its memory
never hit) and so can be no faster than the honest one. Structural facts are asserted (what the
decoder reports on stderr, what the harness sent); the tokens/s of both are printed, not asserted."""
from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest

from challenges import load_challenge
from sandbox.build import build_image, remove_image
from sandbox.evaluate import Workload
from sandbox_workloads import BATTERY, FIXTURES, SESSION, default_runtime

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
CHEATERS = FIXTURES / "cheaters"
# the fixtures report on every request up to 1,000 (~70 bytes each): room for all of them in the run log
SETTINGS = BATTERY.with_(run_timeout_s=300, memory_bytes=512 << 20, stderr_cap_bytes=1 << 20)


@pytest.fixture(scope="module")
def challenge():
    return load_challenge("efficient-decode")


@pytest.fixture(scope="module")
def model_dir(challenge, tmp_path_factory):
    return challenge.model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def cheater(tmp_path_factory):
    """`cheater(name)`: tests/fixtures/cheaters/<name> built with honest.py and the kv-cache model."""
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            context = tmp_path_factory.mktemp(name) / "context"
            shutil.copytree(CHEATERS / name, context)
            shutil.copy(CHEATERS / "honest.py", context / "honest.py")
            shutil.copy(ROOT / "examples/kv-cache/decoder.py", context / "kvcache.py")
            tag = f"arena-test/cheater-{name.replace('_', '-')}:{SESSION}"
            log: list[str] = []
            result = build_image(context, tag, SETTINGS, log.append)
            assert result.ok, f"building {name}: {result.error}\n" + "\n".join(log[-20:])
            built[name] = tag
        return built[name]
    yield get
    for tag in built.values():
        remove_image(tag)


def stats(evaluation) -> dict:
    assert "[arena] stderr truncated" not in evaluation.stderr, "the run log cut the decoder's reports short"
    for line in reversed(evaluation.stderr.splitlines()):   # the last report counts
        if line.startswith("ARENA-PROBE "):
            return json.loads(line[len("ARENA-PROBE "):])
    raise AssertionError(f"the decoder reported nothing; stderr: {evaluation.stderr[-2000:]!r}")


def run_both(name, cheater, evaluate, challenge, model_dir):
    """The honest decoder and the cheater, one after the other on the same engine and workload shape."""
    out = {}
    for which in ("honest", name):
        workload = Workload.for_challenge(challenge, seed=secrets.randbits(63), repeats=2, min_duration_ms=1500,
                                          cooldown_s=0.5)
        ev = evaluate(cheater(which), default_runtime(), workload=workload, settings=SETTINGS, model_dir=model_dir)
        out[which] = ev
        m = ev.result["measurement"]
        print(f"\n{which}: {ev.result['status']}/{ev.result['reason']} tokens/s "
              f"{ev.result['metrics']['tokens_per_second']} runs {m['tokens_per_second_runs']} "
              f"prompts_sent {m['prompts_sent']} reference_host_s {m['reference_host_s']} stats {stats(ev)}")
    honest = out["honest"]
    assert honest.result["status"] == "success", honest.result["measurement"]["detail"]
    assert stats(honest)["hits"] == 0
    return honest, out[name]


def assert_never_asked_twice(ev):
    m = ev.result["measurement"]
    assert m["prompts_sent"] == len(ev.outcome.sent) == len(set(ev.outcome.sent)) == len(ev.requests)


def test_a_memoizing_decoder_never_hits_its_memory(cheater, evaluate, challenge, model_dir):
    honest, cheat = run_both("memoize", cheater, evaluate, challenge, model_dir)
    assert cheat.result["status"] == "success", cheat.result["measurement"]["detail"]
    s = stats(cheat)
    assert s["hits"] == 0 and s["requests"] == cheat.result["measurement"]["prompts_sent"], s
    assert_never_asked_twice(cheat)


def test_answers_from_an_earlier_repeat_never_happen(cheater, evaluate, challenge, model_dir):
    honest, cheat = run_both("earlier_repeat", cheater, evaluate, challenge, model_dir)
    assert cheat.result["status"] == "success", cheat.result["measurement"]["detail"]
    s = stats(cheat)
    assert s["runs"] >= 3, s          # it did tell the passes apart (accuracy, warm-up, 2 repeats)
    assert s["hits"] == 0, s          # and still never saw a prompt again
    assert {r["run"] for r in cheat.requests} >= {"accuracy", "warmup-1"} and len(cheat.outcome.runs) == 2
    assert_never_asked_twice(cheat)


def test_work_only_during_the_accuracy_pass_is_rejected(cheater, evaluate, challenge, model_dir):
    honest, cheat = run_both("accuracy_only", cheater, evaluate, challenge, model_dir)
    s = stats(cheat)
    assert s["hits"] == 0 and s["garbage"] > 0, s
    result = cheat.result
    assert (result["status"], result["reason"]) == ("rejected", "accuracy"), result["measurement"]["detail"]
    assert result["measurement"]["accuracy_public"] == result["measurement"]["accuracy_private"] == 1.0
    assert result["measurement"]["audit"]["passed"] is False
    timed = sum(len(run.records) for run in cheat.outcome.runs)
    assert 0 < result["measurement"]["audit"]["judged"] <= timed   # judging stops once the verdict is certain
    assert "timed runs" in result["measurement"]["detail"]
    assert result["measurement"]["valid"] is not True or result["status"] != "success"   # never ranked
