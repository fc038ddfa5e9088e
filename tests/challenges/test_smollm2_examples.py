"""The smollm2-135m starter submissions speak the protocol and pass the log-prob gate.

Each decoder runs as a real process with this checkout's protocol module as `arena_protocol`, driven
over stdin/stdout like the harness does, on a few prompts and tokens (the sandboxed, timed runs are in
tests/challenges/test_smollm2_sandbox.py). The torch entry needs torch, which only its image has."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import smollm2_parts as parts
from test_examples import Decoder

TOKENS = 5


@pytest.fixture(scope="module")
def protocol_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pythonpath")
    shutil.copy(parts.REPO / "sandbox" / "protocol.py", path / "arena_protocol.py")
    return path


def start(example: str, protocol_path) -> Decoder:
    env = {**os.environ, "PYTHONPATH": str(protocol_path), "ARENA_MODEL_DIR": str(parts.model_dir())}
    return Decoder([sys.executable, str(parts.EXAMPLES / example / "decoder.py")], env=env)


def judge(prompts, outputs):
    return parts.gate().verdict(parts.gate().judge(parts.model(), prompts, outputs, max_new_tokens=TOKENS))


@pytest.mark.parametrize("example", ["baseline", "kv-cache"])
def test_numpy_examples_pass_the_gate_offline(example, protocol_path):
    prompts = parts.prompts().public()[:2] + parts.prompts().private(seed=99, count=1)
    decoder = start(example, protocol_path)
    for i, p in enumerate(prompts):
        decoder.send(f"r{i}", p, TOKENS)
    decoder.read_until_done(len(prompts))
    assert decoder.close() == 0
    verdict = judge(prompts, [decoder.outputs[f"r{i}"] for i in range(len(prompts))])
    assert verdict.passed and verdict.accuracy == 1.0, verdict.detail


def test_kv_cache_is_exact_when_requests_join_a_running_batch(protocol_path):
    prompts = parts.prompts().public()[:3]
    lengths = [TOKENS + 3, 1, TOKENS]
    reference = parts.model().greedy(prompts, max(lengths))
    decoder = start("kv-cache", protocol_path)
    decoder.send("r0", prompts[0], lengths[0])
    decoder.read_until(lambda: len(decoder.outputs["r0"]) >= 2)     # r0 is mid-generation
    decoder.send("r1", prompts[1], lengths[1])
    decoder.send("r2", prompts[2], lengths[2])
    decoder.read_until_done(3)
    assert decoder.close() == 0
    for i in range(3):      # float32 like the reference: the same greedy tokens here
        assert decoder.outputs[f"r{i}"] == reference[i][:lengths[i]], f"r{i}"


def test_every_smollm2_example_is_a_valid_submission_directory():
    for example in ("baseline", "kv-cache", "fast"):
        root = parts.EXAMPLES / example
        assert sorted(p.name for p in root.iterdir() if p.name != "__pycache__") == \
            ["Dockerfile", "arena.toml", "decoder.py", "requirements.txt"]
        assert (root / "Dockerfile").read_text().splitlines()[0] == "FROM arena/python-cpu:1"
        assert 'challenge = "smollm2-135m"' in (root / "arena.toml").read_text()
        assert "import challenges" not in (root / "decoder.py").read_text()


def test_cuda_example_speaks_binary_frames_and_passes_the_gate_on_cpu(protocol_path):
    """The GPU variant's entry, run where there is no GPU: torch on the CPU in float32 (torch is in
    the examples' images, not in the platform's venv: skipped where it is missing)."""
    pytest.importorskip("torch")
    from sandbox import protocol
    prompts = parts.prompts().public()[:2]
    env = {**os.environ, "PYTHONPATH": str(protocol_path), "ARENA_MODEL_DIR": str(parts.model_dir()),
           "CUDA_SLOTS": "4", "CUDA_CTX": "256"}
    proc = subprocess.Popen([sys.executable, str(parts.EXAMPLES / "cuda" / "decoder.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    for i, p in enumerate(prompts):
        proc.stdin.write(protocol.Request(f"r{i}", p, TOKENS).to_line())
    proc.stdin.close()
    splitter, messages = protocol.StdoutSplitter(), []
    while chunk := proc.stdout.read1(1 << 16):
        messages += [protocol.parse_output_line(m) for m in splitter.feed(chunk)]
    assert proc.wait(timeout=60) == 0 and splitter.binary
    assert messages[0] == protocol.Ready("binary-v1")
    outputs = {f"r{i}": [] for i in range(len(prompts))}
    for m in messages[1:]:
        if isinstance(m, protocol.Tokens):
            outputs[m.id] += m.tokens
    assert sum(isinstance(m, protocol.Done) for m in messages) == len(prompts)
    verdict = judge(prompts, [outputs[f"r{i}"] for i in range(len(prompts))])
    assert verdict.passed, verdict.detail
