"""Stall detection: while requests are outstanding, no output for the stall timeout ends the
evaluation as `timeout`, naming the stall, long before the wall-clock limit frees the device."""
from __future__ import annotations

import time

import pytest

from challenges import load_challenge
from sandbox.harness import DecoderSession, RequestRecord, StallWatchdog
from sandbox_workloads import BATTERY, default_runtime


def test_the_watchdog_counts_idle_time_only_while_requests_are_outstanding():
    session = DecoderSession()
    last = {"ns": 0}
    dog = StallWatchdog(session, lambda: last["ns"], timeout_s=5, on_stall=lambda d: None)
    s = 10**9
    assert dog.check(100 * s) is None                      # nothing outstanding: never a stall
    session.begin(RequestRecord("r1", "perf-1", 0, [1], 8, sent_ns=50 * s))
    assert dog.check(54 * s) is None                       # sent 4 s ago, no output yet
    detail = dog.check(56 * s)
    assert detail.startswith("stalled: no output for 6 s with 1 request(s) outstanding")
    last["ns"] = 55 * s                                    # output arrived: the clock restarts
    assert dog.check(59 * s) is None and dog.check(61 * s) is not None


def test_the_efficient_decode_challenge_has_a_stall_timeout():
    assert load_challenge("efficient-decode").limits.stall_timeout_s == 30


@pytest.mark.parametrize("fixture", ["hang_after_ready", "hang_mid_run"])
def test_a_hanging_decoder_ends_as_a_stall_and_frees_its_device(images, evaluate, fixture):
    """The run timeout is 120 s; a stall of 4 s ends the evaluation within a few seconds of it."""
    settings = BATTERY.with_(run_timeout_s=120, stall_timeout_s=4)
    started = time.monotonic()
    evaluation = evaluate(images(f"hostile/{fixture}"), default_runtime(), settings=settings)
    held_s = time.monotonic() - started
    result = evaluation.result
    assert (result["status"], result["reason"]) == ("timeout", "timeout"), (result["measurement"]["detail"], evaluation.stderr[-1500:])
    detail = result["measurement"]["detail"]
    assert detail.startswith("stalled: no output for 4 s with") and "outstanding" in detail, detail
    assert evaluation.container.killed_by_us == "stall"
    print(f"\n{fixture}: device held {held_s:.1f} s (stall timeout 4 s, run timeout 120 s)")
    assert held_s < 60
