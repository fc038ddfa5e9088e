"""The decode harness: an MLPerf LoadGen SUT adapter over the decoder protocol.

LoadGen issues the queries; `DecoderSUT` forwards each sample to the container as a protocol request
and reports `FirstTokenComplete` / `QuerySamplesComplete` the moment the tokens arrive, so LoadGen
timestamps every token itself. `DecoderSession` keeps the protocol state (which requests are in flight,
what arrived when) and turns any breach of the protocol into one fatal, named error.
"""
from __future__ import annotations

import array
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlperf_loadgen as lg

from sandbox.protocol import Done, ProtocolError, Ready, Request, Tokens, parse_output_line

SCENARIOS = {"offline": lg.TestScenario.Offline, "single-stream": lg.TestScenario.SingleStream,
             "server": lg.TestScenario.Server}


@dataclass
class RequestRecord:
    """One decode request as the harness saw it; all times are host monotonic ns on arrival."""
    rid: str
    run: str
    index: int
    prompt: list[int]
    max_new_tokens: int
    sent_ns: int
    sample_id: int = 0
    tokens: list[int] = field(default_factory=list)
    arrivals: list[tuple[int, int]] = field(default_factory=list)   # (arrival ns, tokens in that message)
    done_ns: int | None = None

    @property
    def first_token_ns(self) -> int | None:
        return self.arrivals[0][0] if self.arrivals else None


class DecoderSession:
    """Protocol state of one container session. Thread-safe; callbacks run on the reader thread."""

    def __init__(self, on_first_token: Callable[[RequestRecord], None] = lambda r: None,
                 on_done: Callable[[RequestRecord], None] = lambda r: None):
        self.ready = threading.Event()
        self.ready_ns: int | None = None
        self.framing: str | None = None              # what the ready line negotiated (protocol.FRAMINGS)
        self.error: str | None = None
        self.error_kind: str | None = None           # protocol | crash | timeout | platform
        self.eof = threading.Event()
        self.exit_expected = False                   # set once the harness closes stdin on purpose
        self.inflight: dict[str, RequestRecord] = {}
        self.completed: dict[str, RequestRecord] = {}
        self.on_first_token = on_first_token
        self.on_done = on_done
        self.on_fatal: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        #: every prompt sent in this session, in send order (an evaluation is one session)
        self.sent: list[tuple[int, ...]] = []
        self._seen: set[tuple[int, ...]] = set()
        self._ids = 0

    # -- requests out ----------------------------------------------------------------------
    def new_request_id(self) -> str:
        """A fresh id, unique in the session, that tells the decoder nothing about the pass."""
        with self._lock:
            self._ids += 1
            return f"q{self._ids:x}{secrets.token_hex(2)}"

    def begin(self, record: RequestRecord) -> bool:
        """Register a request about to be sent. A prompt already sent in this session is a platform
        error (the harness promised never to ask twice): the session fails and nothing is sent."""
        key = tuple(record.prompt)
        with self._lock:
            if key in self._seen:
                repeat = True
            else:
                repeat = False
                self._seen.add(key)
                self.sent.append(key)
                self.inflight[record.rid] = record
        if repeat:
            self.fail("platform", f"the harness was about to send a prompt a second time in one evaluation "
                                  f"(request {record.rid!r}, run {record.run!r}): refused; no prompt is ever "
                                  f"sent twice")
            return False
        return True

    # -- lines in --------------------------------------------------------------------------
    def on_line(self, now_ns: int, line: bytes) -> None:
        if self.error:
            return
        try:
            msg = parse_output_line(line)
        except ProtocolError as exc:
            return self.fail("protocol", str(exc))
        if isinstance(msg, Ready):
            if self.ready.is_set():
                return self.fail("protocol", "second {\"ready\": true}")
            self.ready_ns, self.framing = now_ns, msg.framing
            self.ready.set()
            return
        if not self.ready.is_set():
            return self.fail("protocol", f"output before {{\"ready\": true}}: {line[:80]!r}")
        with self._lock:
            rec = self.inflight.get(msg.id)
        if rec is None:
            what = "after its done" if msg.id in self.completed else "for an unknown request id"
            return self.fail("protocol", f"{type(msg).__name__.lower()} {what}: {msg.id!r}")
        if isinstance(msg, Tokens):
            first = not rec.arrivals
            rec.tokens.extend(msg.tokens)
            rec.arrivals.append((now_ns, len(msg.tokens)))
            if len(rec.tokens) > rec.max_new_tokens:
                return self.fail("protocol", f"request {rec.rid!r}: {len(rec.tokens)} tokens, "
                                             f"more than max_new_tokens={rec.max_new_tokens}")
            if first:
                self.on_first_token(rec)
        elif isinstance(msg, Done):
            rec.done_ns = now_ns
            with self._lock:
                del self.inflight[rec.rid]
                self.completed[rec.rid] = rec
            self.on_done(rec)

    def on_overflow(self, nbytes: int) -> None:
        self.fail("protocol", f"stdout line longer than the limit ({nbytes} bytes without a newline)")

    def on_eof(self) -> None:
        if not self.error:
            if self.inflight:
                self.fail("crash", f"container exited with {len(self.inflight)} request(s) unfinished")
            elif not self.ready.is_set():
                self.fail("crash", "container exited before {\"ready\": true}")
            elif not self.exit_expected:   # between two runs: the next query would wait forever
                self.fail("crash", "container exited before the evaluation was over")
        self.eof.set()

    def expect_exit(self) -> None:
        """The harness is done with the container: its exit from now on is no crash."""
        self.exit_expected = True

    def fail(self, kind: str, message: str) -> None:
        """Record the first fatal error and release everything that waits on the container."""
        with self._lock:
            if self.error:
                return
            self.error, self.error_kind = message, kind
        self.ready.set()
        self.on_fatal()

    def drain(self) -> list[RequestRecord]:
        """Take every request still in flight (after a fatal error), marking none of them done."""
        with self._lock:
            left, self.inflight = list(self.inflight.values()), {}
        return left


class StallWatchdog:
    """While requests are outstanding, no output byte for `timeout_s` is a stall: `on_stall(detail)`
    is called once (the evaluation then ends as `timeout`). The idle clock starts at the later of the
    last output byte and the oldest outstanding request's send, so idle time between runs never counts.
    """

    def __init__(self, session: DecoderSession, last_output_ns: Callable[[], int], timeout_s: float,
                 on_stall: Callable[[str], None], poll_s: float | None = None):
        self.session, self.last_output_ns, self.timeout_s = session, last_output_ns, timeout_s
        self.on_stall = on_stall
        self.poll_s = poll_s if poll_s is not None else min(1.0, timeout_s / 10)
        self.stalled_ns: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="stall-watchdog")

    def start(self) -> "StallWatchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self, now_ns: int) -> str | None:
        """The stall's detail if the session is stalled at `now_ns`, else None."""
        with self.session._lock:
            outstanding = [r.sent_ns for r in self.session.inflight.values()]
        if not outstanding or self.session.error:
            return None
        idle_s = (now_ns - max(self.last_output_ns(), min(outstanding))) / 1e9
        if idle_s < self.timeout_s:
            return None
        return (f"stalled: no output for {idle_s:.0f} s with {len(outstanding)} request(s) outstanding "
                f"(stall timeout {self.timeout_s:g} s)")

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            detail = self.check(time.monotonic_ns())
            if detail is not None:
                self.stalled_ns = time.monotonic_ns()
                self.on_stall(detail)
                return


@dataclass
class ScenarioRun:
    """One LoadGen test over the session: its records and LoadGen's own verdict and figures."""
    label: str
    mode: str
    records: list[RequestRecord]
    loadgen: dict
    log_dir: Path
    seconds: float


def read_loadgen_detail(log_dir: Path) -> dict:
    """The `:::MLLOG` key/value pairs of mlperf_log_detail.txt (last value wins)."""
    out = {}
    path = log_dir / "mlperf_log_detail.txt"
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(":::MLLOG "):
                try:
                    entry = json.loads(line[len(":::MLLOG "):])
                except ValueError:
                    continue
                out[entry.get("key")] = entry.get("value")
    return out


class DecoderSUT:
    """The LoadGen System Under Test: a forwarder between LoadGen and a DecoderSession."""

    def __init__(self, session: DecoderSession, send: Callable[[bytes], None],
                 prompts: list[list[int]], max_new_tokens: int, label: str):
        self.session, self.send, self.prompts = session, send, prompts
        self.max_new_tokens, self.label = max_new_tokens, label
        self.records: list[RequestRecord] = []
        self._keep: list[array.array] = []
        session.on_first_token = self._first_token
        session.on_done = self._done
        session.on_fatal = self._abort

    def issue_query(self, samples) -> None:
        lines = []
        for s in samples:
            # Opaque ids: a request never says which pass it belongs to (accuracy, warm-up or timed)
            rec = RequestRecord(rid=self.session.new_request_id(), run=self.label, index=s.index,
                                prompt=self.prompts[s.index], max_new_tokens=self.max_new_tokens,
                                sent_ns=time.monotonic_ns(), sample_id=s.id)
            self.records.append(rec)
            if not self.session.begin(rec):
                rec.done_ns = None
                lg.QuerySamplesComplete([self._response(rec, [])])
                continue
            lines.append(Request(rec.rid, rec.prompt, rec.max_new_tokens).to_line())
        if self.session.error:
            self._abort()
        else:
            self.send(b"".join(lines))

    def flush_queries(self) -> None:
        pass

    def _response(self, rec: RequestRecord, tokens: list[int]) -> "lg.QuerySampleResponse":
        data = array.array("i", tokens or [0])
        self._keep.append(data)
        addr, _ = data.buffer_info()
        return lg.QuerySampleResponse(rec.sample_id, addr, data.itemsize * len(tokens), max(len(tokens), 1))

    def _first_token(self, rec: RequestRecord) -> None:
        lg.FirstTokenComplete([self._response(rec, rec.tokens[:1])])

    def _done(self, rec: RequestRecord) -> None:
        lg.QuerySamplesComplete([self._response(rec, rec.tokens)])

    def _abort(self) -> None:
        """After a fatal error LoadGen must still finish: complete what is in flight, empty-handed."""
        left = self.session.drain()
        if left:
            lg.QuerySamplesComplete([self._response(rec, []) for rec in left])


@dataclass(frozen=True)
class LoadSettings:
    scenario: str = "offline"
    min_duration_ms: int = 3000
    min_query_count: int = 1
    expected_qps: float = 1.0            # offline/server: samples per second the SUT can sustain
    expected_latency_ns: int = 10**9     # single-stream
    ttft_latency_ns: int = 2 * 10**9
    tpot_latency_ns: int = 200 * 10**6
    max_duration_ms: int = 0


def run_loadgen(session: DecoderSession, send: Callable[[bytes], None], prompts: list[list[int]],
                max_new_tokens: int, label: str, mode: str, load: LoadSettings, log_dir: Path) -> ScenarioRun:
    """Run one LoadGen test (mode `accuracy` or `performance`) and collect what it measured."""
    settings = lg.TestSettings()
    settings.scenario = SCENARIOS[load.scenario]
    settings.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    settings.use_token_latencies = True
    settings.min_duration_ms = load.min_duration_ms
    settings.max_duration_ms = load.max_duration_ms
    settings.min_query_count = load.min_query_count
    settings.offline_expected_qps = max(load.expected_qps, 1e-3)
    settings.server_target_qps = max(load.expected_qps, 1e-3)
    settings.single_stream_expected_latency_ns = max(int(load.expected_latency_ns), 1)
    settings.ttft_latency = load.ttft_latency_ns
    settings.tpot_latency = load.tpot_latency_ns
    # Each prompt is issued at most once: LoadGen otherwise repeats samples when a run issues more
    # queries than it has samples. With unique issue it issues each sample of the set exactly once
    # (offline, server) or until min_duration (single-stream), never a sample twice.
    settings.performance_sample_count_override = len(prompts)
    settings.performance_issue_unique = True
    log_dir.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    sut_impl = DecoderSUT(session, send, prompts, max_new_tokens, label)
    sut = lg.ConstructSUT(sut_impl.issue_query, sut_impl.flush_queries)
    qsl = lg.ConstructQSL(len(prompts), len(prompts), lambda idx: None, lambda idx: None)
    started = time.monotonic()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return ScenarioRun(label, mode, sut_impl.records, read_loadgen_detail(log_dir), log_dir,
                       time.monotonic() - started)
