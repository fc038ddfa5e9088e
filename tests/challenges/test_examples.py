"""The starter submissions speak the decoder protocol and produce what the challenge expects:
baseline and kv-cache the reference tokens exactly, wrong far below the accuracy gate.

Each decoder runs as a real process (locally with `arena_protocol` on PYTHONPATH, and kv-cache once
more inside the official image under Docker), driven over stdin/stdout like the harness does."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from challenges import Challenge, load_challenge
from sandbox import protocol

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BASE_IMAGE = "arena/python-cpu:1"
SECRET_SEED = 7


@pytest.fixture(scope="module")
def challenge() -> Challenge:
    return load_challenge("efficient-decode")


@pytest.fixture(scope="module")
def model_dir(challenge, tmp_path_factory) -> Path:
    return challenge.model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def protocol_path(tmp_path_factory) -> Path:
    """A directory holding sandbox/protocol.py as `arena_protocol`, as the base image ships it."""
    path = tmp_path_factory.mktemp("pythonpath")
    shutil.copy(REPO / "sandbox" / "protocol.py", path / "arena_protocol.py")
    return path


@pytest.fixture(scope="module")
def workload(challenge) -> list[tuple[list[int], list[int]]]:
    """(prompt, reference output): a few public prompts and a few private ones."""
    public = list(zip(challenge.public_prompts(), challenge.public_reference()))[:6]
    private = challenge.private_prompts(SECRET_SEED)[:3]
    return public + list(zip(private, challenge.reference(private)))


class Decoder:
    """A running decoder process, driven over the protocol; every stdout line is checked."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.outputs: dict[str, list[int]] = {}
        self.finished: list[str] = []
        self.wanted: dict[str, int] = {}
        assert isinstance(self._read(), protocol.Ready)

    def _read(self) -> protocol.Message:
        line = self.proc.stdout.readline()
        assert line, f"decoder closed stdout (exit code {self.proc.poll()})"
        return protocol.parse_output_line(line)

    def send(self, rid: str, prompt: list[int], max_new_tokens: int) -> None:
        self.proc.stdin.write(protocol.Request(rid, prompt, max_new_tokens).to_line())
        self.proc.stdin.flush()
        self.outputs[rid] = []
        self.wanted[rid] = max_new_tokens

    def read_until_done(self, count: int) -> None:
        """Read until `count` more requests have finished."""
        target = len(self.finished) + count
        self.read_until(lambda: len(self.finished) >= target)

    def read_until(self, condition) -> None:
        while not condition():
            msg = self._read()
            assert not isinstance(msg, protocol.Ready), "ready sent twice"
            assert msg.id in self.outputs and msg.id not in self.finished, f"unexpected id {msg.id!r}"
            if isinstance(msg, protocol.Done):
                assert len(self.outputs[msg.id]) == self.wanted[msg.id], f"{msg.id} done early or late"
                self.finished.append(msg.id)
            else:
                self.outputs[msg.id].extend(msg.tokens)

    def close(self) -> int:
        self.proc.stdin.close()
        rest = self.proc.stdout.read()
        code = self.proc.wait(timeout=30)
        assert rest == b"", f"output after the last request: {rest[:200]!r}"
        return code


def local_decoder(example: str, model_dir: Path, protocol_path: Path) -> Decoder:
    env = {**os.environ, "PYTHONPATH": str(protocol_path), "ARENA_MODEL_DIR": str(model_dir)}
    return Decoder([sys.executable, str(EXAMPLES / example / "decoder.py")], env=env)


def offline(decoder: Decoder, workload, max_new_tokens: int) -> list[list[int]]:
    for i, (prompt, _) in enumerate(workload):
        decoder.send(f"r{i}", prompt, max_new_tokens)
    decoder.read_until_done(len(workload))
    assert decoder.close() == 0
    return [decoder.outputs[f"r{i}"] for i in range(len(workload))]


def accuracy(outputs: list[list[int]], workload) -> float:
    refs = [ref for _, ref in workload]
    assert [len(o) for o in outputs] == [len(r) for r in refs]
    return sum(a == b for out, ref in zip(outputs, refs) for a, b in zip(out, ref)) / sum(map(len, refs))


@pytest.mark.parametrize("example", ["baseline", "kv-cache"])
def test_correct_examples_match_the_reference_exactly_offline(example, challenge, model_dir, protocol_path,
                                                               workload):
    decoder = local_decoder(example, model_dir, protocol_path)
    assert accuracy(offline(decoder, workload, challenge.max_new_tokens), workload) == 1.0


def test_wrong_example_is_well_formed_but_far_below_the_gate(challenge, model_dir, protocol_path, workload):
    decoder = local_decoder("wrong", model_dir, protocol_path)
    assert accuracy(offline(decoder, workload, challenge.max_new_tokens), workload) < 0.5 \
        < challenge.accuracy_threshold


def test_kv_cache_is_exact_when_requests_join_a_running_batch(challenge, model_dir, protocol_path, workload):
    """Server-like arrivals: requests join while others are mid-generation, with mixed lengths."""
    decoder = local_decoder("kv-cache", model_dir, protocol_path)
    lengths = [64, 1, 17, 64, 2, 40, 64, 5, 33]
    decoder.send("r0", workload[0][0], lengths[0])
    decoder.read_until(lambda: len(decoder.outputs["r0"]) >= 10)  # r0 is mid-generation
    for i in range(1, len(workload)):
        decoder.send(f"r{i}", workload[i][0], lengths[i])
        if i % 3 == 0:
            decoder.read_until_done(1)
    decoder.read_until_done(len(workload) - len(decoder.finished))
    assert decoder.close() == 0
    for i, (_, ref) in enumerate(workload):
        assert decoder.outputs[f"r{i}"] == ref[:lengths[i]], f"r{i}"


def test_kv_cache_is_exact_one_request_at_a_time(challenge, model_dir, protocol_path, workload):
    decoder = local_decoder("kv-cache", model_dir, protocol_path)
    for i, (prompt, ref) in enumerate(workload[:3]):
        decoder.send(f"r{i}", prompt, challenge.max_new_tokens)
        decoder.read_until_done(1)
        assert decoder.outputs[f"r{i}"] == ref
    assert decoder.close() == 0


def test_every_example_is_a_valid_submission_directory():
    for example in ("baseline", "kv-cache", "wrong"):
        root = EXAMPLES / example
        assert sorted(p.name for p in root.iterdir() if p.name != "__pycache__") == \
            ["Dockerfile", "arena.toml", "decoder.py", "requirements.txt"]
        assert (root / "Dockerfile").read_text().splitlines()[0] == f"FROM {BASE_IMAGE}"
        assert 'challenge = "efficient-decode"' in (root / "arena.toml").read_text()
        source = (root / "decoder.py").read_text()
        assert "import challenges" not in source and "from challenges" not in source


def _docker(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def base_image() -> str:
    """The official image; built by scripts/build-images.sh when it is missing."""
    if _docker("image", "inspect", BASE_IMAGE).returncode != 0:
        build = subprocess.run([str(REPO / "scripts" / "build-images.sh")], capture_output=True, timeout=900)
        assert build.returncode == 0, build.stderr.decode()[-2000:]
    return BASE_IMAGE


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_kv_cache_example_answers_correctly_inside_the_official_image(base_image, challenge, model_dir,
                                                                        workload):
    tag = f"decode-arena-test/kv-cache:{uuid.uuid4().hex[:12]}"
    build = _docker("build", "-q", "-t", tag, str(EXAMPLES / "kv-cache"))
    assert build.returncode == 0, build.stderr.decode()[-2000:]
    try:
        # The sandbox's restrictions, so the example is known to live within them.
        decoder = Decoder(["docker", "run", "-i", "--rm", "--network", "none", "--read-only",
                           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                           "--tmpfs", "/tmp:size=16m", "-v", f"{model_dir}:/arena/model:ro", tag])
        assert accuracy(offline(decoder, workload, challenge.max_new_tokens), workload) == 1.0
    finally:
        _docker("image", "rm", "-f", tag)
