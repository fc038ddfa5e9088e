"""The sampling loop: an absolute monotonic schedule, per-field error counting, crash containment.

Ticks fall at ``t0 + k * interval``. After a slow pass the loop goes to the next tick still ahead of
the clock, so ticks are skipped, never bunched up to catch up. A row's ``mono_ns`` is its scheduled
tick; how late the pass actually started is kept in ``lags_ns`` (for benchmarks), not in the rows.

A source reads each metric through a ``FieldReader``: an error the source declares as expected (an
``NVMLError``, an ``OSError`` on a cgroup file, ...) makes that one value null and counts it under
``"<source>.<column>"``. Anything else is a bug and stops the sampler: the summary says ``crashed``,
the rows written so far stay readable, and the evaluation itself is never touched.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable, Protocol, Sequence

from sandbox.telemetry.parquet_stream import ParquetStream

MIN_INTERVAL_S = 0.1   # 10 Hz
MAX_LAGS_KEPT = 100_000


class ContainerGone(Exception):
    """The container being watched no longer exists: sampling ends normally."""


class FieldReader:
    def __init__(self, source: str, expected: tuple[type[BaseException], ...], errors: Counter):
        self._source, self._expected, self._errors = source, expected, errors

    def __call__(self, column: str, read: Callable[[], object]):
        try:
            return read()
        except self._expected:
            self._errors[f"{self._source}.{column}"] += 1
            return None

    def failed(self, column: str) -> None:
        """Count a value the source found invalid without an exception (e.g. an NVML return code)."""
        self._errors[f"{self._source}.{column}"] += 1


class Source(Protocol):
    name: str                                        # the row's ``source``
    expected_errors: tuple[type[BaseException], ...]

    def labels(self) -> tuple[str, ...]: ...                 # every ``source`` value it writes
    def sample(self, read: FieldReader) -> list[dict]: ...   # rows without ts / mono_ns
    def close(self) -> None: ...


class Sampler:
    def __init__(self, sources: Sequence[Source], stream: ParquetStream, interval_s: float):
        if not MIN_INTERVAL_S <= interval_s:
            raise ValueError(f"interval_s must be at least {MIN_INTERVAL_S} s (10 Hz), got {interval_s}")
        self.sources = list(sources)
        self.stream = stream
        self.interval_ns = round(interval_s * 1e9)
        self.field_errors: Counter = Counter()
        self.samples = 0
        self.ticks_skipped = 0
        self.lags_ns: list[int] = []
        self.crashed = False
        self.error: str | None = None
        self.ended_because: str | None = None
        self._stop = threading.Event()
        self._readers = [FieldReader(s.name, s.expected_errors, self.field_errors) for s in self.sources]
        self._thread = threading.Thread(target=self._run, name="arena-telemetry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Ask the loop to end and wait for it; False when it did not end within ``timeout_s``."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        # Anchor UTC to the monotonic clock once, so ts and mono_ns of a row describe the same instant.
        mono0, wall0 = time.monotonic_ns(), time.time_ns()
        t0 = tick = mono0
        try:
            while True:
                wait_ns = tick - time.monotonic_ns()
                if self._stop.wait(wait_ns / 1e9 if wait_ns > 0 else 0):
                    self.ended_because = "stopped"
                    break
                self._record_lag(time.monotonic_ns() - tick)
                rows = []
                for source, reader in zip(self.sources, self._readers):
                    rows.extend(source.sample(reader))
                ts = wall0 + (tick - mono0)
                for row in rows:
                    row["ts"], row["mono_ns"] = ts, tick
                self.stream.append(rows)
                self.samples += 1
                k_done = (tick - t0) // self.interval_ns
                k_next = (time.monotonic_ns() - t0) // self.interval_ns + 1
                self.ticks_skipped += k_next - k_done - 1
                tick = t0 + k_next * self.interval_ns
        except ContainerGone as gone:
            self.ended_because = f"container gone: {gone}"
        except BaseException as exc:  # noqa: BLE001 - whatever broke, the evaluation must carry on
            self.crashed = True
            self.error = f"{type(exc).__name__}: {exc}"
            self.ended_because = "crashed"
        finally:
            for source in self.sources:
                try:
                    source.close()
                except Exception:  # noqa: BLE001 - closing must not hide the file
                    pass
            try:
                self.stream.close()
            except Exception as exc:  # noqa: BLE001
                self.crashed = True
                self.error = self.error or f"closing {self.stream.path}: {type(exc).__name__}: {exc}"

    def _record_lag(self, lag_ns: int) -> None:
        if len(self.lags_ns) < MAX_LAGS_KEPT:
            self.lags_ns.append(lag_ns)
