"""The fleet's pools, from one configuration file (pools.toml, or ARENA_POOLS_FILE).

Each [[worker]] entry is one Celery worker bound to one device set; a pool's concurrency limit in
Dagster's QueuedRunCoordinator is the number of workers it lists, so Dagster never dispatches more
runs to a pool than it has devices.
"""
from __future__ import annotations

import os
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sandbox.devices import Devices

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    pool: str
    devices: Devices
    host: str = "localhost"


def pools_file() -> Path:
    return Path(os.environ.get("ARENA_POOLS_FILE", str(ROOT / "pools.toml")))


def load_workers(path: Path | None = None) -> list[WorkerSpec]:
    path = path or pools_file()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"pools file {path} does not exist (ARENA_POOLS_FILE)") from None
    workers, names = [], set()
    for i, entry in enumerate(raw.get("worker", [])):
        unknown = set(entry) - {"name", "pool", "host", "devices"}
        if unknown or not {"name", "pool", "devices"} <= set(entry):
            raise ValueError(f"{path}: worker #{i + 1} needs name, pool and devices "
                             f"(and may have host); unknown: {sorted(unknown)}")
        if entry["name"] in names:
            raise ValueError(f"{path}: worker name {entry['name']!r} is used twice")
        names.add(entry["name"])
        workers.append(WorkerSpec(entry["name"], entry["pool"], Devices.parse(entry["devices"]),
                                  entry.get("host", "localhost")))
    _no_shared_device(path, workers)
    return workers


def _no_shared_device(path: Path, workers: list[WorkerSpec]) -> None:
    """Two workers on one host must not name the same GPU (a cpuset may not be split either)."""
    seen: dict[tuple[str, str], str] = {}
    for w in workers:
        for gpu in w.devices.gpus:
            if (w.host, gpu) in seen:
                raise ValueError(f"{path}: GPU {gpu} on {w.host} is given to both {seen[(w.host, gpu)]} and {w.name}")
            seen[(w.host, gpu)] = w.name


def pool_limits(path: Path | None = None) -> dict[str, int]:
    """{pool: number of workers}: the tag concurrency limit of each pool."""
    return dict(Counter(w.pool for w in load_workers(path)))


def worker_named(name: str, path: Path | None = None) -> WorkerSpec:
    for w in load_workers(path):
        if w.name == name:
            return w
    raise KeyError(f"no worker named {name!r} in {path or pools_file()}")
