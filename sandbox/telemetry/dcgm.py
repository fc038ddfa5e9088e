"""GPU profiling through DCGM: DRAM, SM and tensor activity, PCIe and NVLink traffic.

Chosen over NVML's GPM where the host has DCGM (its Python bindings, ``pydcgm``, ship with the
datacenter-gpu-manager package under /usr/local/dcgm/bindings/python3, not on PyPI) because DCGM's
profiling module also reports NVLink and works on pre-Hopper GPUs; both read the same hardware
counters, so only one of them runs (the NVML source then keeps power, energy, memory and clocks,
without GPM). One field group per sidecar:

    DCGM_FI_PROF_DRAM_ACTIVE          -> dram_bw_util_percent (x 100), dram_bw_GBs (x the DRAM peak)
    DCGM_FI_PROF_SM_ACTIVE            -> sm_util_percent
    DCGM_FI_PROF_SM_OCCUPANCY         -> sm_occupancy_percent
    DCGM_FI_PROF_PIPE_TENSOR_ACTIVE   -> tensor_util_percent
    DCGM_FI_PROF_PCIE_TX/RX_BYTES     -> pcie_tx_Bps / pcie_rx_Bps
    DCGM_FI_PROF_NVLINK_TX/RX_BYTES   -> nvlink_tx_Bps / nvlink_rx_Bps

The source reads through a *reader* with ``latest() -> {gpu index: {field name: value | None}}``:
``PydcgmReader`` (the real bindings; rows say ``dcgm``) or ``ReplayDcgm`` (a trace; rows say
``replay`` and never reach a leaderboard). ``PydcgmReader`` has not yet run on a GPU host.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from sandbox.telemetry.sampler import FieldReader

DCGM_BINDINGS = "/usr/local/dcgm/bindings/python3"
TRACE_FORMAT = "arena-dcgm-trace/1"
#: DCGM field name -> (row column, scale)
FIELDS: dict[str, tuple[str, float]] = {
    "DCGM_FI_PROF_DRAM_ACTIVE": ("dram_bw_util_percent", 100.0),
    "DCGM_FI_PROF_SM_ACTIVE": ("sm_util_percent", 100.0),
    "DCGM_FI_PROF_SM_OCCUPANCY": ("sm_occupancy_percent", 100.0),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("tensor_util_percent", 100.0),
    "DCGM_FI_PROF_PCIE_TX_BYTES": ("pcie_tx_Bps", 1.0),
    "DCGM_FI_PROF_PCIE_RX_BYTES": ("pcie_rx_Bps", 1.0),
    "DCGM_FI_PROF_NVLINK_TX_BYTES": ("nvlink_tx_Bps", 1.0),
    "DCGM_FI_PROF_NVLINK_RX_BYTES": ("nvlink_rx_Bps", 1.0),
}


class DcgmError(RuntimeError):
    """A DCGM call failed: that sample's values are null and counted as field errors."""


class DcgmSource:
    """Profiling rows, one per GPU and sampling pass. ``peaks`` maps a GPU index to its DRAM peak in
    GB/s (from NVML: max memory clock x bus width), which turns DRAM activity into a bandwidth."""

    expected_errors = (DcgmError,)

    def __init__(self, reader, indices: Sequence[int], peaks: Mapping[int, float | None]):
        self.reader, self.indices, self.peaks = reader, tuple(indices), dict(peaks)
        self.name = "dcgm" if isinstance(reader, PydcgmReader) else "replay"

    def labels(self) -> tuple[str, ...]:
        return (self.name,)

    def sample(self, read: FieldReader) -> list[dict]:
        values = read("dcgm", self.reader.latest)
        rows = []
        for index in self.indices:
            row = {"source": self.name, "device": f"gpu{index}", "dram_bw_peak_GBs": self.peaks.get(index)}
            fields = (values or {}).get(index, {})
            for name, (column, scale) in FIELDS.items():
                value = fields.get(name)
                if value is None:
                    read.failed(column)
                else:
                    row[column] = float(value) * scale
            util = row.get("dram_bw_util_percent")
            if util is not None and row["dram_bw_peak_GBs"] is not None:
                row["dram_bw_GBs"] = util / 100.0 * row["dram_bw_peak_GBs"]
            rows.append(row)
        return rows

    def close(self) -> None:
        self.reader.close()


class PydcgmReader:
    """The field group above, watched through DCGM's own Python bindings (embedded host engine, or
    the nv-hostengine at ``ARENA_DCGM_HOST`` when set)."""

    def __init__(self, indices: Sequence[int], interval_s: float):
        if DCGM_BINDINGS not in sys.path and Path(DCGM_BINDINGS).is_dir():
            sys.path.append(DCGM_BINDINGS)
        import dcgm_fields
        import dcgm_structs
        import pydcgm
        host = os.environ.get("ARENA_DCGM_HOST")
        mode = dcgm_structs.DCGM_OPERATION_MODE_AUTO
        self._handle = pydcgm.DcgmHandle(ipAddress=host, opMode=mode) if host else pydcgm.DcgmHandle(opMode=mode)
        self._group = pydcgm.DcgmGroup(self._handle, groupName=f"arena-{os.getpid()}-{id(self)}",
                                       groupType=dcgm_structs.DCGM_GROUP_EMPTY)
        for index in indices:
            self._group.AddGpu(index)
        self._ids = {getattr(dcgm_fields, name): name for name in FIELDS}
        self._fields = pydcgm.DcgmFieldGroup(self._handle, name=f"arena-{os.getpid()}-{id(self)}",
                                             fieldIds=list(self._ids))
        self._group.samples.WatchFields(self._fields, int(interval_s * 1e6), 60.0, 0)
        self._handle.GetSystem().UpdateAllFields(True)
        self._error = dcgm_structs.DCGMError

    def latest(self) -> dict[int, dict[str, float | None]]:
        try:
            values = self._group.samples.GetLatest(self._fields).values
        except self._error as exc:
            raise DcgmError(str(exc)) from None
        out: dict[int, dict[str, float | None]] = {}
        for gpu, by_field in values.items():
            out[int(gpu)] = {}
            for field_id, series in by_field.items():
                last = series[-1] if len(series) else None
                blank = last is None or getattr(last, "isBlank", False)
                out[int(gpu)][self._ids[field_id]] = None if blank else float(last.value)
        return out

    def close(self) -> None:
        try:
            self._group.samples.UnwatchFields(self._fields)
            self._fields.Delete()
            self._group.Delete()
            self._handle.Shutdown()
        except self._error:
            pass


def open_real_dcgm(indices: Sequence[int], interval_s: float) -> tuple[PydcgmReader | None, str]:
    """A reader over the real DCGM, or None and why not (then NVML's GPM is used)."""
    try:
        return PydcgmReader(indices, interval_s), "dcgm: profiling fields watched"
    except ImportError:
        return None, f"dcgm: Python bindings (pydcgm) not found (looked in {DCGM_BINDINGS}); NVML/GPM used"
    except Exception as exc:  # noqa: BLE001 - no DCGM, no hostengine, no profiling support: use GPM
        return None, f"dcgm: unavailable ({type(exc).__name__}: {exc}); NVML/GPM used"


class ReplayDcgm:
    """Plays an ``arena-dcgm-trace/1`` file: ``{"format", "provenance", "devices": [{"index",
    "samples": [{DCGM field name: value | null}]}]}``, one sample per ``latest()`` call, looping."""

    def __init__(self, trace: dict):
        if trace.get("format") != TRACE_FORMAT:
            raise ValueError(f"DCGM trace format must be {TRACE_FORMAT!r}, got {trace.get('format')!r}")
        self.trace, self.calls, self.closed = trace, 0, False

    @classmethod
    def from_file(cls, path: Path) -> "ReplayDcgm":
        return cls(json.loads(Path(path).read_text()))

    def latest(self) -> dict[int, dict[str, float | None]]:
        out = {}
        for device in self.trace["devices"]:
            sample = device["samples"][self.calls % len(device["samples"])]
            if sample.get("dcgm_error"):
                raise DcgmError(sample["dcgm_error"])
            out[device["index"]] = {name: sample.get(name) for name in FIELDS}
        self.calls += 1
        return out

    def close(self) -> None:
        self.closed = True
