"""The decoder protocol between the harness (host side) and a submission's container.

This one module serves both sides. The harness imports it as ``sandbox.protocol``; the official base
images ship a copy as ``arena_protocol`` so that submissions speak exactly the same protocol.
It must stay standard-library only.

Host -> container (stdin), JSON lines:
                             {"id": "r7", "prompt": [int, ...], "max_new_tokens": 64}
Container -> host (stdout), JSON lines (the default framing, "json"):
                             {"ready": true}                       once, after the model is loaded
                             {"id": "r7", "tokens": [int, ...]}      one or more tokens, as produced
                             {"id": "r7", "done": true}              ends request r7
Anything else on stdout is a protocol error. Time is measured by the host on arrival only.
Token ids are ints in [0, 2**31 - 1); whether they belong to the model's vocabulary is the
challenge's gate to judge.

Faster framing, "binary-v1", for decoders that emit tens of thousands of tokens per second: the ready
line asks for it, ``{"ready": true, "framing": "binary-v1"}``, and every later stdout byte is a
sequence of frames (requests keep coming as JSON lines):

    frame := u32 LE body length | body
    body  := kind (1 byte: b"T" tokens, b"D" done) | u8 id length | id (ASCII) | tokens (u32 LE each)

A "D" frame carries no tokens. Both framings mean exactly the same messages; the binary one costs the
harness a struct unpack per frame instead of a JSON parse, and no text formatting in the container.
``DecoderIO(framing="binary-v1")`` speaks it; ``DecoderIO.emit`` sends many messages in one write.
"""
from __future__ import annotations

import json
import os
import queue
import select
import struct
import sys
import threading
from array import array
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Union

#: Longest stdout line (or binary frame) the harness accepts; longer is a protocol error.
MAX_LINE_BYTES = 1 << 20
#: Token ids must fit LoadGen's int32 response buffers; the vocabulary is the gate's business.
MAX_TOKEN_ID = 2 ** 31 - 1
JSON_LINES, BINARY_V1 = "json", "binary-v1"
FRAMINGS = (JSON_LINES, BINARY_V1)
_KIND_TOKENS, _KIND_DONE = b"T", b"D"
_U32 = struct.Struct("<I")
#: A binary frame handed from the splitter to the parser starts with this byte (a line never does).
_BINARY_MARK = b"\n"


class ProtocolError(ValueError):
    """The container said something the protocol does not allow."""


@dataclass(frozen=True)
class Request:
    id: str
    prompt: list[int]
    max_new_tokens: int

    def to_line(self) -> bytes:
        return (json.dumps({"id": self.id, "prompt": self.prompt,
                            "max_new_tokens": self.max_new_tokens}, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class Ready:
    framing: str = JSON_LINES


@dataclass(frozen=True)
class Tokens:
    id: str
    tokens: list[int]


@dataclass(frozen=True)
class Done:
    id: str


Message = Union[Ready, Tokens, Done]


def parse_output_line(line: bytes) -> Message:
    """Parse one stdout message of a container (a JSON line, or a binary frame as the splitter hands
    it over); raise ProtocolError naming what is wrong."""
    if line[:1] == _BINARY_MARK:
        return _parse_frame(memoryview(line)[1:])
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes exceeds the limit of {MAX_LINE_BYTES}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {line[:80]!r} ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a JSON object: {line[:80]!r}")
    if obj.get("ready") is True and set(obj) <= {"ready", "framing"}:
        framing = obj.get("framing", JSON_LINES)
        if framing not in FRAMINGS:
            raise ProtocolError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
        return Ready(framing)
    rid = obj.get("id")
    if not isinstance(rid, str):
        raise ProtocolError(f"missing string 'id' in {line[:80]!r}")
    if set(obj) == {"id", "done"} and obj["done"] is True:
        return Done(rid)
    if set(obj) == {"id", "tokens"} and isinstance(obj["tokens"], list):
        toks = obj["tokens"]
        if not toks or not all(type(t) is int and 0 <= t < MAX_TOKEN_ID for t in toks):
            raise ProtocolError(f"'tokens' of {rid!r} must be a non-empty list of ints in [0, {MAX_TOKEN_ID})")
        return Tokens(rid, toks)
    raise ProtocolError(f"unexpected message: {line[:80]!r}")


def _parse_frame(body: memoryview) -> Message:
    if len(body) < 2 or len(body) < 2 + body[1]:
        raise ProtocolError(f"binary frame of {len(body)} bytes is shorter than its header")
    kind, n = bytes(body[:1]), body[1]
    try:
        rid = bytes(body[2:2 + n]).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"binary frame: request id {bytes(body[2:2 + n])!r} is not ASCII") from None
    payload = body[2 + n:]
    if kind == _KIND_DONE:
        if len(payload):
            raise ProtocolError(f"binary done frame of {rid!r} carries {len(payload)} extra bytes")
        return Done(rid)
    if kind != _KIND_TOKENS:
        raise ProtocolError(f"binary frame of unknown kind {kind!r}")
    if not len(payload) or len(payload) % 4:
        raise ProtocolError(f"binary tokens frame of {rid!r}: {len(payload)} bytes is not a non-empty list of u32")
    toks = array("I")
    toks.frombytes(payload)
    if sys.byteorder != "little":   # pragma: no cover
        toks.byteswap()
    if max(toks) >= MAX_TOKEN_ID:
        raise ProtocolError(f"'tokens' of {rid!r} must be ints in [0, {MAX_TOKEN_ID})")
    return Tokens(rid, toks.tolist())


def encode_frame(rid: str, tokens: Iterable[int] = (), done: bool = False) -> bytes:
    """One binary-v1 frame: tokens of ``rid`` or (``done``) its end."""
    ident = rid.encode("ascii")
    if len(ident) > 255:
        raise ValueError(f"request id {rid!r} is longer than 255 bytes")
    if done:
        body = _KIND_DONE + bytes((len(ident),)) + ident
    else:
        toks = array("I", tokens)
        if sys.byteorder != "little":   # pragma: no cover
            toks.byteswap()
        body = _KIND_TOKENS + bytes((len(ident),)) + ident + toks.tobytes()
    return _U32.pack(len(body)) + body


class StdoutSplitter:
    """Cuts a container's stdout into messages for ``parse_output_line``: JSON lines, until a ready
    line asks for binary-v1, then length-prefixed frames. ``overflow`` is set (to the size seen)
    when a line or frame exceeds MAX_LINE_BYTES; nothing more is split after that."""

    def __init__(self):
        self.binary = False
        self.overflow: int | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self._buf
        buf += data
        while self.overflow is None:
            if self.binary:
                if len(buf) < 4:
                    break
                size = _U32.unpack_from(buf)[0]
                if size > MAX_LINE_BYTES:
                    self.overflow = size
                    break
                if len(buf) < 4 + size:
                    break
                frame = _BINARY_MARK + bytes(buf[4:4 + size])
                del buf[:4 + size]
                yield frame
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LINE_BYTES:
                    self.overflow = len(buf)
                break
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            if line.strip():
                if b'"framing"' in line and _asks_binary(line):
                    self.binary = True
                yield line
        if self.overflow is not None:
            buf.clear()

    def rest(self) -> bytes | None:
        """What is left at EOF: a last line without its newline, or an incomplete frame (which then
        fails to parse, naming the problem)."""
        if self.overflow is not None or not self._buf.strip():
            return None
        rest = bytes(self._buf)
        self._buf.clear()
        return _BINARY_MARK + rest[4:] if self.binary else rest


def _asks_binary(line: bytes) -> bool:
    try:
        msg = parse_output_line(line)
    except ProtocolError:
        return False
    return isinstance(msg, Ready) and msg.framing == BINARY_V1


def parse_request_line(line: str | bytes) -> Request:
    obj = json.loads(line)
    return Request(str(obj["id"]), [int(t) for t in obj["prompt"]], int(obj["max_new_tokens"]))


# ---- container side -------------------------------------------------------------------------

class DecoderIO:
    """What a submission uses: requests come in on a reader thread, answers go out on stdout.

    ``next_request(block)`` returns the next Request, or None when none is waiting (block=False) or
    stdin has closed. Batching decoders call ``pending()`` to take every request that has arrived,
    and ``emit([(id, tokens, done), ...])`` to send a whole step's answers in one write.
    ``framing="binary-v1"`` asks the harness for length-prefixed binary frames (see the module).
    """

    def __init__(self, stdin: IO[str] | None = None, stdout: IO | None = None, framing: str = JSON_LINES):
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
        self._in = stdin or sys.stdin
        out = stdout or sys.stdout
        self._out = getattr(out, "buffer", out)      # bytes go out, whatever the framing
        try:
            self._fd: int | None = self._out.fileno()
        except (AttributeError, OSError, ValueError):   # an in-memory stream (tests)
            self._fd = None
        self.framing = framing
        self._queue: "queue.Queue[Request | None]" = queue.Queue()
        self._lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._in:
            if line.strip():
                self._queue.put(parse_request_line(line))
        self._queue.put(None)

    def next_request(self, block: bool = True) -> Request | None:
        if self.closed:
            return None
        try:
            req = self._queue.get(block=block)
        except queue.Empty:
            return None
        if req is None:
            self.closed = True
        return req

    def pending(self) -> list[Request]:
        out = []
        while (req := self.next_request(block=False)) is not None:
            out.append(req)
        return out

    def requests(self) -> Iterator[Request]:
        while (req := self.next_request()) is not None:
            yield req

    def _write(self, data: bytes) -> None:
        """All of ``data`` or nothing else: stdout may be a non-blocking pipe (it is under gVisor), where
        a buffered write gives up half-way when the pipe is full and the next write tears a line."""
        with self._lock:
            if self._fd is None:
                self._out.write(data)
                self._out.flush()
                return
            self._out.flush()
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    select.select([], [self._fd], [], 1.0)

    def _encode(self, rid: str, tokens, done: bool) -> bytes:
        if self.framing == BINARY_V1:
            return (encode_frame(rid, tokens) if tokens else b"") + (encode_frame(rid, done=True) if done else b"")
        out = b""
        if tokens:
            out += b'{"id":%s,"tokens":[%s]}\n' % (json.dumps(rid).encode(), ",".join(map(str, map(int, tokens))).encode())
        if done:
            out += b'{"id":%s,"done":true}\n' % json.dumps(rid).encode()
        return out

    def ready(self) -> None:
        line = {"ready": True} if self.framing == JSON_LINES else {"ready": True, "framing": self.framing}
        self._write((json.dumps(line, separators=(",", ":")) + "\n").encode())

    def tokens(self, rid: str, tokens: list[int]) -> None:
        self._write(self._encode(rid, tokens, False))

    def done(self, rid: str) -> None:
        self._write(self._encode(rid, (), True))

    def emit(self, messages: Iterable[tuple[str, list[int], bool]]) -> None:
        """Send (id, tokens, done) for many requests in one write: tokens first, then done if set."""
        self._write(b"".join(self._encode(rid, toks, done) for rid, toks, done in messages))
