"""The decoder protocol: JSON lines between the harness (host side) and a submission's container.

This one module serves both sides. The harness imports it as ``sandbox.protocol``; the official base
images ship a copy as ``arena_protocol`` so that submissions speak exactly the same protocol.
It must stay standard-library only.

Host -> container (stdin):   {"id": "r7", "prompt": [int, ...], "max_new_tokens": 64}
Container -> host (stdout):  {"ready": true}                       once, after the model is loaded
                             {"id": "r7", "tokens": [int, ...]}      one or more tokens, as produced
                             {"id": "r7", "done": true}              ends request r7
Anything else on stdout is a protocol error. Time is measured by the host on arrival only.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
from dataclasses import dataclass
from typing import IO, Iterator, Union

#: Longest stdout line the harness accepts; a longer one is a protocol error (not a memory problem).
MAX_LINE_BYTES = 1 << 20
VOCAB_SIZE = 256


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
    pass


@dataclass(frozen=True)
class Tokens:
    id: str
    tokens: list[int]


@dataclass(frozen=True)
class Done:
    id: str


Message = Union[Ready, Tokens, Done]


def parse_output_line(line: bytes) -> Message:
    """Parse one stdout line of a container; raise ProtocolError naming what is wrong."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes exceeds the limit of {MAX_LINE_BYTES}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {line[:80]!r} ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a JSON object: {line[:80]!r}")
    if obj == {"ready": True}:
        return Ready()
    rid = obj.get("id")
    if not isinstance(rid, str):
        raise ProtocolError(f"missing string 'id' in {line[:80]!r}")
    if set(obj) == {"id", "done"} and obj["done"] is True:
        return Done(rid)
    if set(obj) == {"id", "tokens"} and isinstance(obj["tokens"], list):
        toks = obj["tokens"]
        if not toks or not all(type(t) is int and 0 <= t < VOCAB_SIZE for t in toks):
            raise ProtocolError(f"'tokens' of {rid!r} must be a non-empty list of ints in [0, {VOCAB_SIZE})")
        return Tokens(rid, toks)
    raise ProtocolError(f"unexpected message: {line[:80]!r}")


def parse_request_line(line: str | bytes) -> Request:
    obj = json.loads(line)
    return Request(str(obj["id"]), [int(t) for t in obj["prompt"]], int(obj["max_new_tokens"]))


# ---- container side -------------------------------------------------------------------------

class DecoderIO:
    """What a submission uses: requests come in on a reader thread, answers go out on stdout.

    ``next_request(block)`` returns the next Request, or None when none is waiting (block=False) or
    stdin has closed. Batching decoders call ``pending()`` to take every request that has arrived.
    """

    def __init__(self, stdin: IO[str] | None = None, stdout: IO[str] | None = None):
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
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

    def _send(self, obj: dict) -> None:
        with self._lock:
            self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
            self._out.flush()

    def ready(self) -> None:
        self._send({"ready": True})

    def tokens(self, rid: str, tokens: list[int]) -> None:
        self._send({"id": rid, "tokens": [int(t) for t in tokens]})

    def done(self, rid: str) -> None:
        self._send({"id": rid, "done": True})
