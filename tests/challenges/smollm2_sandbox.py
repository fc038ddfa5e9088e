"""Build a smollm2 example into an image and evaluate it in the sandbox, through the real harness.

Until the typed challenge is wired into `sandbox.evaluate` (the core work), this drives what an
evaluation does with the same parts: `run_sandboxed` (gVisor, no network, limits, the model mounted
read-only), `DecoderSession` and LoadGen via `run_loadgen`: an AccuracyOnly pass over public and
private prompts, then one Offline PerformanceOnly run over the private ones; the outputs are judged
by the challenge's log-prob gate on the host.

Builds have no network: the platform's build step serves requirements.txt from a wheelhouse made on
the host with `pip download` (where torch==2.13.0+cpu comes from /opt/wheels).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import smollm2_parts as parts
from sandbox.build import build_image
from sandbox.engine import client
from sandbox.config import SandboxSettings
from sandbox.harness import DecoderSession, LoadSettings, run_loadgen
from sandbox.runner import run_sandboxed

LIMITS = parts.spec().limits
SETTINGS = SandboxSettings().with_(memory_bytes=LIMITS.memory_bytes, cpus=LIMITS.cpus, pids_limit=LIMITS.pids,
                                   load_timeout_s=LIMITS.load_timeout_s, build_timeout_s=900)


def drop_middle_layer(decoder: Path) -> None:
    """The fast entry with a bug: layer 15 of 30 is skipped."""
    source = decoder.read_text()
    loop = "        for i, L in enumerate(self.layers):\n"
    assert source.count(loop) == 1, "the fast decoder's layer loop moved: update this patch"
    decoder.write_text(source.replace(loop, loop + "            if i == len(self.layers) // 2:\n"
                                                   "                continue\n"))


def build_example(example: str, tag: str, patch: Callable[[Path], None] | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="arena-smollm2-") as tmp:
        ctx = Path(tmp) / example
        shutil.copytree(parts.EXAMPLES / example, ctx)
        if patch:
            patch(ctx / "decoder.py")
        log: list[str] = []   # requirements.txt: the build's host-side wheelhouse (sandbox.build)
        result = build_image(ctx, tag, SETTINGS, log.append)
    assert result.ok, f"building {example} failed: {result.error}\n" + "\n".join(log[-20:])
    return tag


def derive_broken(fast_image: str, tag: str) -> str:
    """The fast entry's image with the dropped-layer decoder on top: seconds instead of a second torch
    install (which takes minutes under the build sandbox)."""
    with tempfile.TemporaryDirectory(prefix="arena-smollm2-") as tmp:
        ctx = Path(tmp) / "broken"
        ctx.mkdir()
        shutil.copy(parts.EXAMPLES / "fast" / "decoder.py", ctx / "decoder.py")
        drop_middle_layer(ctx / "decoder.py")
        (ctx / "Dockerfile").write_text(f"FROM {fast_image}\nCOPY decoder.py /app/decoder.py\n")
        result = build_image(ctx, tag, SETTINGS, trusted_bases={fast_image: client().images.get(fast_image).id})
    assert result.ok, f"deriving the broken fast entry failed: {result.error}"
    return tag


def image_tag(example: str) -> str:
    return f"arena-test/smollm2-{example}:{uuid.uuid4().hex[:8]}"


@dataclass
class Outcome:
    accuracy_prompts: list[list[int]]
    accuracy_outputs: list[list[int]]
    timed_prompts: list[list[int]]
    timed_outputs: list[list[int]]
    tokens_per_second: float | None
    loadgen_valid: str | None
    load_s: float
    runtime: str


def evaluate(image: str, *, public: int, private: int, max_new_tokens: int, seed: int, log_dir: Path,
             min_duration_ms: int = 2000) -> Outcome:
    source = parts.prompts()
    fresh = source.private(seed, 2 * private)     # never a prompt twice: the timed run gets its own
    prompts, timed = source.public()[:public] + fresh[:private], fresh[private:]
    session = DecoderSession()
    with run_sandboxed(image, SETTINGS, model_dir=parts.model_dir(), on_line=session.on_line,
                       on_overflow=session.on_overflow, on_eof=session.on_eof) as box:
        started = time.monotonic()
        if not session.ready.wait(SETTINGS.load_timeout_s) or session.error:
            box.kill("load")
            box.wait_eof(10)
            raise AssertionError(f"{image} not ready: {session.error}\n{box.stderr_text[-2000:]}")
        load_s = time.monotonic() - started
        acc = run_loadgen(session, box.send, prompts, max_new_tokens, "accuracy", "accuracy",
                          LoadSettings(scenario="offline", min_duration_ms=0, expected_qps=len(prompts)),
                          log_dir / "accuracy")
        assert not session.error, f"{session.error}\n{box.stderr_text[-2000:]}"
        done = [r for r in acc.records if r.done_ns]
        qps = len(done) / max(acc.seconds, 1e-3)
        perf = run_loadgen(session, box.send, timed, max_new_tokens, "perf-1", "performance",
                           LoadSettings(scenario="offline", min_duration_ms=min_duration_ms,
                                        expected_qps=qps), log_dir / "perf-1")
        assert not session.error, f"{session.error}\n{box.stderr_text[-2000:]}"
        session.expect_exit()
        runtime = box.runtime
    by_index = sorted(acc.records, key=lambda r: r.index)
    tps = perf.loadgen.get("result_tokens_per_second")
    return Outcome(prompts, [r.tokens for r in by_index], [timed[r.index] for r in perf.records],
                   [r.tokens for r in perf.records], float(tps) if tps else None,
                   perf.loadgen.get("result_validity"), load_s, runtime)


def judge(outcome: Outcome, max_new_tokens: int):
    gate, model = parts.gate(), parts.model()
    accuracy = gate.verdict(gate.judge(model, outcome.accuracy_prompts, outcome.accuracy_outputs, max_new_tokens))
    timed = gate.verdict(gate.judge(model, outcome.timed_prompts, outcome.timed_outputs, max_new_tokens))
    return accuracy, timed
