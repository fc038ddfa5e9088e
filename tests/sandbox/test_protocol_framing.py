"""The decoder protocol's two framings: JSON lines and binary-v1, negotiated in the ready line.

Unit tests of the parser, the stdout splitter and DecoderIO, then both framings through the real
runner read path: the ceiling calibration decoder in a sandboxed container, driven by LoadGen."""
from __future__ import annotations

import io
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest

from sandbox import protocol
from sandbox.build import build_image, remove_image
from sandbox.config import SandboxSettings
from sandbox.harness import DecoderSession, LoadSettings, run_loadgen
from sandbox.protocol import (BINARY_V1, Done, ProtocolError, Ready, StdoutSplitter, Tokens, encode_frame,
                              parse_output_line)
from sandbox.runner import run_sandboxed

REPO = Path(__file__).resolve().parents[2]


def split_all(data: bytes, chunk: int) -> list:
    s = StdoutSplitter()
    out = []
    for i in range(0, len(data), chunk):
        out += [parse_output_line(m) for m in s.feed(data[i:i + chunk])]
    rest = s.rest()
    return out + ([parse_output_line(rest)] if rest is not None else [])


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_the_ready_line_switches_to_binary_frames_at_the_byte_after_it(chunk):
    data = (b'{"ready":true,"framing":"binary-v1"}\n' + encode_frame("r1", [1, 2, 70000]) +
            encode_frame("r2", [10]) + encode_frame("r1", done=True) + b"\n" * 0)
    assert split_all(data, chunk) == [Ready(BINARY_V1), Tokens("r1", [1, 2, 70000]), Tokens("r2", [10]), Done("r1")]


def test_json_lines_stay_json_and_large_token_ids_are_fine():
    data = b'{"ready": true}\n{"id":"r1","tokens":[49151, 2]}\n\n{"id":"r1","done":true}'
    assert split_all(data, 5) == [Ready(), Tokens("r1", [49151, 2]), Done("r1")]


@pytest.mark.parametrize("bad, message", [
    (b'{"ready": true, "framing": "morse"}', "unknown framing"),
    (b'{"id":"r1","tokens":[2147483647]}', "must be a non-empty list of ints"),
    (b'{"id":"r1","tokens":[-1]}', "must be a non-empty list of ints"),
    (b"\nX\x02r1", "unknown kind"),
    (b"\nT\x02r1\x01\x00\x00", "not a non-empty list of u32"),
    (b"\nD\x02r1\x00", "extra bytes"),
    (b"\nT\x09r1", "shorter than its header"),
])
def test_malformed_messages_are_named(bad, message):
    with pytest.raises(ProtocolError, match=message):
        parse_output_line(bad)


def test_an_oversized_frame_or_line_overflows_once():
    s = StdoutSplitter()
    list(s.feed(b'{"ready":true,"framing":"binary-v1"}\n'))
    assert list(s.feed((protocol.MAX_LINE_BYTES + 1).to_bytes(4, "little") + b"T")) == []
    assert s.overflow == protocol.MAX_LINE_BYTES + 1 and s.rest() is None
    line = StdoutSplitter()
    assert list(line.feed(b"x" * (protocol.MAX_LINE_BYTES + 10))) == [] and line.overflow


def test_an_incomplete_frame_at_eof_is_a_protocol_error():
    s = StdoutSplitter()
    list(s.feed(b'{"ready":true,"framing":"binary-v1"}\n' + encode_frame("r1", [5])[:-2]))
    with pytest.raises(ProtocolError):
        parse_output_line(s.rest())


@pytest.mark.parametrize("framing", protocol.FRAMINGS)
def test_decoder_io_emits_a_step_in_one_write_that_parses_back(framing):
    out = io.BytesIO()
    d = protocol.DecoderIO(stdin=io.StringIO(""), stdout=out, framing=framing)
    d.ready()
    d.emit([("a", [1, 2], False), ("b", [3], True)])
    d.done("a")
    assert split_all(out.getvalue(), 3) == [Ready(framing), Tokens("a", [1, 2]), Tokens("b", [3]), Done("b"),
                                            Done("a")]


def test_decoder_io_never_tears_a_line_on_a_full_non_blocking_pipe():
    r, w = os.pipe()
    os.set_blocking(w, False)
    writer = os.fdopen(w, "wb")
    d = protocol.DecoderIO(stdin=io.StringIO(""), stdout=writer)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(b"".join(iter(lambda: os.read(r, 1 << 12), b""))))
    reader.start()
    for _ in range(300):
        d.emit([(f"r{j}", list(range(16)), False) for j in range(64)])
    writer.close()
    reader.join()
    lines = [line for line in got[0].split(b"\n") if line]
    assert len(lines) == 300 * 64 and all(isinstance(parse_output_line(x), Tokens) for x in lines)


@pytest.fixture(scope="module")
def ceiling_image():
    tag = f"arena-test/ceiling:{uuid.uuid4().hex[:8]}"
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "ceiling"
        shutil.copytree(REPO / "tests" / "fixtures" / "decoders" / "ceiling", ctx)
        shutil.copy(REPO / "sandbox" / "protocol.py", ctx / "arena_protocol.py")
        assert build_image(ctx, tag, SandboxSettings()).ok
    yield tag
    remove_image(tag)


@pytest.mark.docker
@pytest.mark.parametrize("framing", protocol.FRAMINGS)
def test_both_framings_through_the_sandboxed_read_path(framing, ceiling_image, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "ceiling.json").write_text(json.dumps({"streams": 8, "tokens_per_line": 4, "rate": 4000,
                                                    "framing": framing}))
    for path in (tmp_path, model, model / "ceiling.json"):
        path.chmod(0o755)
    session = DecoderSession()
    prompts = [[i, i + 1] for i in range(8)]
    with run_sandboxed(ceiling_image, SandboxSettings(), model_dir=model, on_line=session.on_line,
                       on_overflow=session.on_overflow, on_eof=session.on_eof) as box:
        assert session.ready.wait(60) and not session.error, session.error
        run = run_loadgen(session, box.send, prompts, 32, "acc", "accuracy",
                          LoadSettings(scenario="offline", min_duration_ms=0, expected_qps=8), tmp_path / "lg")
        session.expect_exit()
    assert session.error is None and session.framing == framing
    for rec in run.records:
        start = rec.prompt[-1] + 1
        assert rec.tokens == [(start + k) % 256 for k in range(32)] and rec.done_ns
