"""Telemetry sidecar: samples a running evaluation's container (and its GPUs) from outside it.

    sidecar = Sidecar.start(container.id, out_path, gpu_indices=(0,))
    try:
        ... run the evaluation; note time.monotonic_ns() at the start and end of the timed window ...
    finally:
        summary = sidecar.stop()
    metrics = summary.window(start_ns, end_ns)   # peak_memory_bw_GBs, energy_joules, peak_memory_bytes, …

Sampling runs in a daemon thread of the caller's process, so ``mono_ns`` in the rows is on the same
clock as the harness's timestamps. Nothing here can fail the evaluation: a problem while starting or
sampling shows up as ``crashed`` / ``error`` in the summary, and the window's values are then None.
The thread cannot outlive the evaluation: ``stop()`` (call it from a ``finally``), a weakref finalizer
when the Sidecar is dropped, an ``atexit`` hook, and the container vanishing all end it.
"""
from __future__ import annotations

import atexit
import weakref
from pathlib import Path
from typing import Sequence

import docker

from sandbox.telemetry.container import CgroupSource, container_source, runtime_of
from sandbox.telemetry.dcgm import DcgmSource, open_real_dcgm
from sandbox.telemetry.nvml import NvmlSource, open_real_nvml
from sandbox.telemetry.parquet_stream import ParquetStream
from sandbox.telemetry.sampler import MIN_INTERVAL_S, Sampler
from sandbox.telemetry.schema import COLUMNS, SCHEMA, SOURCES
from sandbox.telemetry.summary import TelemetrySummary

__all__ = ["Sidecar", "TelemetrySummary", "COLUMNS", "SCHEMA", "SOURCES"]

STOP_TIMEOUT_S = 30.0
_running: "weakref.WeakSet[Sampler]" = weakref.WeakSet()


def _stop_all() -> None:
    for sampler in list(_running):
        sampler.stop(STOP_TIMEOUT_S)


atexit.register(_stop_all)


class Sidecar:
    def __init__(self, sampler: Sampler | None, path: Path, sources: tuple[str, ...], notes: list[str],
                 start_error: str | None = None):
        self._sampler = sampler
        self._path = Path(path)
        self._sources = sources
        self._notes = notes
        self._start_error = start_error
        self._summary: TelemetrySummary | None = None
        if sampler is not None:
            _running.add(sampler)
            self._finalizer = weakref.finalize(self, sampler.stop, STOP_TIMEOUT_S)

    @classmethod
    def start(cls, container_id: str, out_path: Path, *, interval_s: float = 1.0,
              gpu_indices: Sequence[int] = (), nvml: object | None = None, dcgm: object | None = None,
              docker_client=None) -> "Sidecar":
        """Start sampling now. Raises only for a bad ``interval_s``; any other problem is reported by
        ``stop()`` as a crashed summary, so telemetry can never stop an evaluation from running.

        GPU sources, chosen by what the host has: NVML always (power, energy, memory, clocks, PCIe
        counters); profiling from DCGM where its bindings and host engine answer, else from NVML's GPM.
        ``nvml`` / ``dcgm`` inject replays (tests): an injected NVML never opens the real DCGM."""
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval_s must be at least {MIN_INTERVAL_S} s (10 Hz), got {interval_s}")
        notes: list[str] = []
        sources = []
        try:
            client = docker_client or docker.from_env()
            container = client.containers.get(container_id)
            box = container_source(container)
            sources.append(box)
            runtime = runtime_of(container)
            notes.append(f"runtime: {runtime}")
            if runtime == "runsc" and isinstance(box, CgroupSource):
                notes.append("runsc: the container cgroup holds the whole gVisor sandbox (Sentry, gofer, stubs); "
                             "cpu and memory include gVisor's overhead and pids counts Sentry threads")
            if gpu_indices:
                sources += cls._gpu_sources(nvml, dcgm, gpu_indices, interval_s, box.pids, notes)
            names = tuple(dict.fromkeys(label for s in sources for label in s.labels()))
            stream = ParquetStream(out_path, metadata={
                "container_id": container.id, "interval_s": str(interval_s),
                "sources": ",".join(names), "notes": "\n".join(notes)})
        except Exception as exc:  # noqa: BLE001 - a telemetry failure must not fail the evaluation
            for source in sources:
                source.close()
            return cls(None, out_path, (), notes, start_error=f"{type(exc).__name__}: {exc}")
        sampler = Sampler(sources, stream, interval_s)
        sampler.start()
        return cls(sampler, out_path, names, notes)

    @classmethod
    def _gpu_sources(cls, nvml, dcgm, gpu_indices, interval_s, container_pids, notes: list[str]) -> list:
        if dcgm is None and nvml is None:
            dcgm, note = open_real_dcgm(gpu_indices, interval_s)
            notes.append(note)
        gpu = cls._nvml_source(nvml, gpu_indices, container_pids, notes, gpm=dcgm is None)
        out = [gpu] if gpu is not None else []
        if dcgm is not None:
            profiling = DcgmSource(dcgm, gpu_indices, gpu.peaks() if gpu is not None else {})
            if profiling.name == "replay":
                notes.append("replay: DCGM rows come from a trace, not from hardware; never rank them")
            out.append(profiling)
        return out

    @staticmethod
    def _nvml_source(nvml, gpu_indices, container_pids, notes: list[str], gpm: bool) -> NvmlSource | None:
        if nvml is None:
            nvml, note = open_real_nvml()
            notes.append(note)
            if nvml is None:
                return None
        else:
            nvml.nvmlInit()
        try:
            gpu = NvmlSource(nvml, gpu_indices, container_pids=container_pids, gpm=gpm)
        except nvml.NVMLError as exc:
            notes.append(f"nvml: GPUs {list(gpu_indices)} unavailable ({exc})")
            nvml.nvmlShutdown()
            return None
        if gpu.name == "replay":
            notes.append("replay: GPU rows come from a trace, not from hardware; never rank them")
        notes.extend(gpu.notes)
        return gpu

    @property
    def samples(self) -> int:
        """Sampling passes written so far."""
        return self._sampler.samples if self._sampler is not None else 0

    @property
    def running(self) -> bool:
        return self._sampler is not None and self._sampler.alive

    def stop(self) -> TelemetrySummary:
        """Stop sampling, close the Parquet file and summarise (idempotent)."""
        if self._summary is not None:
            return self._summary
        sampler = self._sampler
        if sampler is None:
            self._summary = TelemetrySummary(path=None, samples=0, field_errors={}, crashed=True,
                                             error=self._start_error, sources=(),
                                             ended_because="did not start", notes=tuple(self._notes))
            return self._summary
        stopped = sampler.stop(STOP_TIMEOUT_S)
        self._finalizer.detach()
        _running.discard(sampler)
        error = sampler.error if stopped else f"sampler did not stop within {STOP_TIMEOUT_S:.0f} s"
        self._summary = TelemetrySummary(
            path=self._path if stopped and self._path.exists() else None,
            samples=sampler.samples, field_errors=dict(sampler.field_errors),
            crashed=sampler.crashed or not stopped, error=error, sources=self._sources,
            ended_because=sampler.ended_because, ticks_skipped=sampler.ticks_skipped,
            notes=tuple(self._notes), lags_ns=list(sampler.lags_ns))
        return self._summary

