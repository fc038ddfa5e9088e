"""How the dashboards write numbers: a metric that was not measured says so, it is never shown as 0."""
from __future__ import annotations

from typing import Callable

import pandas as pd

NOT_MEASURED = "not measured"


def missing(value) -> bool:
    """None, NaN, pd.NA, NaT: what a null Parquet value becomes on its way to a page."""
    return value is None or (not isinstance(value, (str, bytes)) and bool(pd.isna(value)))


def number(value, digits: int = 1, unit: str = "") -> str:
    if missing(value):
        return NOT_MEASURED
    return f"{float(value):,.{digits}f}{(' ' + unit) if unit else ''}"


def percent(value, digits: int = 1) -> str:
    """A fraction (0.985) as a percentage (98.5 %)."""
    return NOT_MEASURED if missing(value) else f"{float(value) * 100:.{digits}f} %"


def nbytes(value) -> str:
    if missing(value):
        return NOT_MEASURED
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:,.1f} TiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def text(value) -> str:
    return "—" if missing(value) or value == "" else str(value)


#: Result metrics in display order: (key in the result JSON, label, formatter).
METRICS: tuple[tuple[str, str, Callable], ...] = (
    ("tokens_per_second", "Tokens/s", lambda v: number(v, 1)),
    ("latency_p99_ms", "Latency p99", lambda v: number(v, 1, "ms")),
    ("ttft_p50_ms", "TTFT p50", lambda v: number(v, 2, "ms")),
    ("ttft_p99_ms", "TTFT p99", lambda v: number(v, 2, "ms")),
    ("tpot_p50_ms", "TPOT p50", lambda v: number(v, 2, "ms")),
    ("tpot_p99_ms", "TPOT p99", lambda v: number(v, 2, "ms")),
    ("accuracy", "Token accuracy", lambda v: percent(v, 2)),
    ("peak_memory_bytes", "Peak memory", nbytes),
    ("peak_memory_bw_GBs", "Peak memory bandwidth", lambda v: number(v, 1, "GB/s")),
    ("energy_joules", "Energy", lambda v: number(v, 1, "J")),
    ("tokens_per_joule", "Tokens per joule", lambda v: number(v, 2)),
    ("load_time_s", "Model load time", lambda v: number(v, 2, "s")),
)
