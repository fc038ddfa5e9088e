"""The whole evaluation as one library call (orchestration.evaluation.evaluate_submission), without
Dagster: real Docker and sandbox, real bucket, lake and operator store under a private ARENA_HOME."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from intake.cli import main as arena_main
from lake.operator import OperatorStore
from lake.results import validate_result
from lake.tables import Lake
from lake.config import StorageSettings
from orchestration.evaluation import Collaborators, evaluate_submission, settings_for
from challenges import load_challenge
from sandbox.build import build_image, image_exists
from sandbox.config import SandboxSettings
from sandbox.evaluate import verify_prompts

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


def built(example: str, sid: str, challenge: str) -> dict:
    tag = f"arena-sub/{sid.lower()}:latest"
    result = build_image(ROOT / "examples" / example, tag, SandboxSettings.from_env())
    assert result.ok, result.error
    return {"ok": True, "tag": tag, "image_id": result.image_id, "size_bytes": result.size_bytes,
            "base_image": result.base_image, "seconds": result.seconds, "error": None, "challenge": challenge}


def collaborators(bucket, tmp_path, models_dir=None, **overrides) -> Collaborators:
    settings = SandboxSettings.from_env()
    return Collaborators(bucket=bucket, lake=Lake(StorageSettings.from_env().lake),
                         operator=OperatorStore(tmp_path / "operator"),
                         models_dir=models_dir or tmp_path / "models", settings=settings,
                         devices={"cpuset": settings.cpuset, "gpus": []}, **overrides)


def files_holding(url: str, needle: bytes) -> list[Path]:
    """Files under a file:// storage URL whose bytes hold `needle`."""
    assert url.startswith("file://"), url
    root = Path(url[len("file://"):])
    assert root.is_dir(), root
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_an_evaluation_from_image_to_stored_result_with_its_audit_trail(bucket, arena_home, tmp_path, monkeypatch):
    sid = "01JTESTEVALUATIONLIBRARY01"
    c = collaborators(bucket, tmp_path, workload_overrides={"repeats": 1, "min_duration_ms": 1000})
    stored = evaluate_submission(sid, built("kv-cache", sid, "efficient-decode"), c)
    result = validate_result(stored.result)
    assert (result["status"], result["reason"]) == ("success", None), result["measurement"]["detail"]
    assert not image_exists(f"arena-sub/{sid.lower()}:latest")       # used once, removed
    m = result["measurement"]
    assert m["prompt_set"].startswith("sha256:") and m["prompts_sent"] == stored.requests
    assert m["audit"]["fraction"] == 1.0 and m["audit"]["passed"] is True and m["reference_host_s"] > 0
    assert m["framing"] == "json" and result["environment"]["devices"]["cpuset"] == c.settings.cpuset
    assert bucket.status(sid)["status"] == "success"
    lake = c.lake
    assert lake.read_result("efficient-decode", sid, attempt=1) == result
    rows = lake.read_run("requests", "efficient-decode", sid, 1).to_pylist()
    assert len(rows) == m["prompts_sent"]

    # the seed: operator-only storage, 0600, nowhere in the lake or the bucket
    path = c.operator.path(sid, 1)
    record = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    seed = str(record["seed"]).encode()
    assert not files_holding(StorageSettings.from_env().lake, seed)
    assert not files_holding(StorageSettings.from_env().bucket, seed)

    # the operator regenerates the prompts exactly; a wrong seed does not match
    challenge = load_challenge("efficient-decode")
    assert verify_prompts(challenge, record, result)[0]
    assert not verify_prompts(challenge, record | {"seed": record["seed"] + 1}, result)[0]
    monkeypatch.setenv("ARENA_OPERATOR_DIR", str(tmp_path / "operator"))
    assert arena_main(["admin", "prompts", sid]) == 0
    c.operator.write(sid, 1, record | {"seed": record["seed"] + 1})
    assert arena_main(["admin", "prompts", sid, "--attempt", "1"]) == 1


def test_a_failed_build_gets_its_result_from_the_same_builder(bucket, arena_home, tmp_path):
    sid = "01JTESTEVALUATIONLIBRARY02"
    image = {"ok": False, "tag": "never-built", "image_id": None, "size_bytes": None, "base_image": None,
             "seconds": 1.0, "error": "docker build exited with 1", "challenge": "efficient-decode"}
    stored = evaluate_submission(sid, image, collaborators(bucket, tmp_path))
    result = validate_result(stored.result)
    assert (result["status"], result["reason"], result["measurement"]["detail"]) == \
        ("failed", "build", "docker build exited with 1")
    assert result["metrics"]["tokens_per_second"] is None and result["measurement"]["prompt_set"] is None
    assert set(result["measurement"]) >= {"prompt_set", "prompts_sent", "reference_host_s", "audit", "framing",
                                          "energy_method"}
    assert bucket.status(sid)["status"] == "failed"


def test_challenge_limits_win_over_the_host_defaults():
    host = SandboxSettings(memory_bytes=1 << 30, cpus=2.0, load_timeout_s=5)
    s = settings_for(load_challenge("smollm2-135m"), host)
    assert (s.memory_bytes, s.cpus, s.threads, s.load_timeout_s, s.run_timeout_s, s.stall_timeout_s,
            s.build_timeout_s) == (3 << 30, 1.0, 1, 180, 2400, 300, 1800)
    assert settings_for(load_challenge("efficient-decode"), host) == host   # no [limits]: the host's


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_smollm2_kv_cache_end_to_end_through_the_library(bucket, arena_home, tmp_path):
    """The real challenge, reduced: 2 public + 2 private prompts x 4 tokens in the accuracy pass; the
    log-prob gate on all of it and on the audited timed outputs."""
    from challenges.models.llama_gguf import default_models_dir
    models = Path(os.environ.get("ARENA_TEST_MODELS_DIR", "/work/main/.arena/models"))
    if not (models / "SmolLM2-135M-Instruct.Q4_1.gguf").exists():
        models = default_models_dir()
    challenge = load_challenge("smollm2-135m")
    challenge.model.models_dir = models
    sid = "01JTESTEVALUATIONSMOLLM201"
    c = collaborators(bucket, tmp_path, models_dir=models, workload_overrides={
        "max_new_tokens": 4, "public": tuple(tuple(p) for p in challenge.public_prompts()[:2]),
        "accuracy_private": 2, "timed_min_prompts": 2, "repeats": 1, "min_duration_ms": 1000,
        "audit_fraction": 0.5})
    stored = evaluate_submission(sid, built("smollm2/kv-cache", sid, "smollm2-135m"), c)
    result = validate_result(stored.result)
    m = result["measurement"]
    print(f"\nsmollm2 kv-cache: {result['status']} tokens/s {result['metrics']['tokens_per_second']} "
          f"prompts_sent {m['prompts_sent']} reference_host_s {m['reference_host_s']} audit {m['audit']}")
    assert (result["status"], result["reason"]) == ("success", None), m["detail"]
    assert result["metrics"]["tokens_per_second"] > 0 and m["audit"]["judged"] >= 1
    assert stored.requests == m["prompts_sent"]
